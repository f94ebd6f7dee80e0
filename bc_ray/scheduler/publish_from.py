"""`--publish-from URI`: each new folder of embeddings computed elsewhere is a bump.

Layout: ``<URI>/<name>/users/`` and ``<URI>/<name>/items/``, each holding Parquet files as
`bc-ray publish --users/--items` reads them. Folders are taken in name order (so date-stamped
names publish oldest first), one `jobs/publish.py` job each, once:

- A folder is ready once both sub-folders exist and it holds `_SUCCESS` or nothing under it
  changed for `publish_settle_s` seconds; a folder still being written waits for a later bump.
- Published or rejected (a version record's spec names its `users` URI), unchanged (a copy of
  the current version's tables: its publish changed nothing) and failed (a run record lists it
  as failed: bad input, every attempt used) folders are never taken again, so a restart never
  publishes one twice and a bad folder does not block the ones after it. To retry a failed
  folder, publish it by hand (`bc-ray publish`) or copy it under a new name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bc_ray.exceptions import DataError
from bc_ray.ingest.sources import hidden
from bc_ray.io import FileIO
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState, VersionRecord

MARKER = "_SUCCESS"
UNCHANGED = "unchanged"  # its publish succeeded with nothing to do: the current version's bytes


@dataclass(frozen=True)
class Folder:
    """One folder of embeddings, by the canonical URIs `bc-ray publish` records."""

    name: str
    uri: str
    users: str
    items: str

    def args(self) -> list[str]:
        return ["--users", self.users, "--items", self.items]


def ready_folders(root: FileIO, settle_s: float, now: float | None = None) -> list[Folder]:
    """Every folder under `root` that holds users/ and items/ and is complete, by name."""
    now = time.time() if now is None else now
    if not root.exists(""):
        raise DataError(f"--publish-from {root.uri} does not exist (on S3: a prefix holding at "
                        "least one object); a wrong path is an error, not a quiet bump")
    found = []
    for name in root.list_dir(""):
        if hidden(name):
            continue
        inside = set(root.list_dir(name))
        if not {"users", "items"} <= inside:
            continue
        newest = root.modified_time(name)
        if MARKER not in inside and newest is not None and now - newest < settle_s:
            continue
        found.append(Folder(name, root.uri_of(name), root.uri_of(f"{name}/users"),
                            root.uri_of(f"{name}/items")))
    return found


def version_of(state: StoreState, folder: Folder) -> VersionRecord | None:
    """The version made from `folder`'s embeddings (published or rejected), if any."""
    for record in sorted(state.versions.values(), key=lambda r: r.version, reverse=True):
        if record.family == EXTERNAL_FAMILY and record.spec.get("users") == folder.users:
            return record
    return None


def folder_outcome(state: StoreState, folder: Folder, succeeded: bool) -> dict:
    """A folder's status and version once its publish job ended: the version made from it;
    unchanged where the job succeeded with nothing to publish (the current version's bytes);
    else failed."""
    record = version_of(state, folder)
    if record is not None:
        return {"status": record.status, "version": record.version}
    if succeeded:
        return {"status": UNCHANGED, "version": state.current_version}
    return {"status": "failed", "version": None}


def settled_uris(state: StoreState) -> set[str]:
    """Folders a run settled without a version of their own: failed, or unchanged."""
    return {entry.get("uri") for run in state.runs.values() for entry in (run.publish or [])
            if entry.get("status") in ("failed", UNCHANGED)}


def pending(state: StoreState, folders: list[Folder]) -> list[Folder]:
    """The folders no version and no run has settled yet, in name order."""
    settled = settled_uris(state)
    return [f for f in folders if f.uri not in settled and version_of(state, f) is None]


def external_current(state: StoreState) -> str | None:
    """Why a refresh has nothing to do: the current version's embeddings were published."""
    if state.current_version is None or not state.version().external:
        return None
    return (f"version {state.current_version} was published from embeddings made elsewhere: "
            "nothing to refresh (its next embeddings come through --publish-from)")
