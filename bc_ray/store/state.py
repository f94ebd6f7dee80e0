"""What the store holds, as plain data: the fold of the version log.

Each log entry is a list of actions (dicts with a ``type``). `apply` folds one action into a
`StoreState`; the current state is the fold of every entry, and checkpoints serialise it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bc_ray.exceptions import NotFoundError, StoreError

ACTION_TYPES = (
    "snapshot.published", "version.candidate", "version.published", "version.rejected",
    "refresh.published", "retention.applied", "run.recorded", "scheduler.configured",
)


@dataclass(frozen=True)
class FileRecord:
    """A file written once under the store root; the log names it with its size and sha256."""

    path: str
    size: int
    sha256: str

    @classmethod
    def from_dict(cls, data: dict) -> FileRecord:
        return cls(path=data["path"], size=int(data["size"]), sha256=data["sha256"])


@dataclass
class SnapshotRecord:
    id: str
    files: dict[str, FileRecord]
    cutoff: float
    stats: dict[str, Any]
    seq: int = -1


@dataclass
class VersionRecord:
    version: int
    status: str  # candidate | published | rejected
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

    # -- queries -----------------------------------------------------------------------
    def snapshot(self, snapshot_id: str | None = None) -> SnapshotRecord:
        key = snapshot_id or self.current_snapshot
        if key is None or key not in self.snapshots:
            raise NotFoundError("the store holds no graph snapshot; run `bc-ray data synth` or "
                                "`bc-ray data import` first" if key is None
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
            paths |= {f.path for name, f in record.files.items()
                      if not (name == "model" and record.model_removed)}
        for table in self.tables.values():
            paths |= {f.path for f in table.all_files}
        return paths

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
                    garbage=data.get("garbage", {}), scheduler=data.get("scheduler", {}))
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


def table_key(version: int, entity: str) -> str:
    return f"v{version}/{entity}"


def apply(state: StoreState, action: dict, seq: int) -> None:
    """Fold one action into the state (in place)."""
    kind = action.get("type")
    if kind == "snapshot.published":
        files = {k: FileRecord.from_dict(v) for k, v in action["files"].items()}
        state.snapshots[action["id"]] = SnapshotRecord(
            id=action["id"], files=files, cutoff=action["cutoff"], stats=action.get("stats", {}),
            seq=seq)
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
    elif kind == "refresh.published":
        table = TableRecord(
            files=[FileRecord.from_dict(f) for f in action["files"]],
            **{k: action[k] for k in ("version", "entity", "refresh_id", "rows", "dim",
                                      "refreshed_at", "snapshot_id", "cutoff", "mode")},
            stats=action.get("stats", {}),
            cache={k: FileRecord.from_dict(v) for k, v in action.get("cache", {}).items()})
        key = table_key(table.version, table.entity)
        if key in state.tables:
            _discard(state, [f.path for f in state.tables[key].all_files], table.refreshed_at)
        state.tables[key] = table
    elif kind == "retention.applied":
        for key in action.get("tables", []):
            if key in state.tables:
                _discard(state, [f.path for f in state.tables.pop(key).all_files], action["at"])
        for version in action.get("models", []):
            record = state.versions[int(version)]
            if not record.model_removed and "model" in record.files:
                record.model_removed = True
                _discard(state, [record.files["model"].path], action["at"])
        for path in action.get("purged", []):
            state.garbage.pop(path, None)
    elif kind == "run.recorded":
        state.runs[action["run_id"]] = {k: v for k, v in action.items() if k != "type"}
    elif kind == "scheduler.configured":
        state.scheduler = {k: v for k, v in action.items() if k != "type"}
    else:
        raise StoreError(f"log entry {seq} holds an unknown action type {kind!r}; this store was "
                         f"written by a newer bc_ray")
    state.seq = seq
