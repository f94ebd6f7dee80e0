"""What a landing zone holds now, which of it is ready to be taken, and what the store already
knows of it.

A landed file's identity is its path under the landing root (`rel`) plus the sha256 of its
bytes, never the spelling of the root: the same folder reached through a symlink or a remount
holds the same identities, so the same bytes are never a second batch. A file is ready only when
it is complete: its folder has a `_SUCCESS` marker, or (unless a marker is required) it was not
modified for `settle_seconds` and its folder holds no in-flight `_temporary/`; a CSV whose last
line is not terminated is still being written.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl
import pyarrow.parquet as pq

from bc_ray.exceptions import BcRayError, ConfigError, DataError
from bc_ray.ingest.sources import file_tag, hidden, input_format, known_extension
from bc_ray.io import FileIO, access_error, file_mtime, storage_failure
from bc_ray.store.state import StoreState

SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class Landed:
    """One data file found under a landing root."""

    role: str  # edges, users or items
    rel: str  # path under the landing root
    uri: str
    size: int
    tag: str
    modified: float | None  # epoch seconds (mtime locally, LastModified on S3)

    @property
    def folder(self) -> str:
        return self.rel.rsplit("/", 1)[0] if "/" in self.rel else ""

    @property
    def stamp(self) -> tuple[str, str, int, str]:
        return self.role, self.rel, self.size, self.tag


@dataclass
class Listing:
    """The data files under one root, what was passed over, and the folders marked complete."""

    files: list[Landed] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    # folder -> when its `_SUCCESS` was written (None: not known)
    success: dict[str, float | None] = field(default_factory=dict)
    # folder -> a hidden sub-folder holding files (`_temporary/`, `.spark-staging-*`): a
    # writer's commit is still under way there
    in_flight: dict[str, str] = field(default_factory=dict)


def _root_prefix(location: FileIO) -> str:
    """How a file under `location` is spelled in sources (as `discover` spells it)."""
    return f"s3://{location.root}" if location.scheme == "s3" else location.root


def _found(location: FileIO, root: str) -> dict[str, dict]:
    fs = location.fs
    try:
        if fs.isdir(location.root):
            return fs.find(location.root, detail=True)
        if fs.exists(location.root):
            return {location.root: fs.info(location.root)}
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - the storage's failures; the rest re-raised
        if not storage_failure(exc):
            raise
        raise access_error(f"cannot list the landing path {root}: {exc}", exc) from exc
    raise ConfigError(f"the landing path {root} does not exist (a local folder or file, or an "
                      "S3 prefix holding at least one object: a `.keep` marker will do)")


def _first_hidden(rel: str) -> tuple[str, str | None]:
    """The first hidden component's path, and the folder holding it when it is a folder (not
    a marker file such as `_SUCCESS` or `.part-0.crc`)."""
    parts = rel.split("/")
    index = next(i for i, part in enumerate(parts) if part.startswith(("_", ".")))
    return "/".join(parts[:index + 1]), "/".join(parts[:index]) if index < len(parts) - 1 \
        else None


def list_landing(role: str, root: str, declared_format: str | None) -> Listing:
    """Every file under the landing `root` (taken literally: `[` is no glob)."""
    location = FileIO(root)
    found = _found(location, root)
    prefix = _root_prefix(location)
    listing, hidden_seen = Listing(), set()
    for name, info in sorted(found.items()):
        if info.get("type") == "directory":
            continue
        rel = name[len(location.root):].lstrip("/") or name.rsplit("/", 1)[-1]
        if rel.rsplit("/", 1)[-1] == SUCCESS and not hidden(rel.rsplit("/", 1)[0]
                                                            if "/" in rel else ""):
            listing.success[rel.rsplit("/", 1)[0] if "/" in rel else ""] = file_mtime(info)
            continue
        if hidden(rel):
            top, holder = _first_hidden(rel)
            if holder is not None:
                listing.in_flight.setdefault(holder, top.rsplit("/", 1)[-1])
            if top not in hidden_seen:
                hidden_seen.add(top)
                listing.skipped.append({"file": f"{prefix}/{top}", "reason": "hidden"})
            continue
        uri = f"{prefix}/{rel}" if name != location.root else prefix
        if declared_format is None and not known_extension(uri):
            listing.skipped.append({"file": uri, "reason": "not Parquet or CSV by its extension"})
            continue
        listing.files.append(Landed(role, rel, uri, int(info.get("size") or 0), file_tag(info),
                                    file_mtime(info)))
    return listing


# -- what the store knows ----------------------------------------------------------------------

@dataclass
class Known:
    """Landed files the store already took or noted, by stamp and by content."""

    stamps: set[tuple[str, str, int, str]] = field(default_factory=set)
    # (role, rel) -> sha256 of every content taken as data under that path (None: taken before
    # content hashes were recorded)
    taken: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    # (role, rel) -> the batches holding content of that path, in order: what a corrected
    # batch of its new content corrects
    batches: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # (role, sha256) -> (rel, batch id, read_as) of the first batch that took those bytes,
    # wherever they were landed: the same bytes under another path (a copy, a rename), read
    # the same way, are not taken again
    contents: dict[tuple[str, str], tuple[str, str, str | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, state: StoreState, roots: dict[str, str]) -> Known:
        known = cls()
        prefixes = {role: _root_prefix(FileIO(root)) for role, root in roots.items()}
        for batch in sorted(state.batches.values(), key=lambda b: b.ordinal):
            for source in batch.sources:
                rel = source.rel or _relative(source.uri, prefixes.get(source.role))
                if rel is not None:
                    known.add(source.role, rel, source.size, source.tag, source.sha256,
                              as_data=True, batch_id=batch.batch_id)
                if source.sha256 is not None:
                    known.contents.setdefault((source.role, source.sha256),
                                              (rel or source.uri, batch.batch_id,
                                               source.read_as))
        for note in state.landing.values():
            known.add(note.role, note.rel, note.size, note.tag, note.sha256,
                      as_data=note.outcome != "empty", batch_id=note.batch_id)
        return known

    def add(self, role: str, rel: str, size: int, tag: str, sha256: str | None,
            as_data: bool, batch_id: str | None = None) -> None:
        self.stamps.add((role, rel, size, tag))
        if as_data:
            self.taken.setdefault((role, rel), set()).add(sha256)
        held = self.batches.setdefault((role, rel), []) if batch_id is not None else []
        if batch_id not in held:
            held.append(batch_id)


def _relative(uri: str, prefix: str | None) -> str | None:
    """A source recorded before landed files carried `rel`: its path under today's root."""
    if prefix is None:
        return None
    if uri == prefix:
        return uri.rsplit("/", 1)[-1]
    return uri[len(prefix) + 1:] if uri.startswith(prefix + "/") else None


