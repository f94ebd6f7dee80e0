"""What the store holds, as plain data: the fold of the version log.

Each log entry is a list of actions (dicts with a ``type``). `apply` folds one action into a
`StoreState`; the current state is the fold of every entry, and checkpoints serialise it.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

from bc_ray.exceptions import NotFoundError, StoreError, UnappliableSettingError

ACTION_TYPES = (
    "snapshot.published", "version.candidate", "version.published", "version.rejected",
    "refresh.published", "retention.applied", "run.recorded", "scheduler.configured",
    "batch.ingested", "batches.compacted", "store.configured", "version.rolled_back",
    "delta.mirrored",
)


# Top-level folders that hold data files; every path the log names lies under one of them.
DATA_ROOTS = ("snapshots", "batches", "versions", "embeddings")


def confined_path(path: object) -> str:
    """A path taken from the log, refused unless it stays under a data root of the store (a
    hostile or damaged entry must never make retention delete a file elsewhere)."""
    if (not isinstance(path, str) or not path or "://" in path or "\\" in path
            or path.startswith("/") or posixpath.normpath(path) != path
            or ".." in path.split("/") or path.split("/")[0] not in DATA_ROOTS):
        raise StoreError(f"the log names a path outside the store's data folders: {path!r} "
                         "(a damaged or hostile log entry)")
    return path


@dataclass(frozen=True)
class FileRecord:
    """A file written once under the store root; the log names it with its size and sha256."""

    path: str
    size: int
    sha256: str

    @classmethod
    def from_dict(cls, data: dict) -> FileRecord:
        return cls(path=confined_path(data["path"]), size=int(data["size"]),
                   sha256=data["sha256"])


@dataclass
class SnapshotRecord:
    id: str
    files: dict[str, FileRecord]
    cutoff: float
    stats: dict[str, Any]
    seq: int = -1
    # Ingested snapshots: made of the first `batches` ingested batches (None: a replayed data set
    # whose visible part is set by `cutoff`).
    batches: int | None = None


@dataclass
class Segment:
    """Files holding the rows of ingested batches `first`..`last` (one batch when ingested, many
    after compaction). Every row carries its batch ordinal, so any prefix of batches is readable."""

    first: int
    last: int
    files: dict[str, FileRecord]  # edges, and users / items (entity rows added or changed)

    @classmethod
    def from_dict(cls, data: dict) -> Segment:
        return cls(first=int(data["first"]), last=int(data["last"]),
                   files={k: FileRecord.from_dict(v) for k, v in data["files"].items()})


@dataclass
class VersionRecord:
    version: int
    status: str  # candidate | published | rejected | rolled_back
    parent: int | None
    dim: int
    method: str
    spec: dict[str, Any]
    snapshot_id: str
    cutoff: float
    files: dict[str, FileRecord]  # model, transform (k >= 1), chain, metrics
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    created_at: str = ""
    published_at: str | None = None
    model_removed: bool = False
    # The composed chain file (one matrix per older version) of a version outside retention is
    # removed too, so the store holds O(versions) chain matrices; it is recomposed from the
    # per-version transforms, which are always kept, if ever needed.
    chain_removed: bool = False

    def removed(self, name: str) -> bool:
        return (name == "model" and self.model_removed) or (name == "chain" and
                                                            self.chain_removed)


@dataclass
class TableRecord:
    """One refreshed embedding table: ver-`version` embeddings of every `entity`."""

    version: int
    entity: str
    refresh_id: str
    files: list[FileRecord]
    rows: int
    dim: int
    refreshed_at: str
    snapshot_id: str
    cutoff: float
    mode: str
    stats: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, FileRecord] = field(default_factory=dict)  # inner layers, for incremental

    @property
    def all_files(self) -> list[FileRecord]:
        return list(self.files) + list(self.cache.values())


@dataclass
class StoreState:
    seq: int = -1
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)
    current_snapshot: str | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    current_version: int | None = None
    tables: dict[str, TableRecord] = field(default_factory=dict)  # key "v{version}/{entity}"
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Files no longer referenced, with the time they stopped being referenced: deleted by
    # retention only after a grace period, so a reader that just read the previous state is safe.
    garbage: dict[str, str] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    # Ingested batches by id (ordinal, stats, source files) and the segments holding their rows.
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    # The store's retention (keep_versions, staging_grace_seconds), set by `bc-ray store config`:
    # a property of the store, so every process applies the same policy.
    retention: dict[str, Any] = field(default_factory=dict)
    # The Delta mirror of the current tables (delta.py): its version and the files it names,
    # which stay live until the mirror moves on.
    delta: dict[str, Any] = field(default_factory=dict)
    # Landed files no batch holds but the landing zone must not read again (empty, same bytes
    # as a batch, changed after they were taken), by "role/rel@sha256" (landing_scan.py).
    landing: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- queries -----------------------------------------------------------------------
    def snapshot(self, snapshot_id: str | None = None) -> SnapshotRecord:
        key = snapshot_id or self.current_snapshot
        if key is None or key not in self.snapshots:
            raise NotFoundError("the store holds no graph snapshot; run `bc-ray data ingest` "
                                "(your own files), `bc-ray data synth` or `bc-ray data import` "
                                "first" if key is None
                                else f"no snapshot {key!r} in the store")
        return self.snapshots[key]

    def version(self, version: int | None = None) -> VersionRecord:
        key = self.current_version if version is None else version
        if key is None:
            raise NotFoundError("the store has no published version yet; run `bc-ray train`")
        if key not in self.versions:
            raise NotFoundError(f"no version {key} in the store; known: {sorted(self.versions)}")
        return self.versions[key]

    def lineage(self, version: int | None = None) -> list[int]:
        """Published versions from the root to `version` (default: current), oldest first."""
        chain: list[int] = []
        key = self.current_version if version is None else version
        while key is not None:
            chain.append(key)
            key = self.versions[key].parent
        return chain[::-1]

    def table(self, version: int, entity: str) -> TableRecord | None:
        return self.tables.get(table_key(version, entity))

    def live_paths(self) -> set[str]:
        """Every file path the state still references (what garbage collection must keep)."""
        paths = {f.path for s in self.snapshots.values() for f in s.files.values()}
        for record in self.versions.values():
            paths |= {f.path for name, f in record.files.items() if not record.removed(name)}
        for table in self.tables.values():
            paths |= {f.path for f in table.all_files}
        for segment in self.segments:
            paths |= {f.path for f in segment.files.values()}
        return paths | set(self.delta.get("paths", []))

    @property
    def batch_count(self) -> int:
        return len(self.batches)

    # -- serialisation for checkpoints ----------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["versions"] = {str(k): v for k, v in data["versions"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StoreState:
        def files(raw: dict) -> dict[str, FileRecord]:
            return {k: FileRecord.from_dict(v) for k, v in raw.items()}

        state = cls(seq=data["seq"], current_snapshot=data["current_snapshot"],
                    current_version=data["current_version"], runs=data.get("runs", {}),
                    garbage=data.get("garbage", {}), scheduler=data.get("scheduler", {}),
                    batches=data.get("batches", {}), retention=data.get("retention", {}),
                    delta=data.get("delta", {}), landing=data.get("landing", {}),
                    segments=[Segment.from_dict(s) for s in data.get("segments", [])])
        for key, raw in data["snapshots"].items():
            state.snapshots[key] = SnapshotRecord(**{**raw, "files": files(raw["files"])})
        for key, raw in data["versions"].items():
            state.versions[int(key)] = VersionRecord(**{**raw, "files": files(raw["files"])})
        for key, raw in data["tables"].items():
            state.tables[key] = TableRecord(
                **{**raw, "files": [FileRecord.from_dict(f) for f in raw["files"]],
                   "cache": {k: FileRecord.from_dict(v) for k, v in raw.get("cache", {}).items()}})
        return state


def _discard(state: StoreState, paths: list[str], at: str) -> None:
    for path in paths:
        state.garbage.setdefault(path, at)


def _retention(action: dict, seq: int) -> dict[str, Any]:
    """The retention a `store.configured` action records, refused unless every process can
    apply it (a grace written as null, a count below one). Values older writers let through
    and readers took (`true` as 1, 2.0 as 2) are still taken, so no readable store turns
    unreadable."""
    keep, grace = action["keep_versions"], action["staging_grace_seconds"]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (keep, grace)) \
            or int(keep) < 1 or grace < 0:
        raise UnappliableSettingError(
            f"log entry {seq} configures a retention no process can apply (keep_versions "
            f"{keep!r}, staging_grace_seconds {grace!r})")
    return {"keep_versions": int(keep), "staging_grace_seconds": float(grace)}


def table_key(version: int, entity: str) -> str:
    return f"v{version}/{entity}"


def added_files(action: dict) -> list[FileRecord]:
    """The files an action starts to reference (they must exist when it is committed)."""
    kind = action.get("type")
    if kind in ("snapshot.published", "version.candidate"):
        raw = list(action["files"].values())
    elif kind == "refresh.published":
        raw = list(action["files"]) + list(action.get("cache", {}).values())
    elif kind == "batch.ingested":
        raw = list(action["segment"]["files"].values())
    elif kind == "batches.compacted":
        raw = [f for segment in action["segments"] for f in segment["files"].values()]
    else:
        raw = []
    return [FileRecord.from_dict(f) for f in raw]


def apply(state: StoreState, action: dict, seq: int, committed_at: str | None = None) -> None:
    """Fold one action into the state (in place). Files it stops referencing enter the garbage
    list stamped with `committed_at` (the entry's commit time): the grace period before they are
    deleted counts from the moment the log stopped naming them."""
    kind = action.get("type")
    if kind == "snapshot.published":
        files = {k: FileRecord.from_dict(v) for k, v in action["files"].items()}
        state.snapshots[action["id"]] = SnapshotRecord(
            id=action["id"], files=files, cutoff=action["cutoff"], stats=action.get("stats", {}),
            seq=seq, batches=action.get("batches"))
        state.current_snapshot = action["id"]
    elif kind == "version.candidate":
        files = {k: FileRecord.from_dict(v) for k, v in action["files"].items()}
        fields = {k: action[k] for k in ("version", "parent", "dim", "method", "spec",
                                         "snapshot_id", "cutoff", "created_at")}
        state.versions[action["version"]] = VersionRecord(
            status="candidate", files=files, metrics=action.get("metrics", {}), **fields)
    elif kind == "version.published":
        record = state.version(action["version"])
        record.status, record.published_at = "published", action["at"]
        state.current_version = record.version
    elif kind == "version.rejected":
        record = state.version(action["version"])
        record.status, record.reasons = "rejected", list(action["reasons"])
    elif kind == "version.rolled_back":
        target = state.version(action["to"])
        if target.status != "published":
            raise StoreError(f"log entry {seq} rolls back to version {target.version}, which is "
                             f"{target.status}")
        for number in action["versions"]:
            record = state.version(number)
            record.status = "rolled_back"
            record.reasons = [f"rolled back to version {target.version} at {action['at']}"
                              + (f": {action['reason']}" if action.get("reason") else "")]
        state.current_version = target.version
    elif kind == "refresh.published":
        table = TableRecord(
            files=[FileRecord.from_dict(f) for f in action["files"]],
            **{k: action[k] for k in ("version", "entity", "refresh_id", "rows", "dim",
                                      "refreshed_at", "snapshot_id", "cutoff", "mode")},
            stats=action.get("stats", {}),
            cache={k: FileRecord.from_dict(v) for k, v in action.get("cache", {}).items()})
        key = table_key(table.version, table.entity)
        if key in state.tables:
            _discard(state, [f.path for f in state.tables[key].all_files],
                     committed_at or table.refreshed_at)
        state.tables[key] = table
    elif kind == "retention.applied":
        for key in action.get("tables", []):
            if key in state.tables:
                _discard(state, [f.path for f in state.tables.pop(key).all_files],
                         committed_at or action["at"])
        for version in action.get("models", []):
            record = state.versions[int(version)]
            if not record.model_removed and "model" in record.files:
                record.model_removed = True
                _discard(state, [record.files["model"].path], committed_at or action["at"])
        for version in action.get("chains", []):
            record = state.versions[int(version)]
            if not record.chain_removed and "chain" in record.files:
                record.chain_removed = True
                _discard(state, [record.files["chain"].path], committed_at or action["at"])
        for path in action.get("purged", []):
            state.garbage.pop(path, None)
    elif kind == "batch.ingested":
        if action["batch_id"] in state.batches:
            raise StoreError(f"log entry {seq} ingests batch {action['batch_id']!r} a second time")
        if action["ordinal"] != state.batch_count:
            raise StoreError(f"log entry {seq} ingests batch ordinal {action['ordinal']}, "
                             f"expected {state.batch_count}")
        state.batches[action["batch_id"]] = {
            k: v for k, v in action.items() if k not in ("type", "segment")}
        state.segments.append(Segment.from_dict(action["segment"]))
    elif kind == "batches.compacted":
        replaced = {(s["first"], s["last"]) for s in action["replaced"]}
        kept = [s for s in state.segments if (s.first, s.last) not in replaced]
        if len(kept) != len(state.segments) - len(replaced):
            raise StoreError(f"log entry {seq} compacts segments the state does not hold")
        for segment in state.segments:
            if (segment.first, segment.last) in replaced:
                _discard(state, [f.path for f in segment.files.values()],
                         committed_at or action["at"])
        state.segments = sorted(kept + [Segment.from_dict(s) for s in action["segments"]],
                                key=lambda s: s.first)
    elif kind == "run.recorded":
        state.runs[action["run_id"]] = {k: v for k, v in action.items() if k != "type"}
    elif kind == "store.configured":
        state.retention = _retention(action, seq)
    elif kind == "delta.mirrored":
        state.delta = {"delta_version": int(action["delta_version"]),
                       "paths": [confined_path(p) for p in action["paths"]],
                       "tables": dict(action.get("tables", {}))}
    elif kind == "scheduler.configured":
        state.scheduler = {k: v for k, v in action.items() if k != "type"}
    elif kind == "landing.noted":
        for note in action["files"]:
            state.landing[f"{note['role']}/{note['rel']}@{note['sha256']}"] = dict(note)
    else:
        raise StoreError(f"log entry {seq} holds an unknown action type {kind!r}; this store was "
                         f"written by a newer bc_ray")
    state.seq = seq