# -- readiness and content ---------------------------------------------------------------------

def waiting(file: Landed, listing: Listing, require_success: bool, settle_seconds: float,
            now: float) -> str | None:
    """Why `file` may still be incomplete, without reading it (None: ready by its listing).
    A committer's rename keeps a task file's old modification time, so a folder that still
    holds an in-flight `_temporary/` is not settled whatever the times say. A `_SUCCESS`
    vouches for the files written before it: a late file added to that folder afterwards,
    maybe still being written, settles like any other."""
    if file.folder in listing.success:
        marked = listing.success[file.folder]
        if marked is None or file.modified is None or file.modified <= marked:
            return None
    elif require_success:
        return f"no {SUCCESS} in its folder yet"
    if file.folder in listing.in_flight:
        return (f"its folder still holds {listing.in_flight[file.folder]}/: a writer's commit "
                "is under way")
    if file.modified is not None and now - file.modified < settle_seconds:
        return f"unsettled: modified less than {settle_seconds:g}s ago"
    return None


def _is_csv(file: Landed, declared_format: str | None) -> bool:
    return input_format(file.uri, declared_format) == "csv"


def unterminated(file: Landed, declared_format: str | None) -> bool:
    """A plain CSV whose last byte is not a newline is cut mid-line: still being written."""
    if file.size == 0 or not _is_csv(file, declared_format) or file.uri.lower().endswith(".gz"):
        return False
    location = FileIO(file.uri)
    return location.fs.cat_file(location.root, start=file.size - 1, end=file.size) != b"\n"


@dataclass(frozen=True)
class Content:
    sha256: str
    rows: int


def read_content(file: Landed, declared_format: str | None) -> Content:
    """The file's sha256 and whether it holds rows (a parse error is the file's failure)."""
    location = FileIO(file.uri)
    data = location.fs.cat_file(location.root)
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return Content(digest, 0)
    csv = _is_csv(file, declared_format)
    try:
        if not csv:
            return Content(digest, pq.ParquetFile(io.BytesIO(data)).metadata.num_rows)
        separator = "\t" if file.uri.lower().endswith(".tsv") else ","
        head = pl.read_csv(io.BytesIO(data), infer_schema=False, n_rows=1, separator=separator)
    except pl.exceptions.NoDataError:
        return Content(digest, 0)
    except Exception as exc:  # noqa: BLE001 - readers raise many kinds for a malformed file
        raise DataError(f"cannot read as {'csv' if csv else 'parquet'}: {describe(exc)}",
                        path=file.uri) from exc
    return Content(digest, head.height)


def describe(exc: BaseException) -> str:
    """One line for a failure: bc_ray's own message, or the exception's type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, BcRayError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def partition(rel: str) -> str:
    """The partition folder a file belongs to (``dt=2026-11-22``), or the file itself."""
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    return folder if "=" in folder.rsplit("/", 1)[-1] else rel


def grouped(files: Iterable[Landed]) -> dict[str, list[Landed]]:
    groups: dict[str, list[Landed]] = {}
    for file in files:
        groups.setdefault(partition(file.rel), []).append(file)
    return dict(sorted(groups.items()))
