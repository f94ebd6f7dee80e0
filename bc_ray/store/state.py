"""What the store holds, as typed records: the fold of the version log.

Each log entry is a list of actions (`actions.py`, one frozen model per kind); folding them one by
one gives a `StoreState`, and checkpoints serialise it (`to_dict`, in the same JSON shape as ever,
so any bc_ray reads any checkpoint). Records the log holds as JSON are frozen `LogModel`s: they
keep the keys they were read or built with, no more, no fewer.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, PlainValidator

from bc_ray.exceptions import NotFoundError, StoreError

# Top-level folders that hold data files; every path the log names lies under one of them.
DATA_ROOTS = ("snapshots", "batches", "versions", "embeddings")
# A version record without a `family` was made by GraphSAGE, the only family before plug-ins.
DEFAULT_FAMILY = "graphsage"
# A version whose embeddings were computed outside bc_ray (`bc-ray publish`): it has no model,
# its tables come with it, and its spec describes where they were read from.
EXTERNAL_FAMILY = "external"
R = TypeVar("R")  # a dataclass record of the state


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


def _logged_file(value: object) -> FileRecord:
    """A `FileRecord` as the log names it: a malformed one is a validation error, a path outside
    the data roots a `StoreError` (`confined_path`)."""
    if isinstance(value, FileRecord):
        confined_path(value.path)
        return value
    if not isinstance(value, Mapping) or not {"path", "size", "sha256"} <= value.keys():
        raise ValueError("a file record needs a path, a size and a sha256")
    try:
        return FileRecord.from_dict(dict(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a file record with a size that is not a number: {exc}") from None


def _file_json(record: FileRecord) -> dict[str, Any]:
    return {"path": record.path, "size": record.size, "sha256": record.sha256}


# A file record inside a log model: validated on the way in, written as {path, size, sha256}.
LoggedFile = Annotated[FileRecord, PlainValidator(_logged_file), PlainSerializer(_file_json)]
# A path the log names, confined to the data roots.
LoggedPath = Annotated[str, AfterValidator(confined_path)]


class LogModel(BaseModel):
    """A record the log holds as JSON. Frozen; keys a newer writer added are kept; `to_json`
    writes exactly the keys it was read or built with (an optional key left out stays out), so
    re-writing never changes what an older reader sees."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


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


class Segment(LogModel):
    """Files holding the rows of ingested batches `first`..`last` (one batch when ingested, many
    after compaction). Every row carries its batch ordinal, so any prefix of batches is readable."""

    first: int
    last: int
    files: dict[str, LoggedFile]  # edges, and users / items (entity rows added or changed)


class SegmentRange(LogModel):
    """The batches a segment holds, which names it (what a compaction replaces)."""

    first: int
    last: int


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
    # Which model family made it (its name in bc_ray.models): `spec` is that family's spec.
    family: str = DEFAULT_FAMILY

    @property
    def requires(self) -> str | None:
        """The pip requirement of the family's package where it was trained ("acme-models==1.2",
        `registry.family_requirement`), kept in `metrics` beside the run's other provenance: a
        field of its own would stop every older bc_ray reading the store's checkpoints."""
        return self.metrics.get("family_requires")

    @property
    def external(self) -> bool:
        """Published from embeddings made elsewhere (`bc-ray publish`): no model of its own."""
        return self.family == EXTERNAL_FAMILY

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


class SourceRecord(LogModel):
    """A file a batch was read from, as `batch.ingested` records it: its identity under a
    landing root (`rel`) when it was landed, and the sha256 of its bytes with how they were
    read (`read_as`), which no other batch may take again (both absent in older logs)."""

    role: str = "edges"
    uri: str
    size: int
    tag: str
    rel: str | None = None
    sha256: str | None = None
    read_as: str | None = None
    rows: int | None = None


class BatchRecord(LogModel):
    """An ingested batch: its ordinal, counts and time range (`stats`) and source files."""

    batch_id: str
    ordinal: int
    at: str
    stats: dict[str, Any] = {}
    sources: list[SourceRecord] = []
    prefix: str


class RunAttempt(LogModel):
    """One Ray job a scheduler run submitted for a step (train or refresh)."""

    step: str | None = None
    attempt: int | None = None
    job_id: str
    submitted_at: str | None = None
    status: str | None = None
    ended_at: str | None = None
    error: str | None = None
    exit_code: int | None = None  # the failed job's; 2 (`EXIT_REPEATS`) is not retried


class RunRecord(LogModel):
    """A scheduler run as last recorded: what ran, how it ended, what it published."""

    run_id: str
    kind: str | None = None
    slot: str | None = None
    status: str | None = None
    holder: str | None = None
    started_at: str | None = None
    attempts: list[RunAttempt] = []
    landing: dict[str, Any] | None = None  # the landing report of the pass it started with
    candidate: dict[str, Any] | None = None
    published: dict[str, Any] | None = None
    ended_at: str | None = None
    error: str | None = None
    note: str | None = None
    lease_generation: int | None = None
    # --publish-from: each folder this run published, rejected or failed (name, uri, status).
    publish: list[dict[str, Any]] | None = None


class ScheduleRecord(LogModel):
    """The schedule a scheduler recorded (what `bc-ray status` shows as next runs)."""

    refresh_cron: str | None = None
    bump_cron: str | None = None
    holder: str | None = None
    at: str | None = None

    def cron(self, kind: str) -> str | None:
        return self.refresh_cron if kind == "refresh" else self.bump_cron


class LandingNote(LogModel):
    """A landed file no batch holds that the landing zone must not read again (empty, the same
    bytes as a batch, changed after it was taken), keyed by `role/rel@sha256`."""

    role: str
    rel: str
    uri: str
    size: int
    tag: str
    sha256: str | None
    outcome: str
    batch_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.role}/{self.rel}@{self.sha256}"


class DeltaMirror(LogModel):
    """The Delta view's version and the store files it names (live until it moves on)."""

    delta_version: int
    paths: list[LoggedPath]
    tables: dict[str, str] = {}  # refresh id by entity


class RetentionSetting(LogModel):
    """The retention recorded in the log (`bc-ray store config`), as every process applies it."""

    keep_versions: int
    staging_grace_seconds: float


@dataclass
class StoreState:
    seq: int = -1
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)
    current_snapshot: str | None = None
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    current_version: int | None = None
    tables: dict[str, TableRecord] = field(default_factory=dict)  # key "v{version}/{entity}"
    runs: dict[str, RunRecord] = field(default_factory=dict)
    # Files no longer referenced, with the time they stopped being referenced: deleted by
    # retention only after a grace period, so a reader that just read the previous state is safe.
    garbage: dict[str, str] = field(default_factory=dict)
    scheduler: ScheduleRecord | None = None
    # Ingested batches by id and the segments holding their rows.
    batches: dict[str, BatchRecord] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    # The store's retention, set by `bc-ray store config`: a property of the store, so every
    # process applies the same policy.
    retention: RetentionSetting | None = None
    # The Delta mirror of the current tables (delta.py), once there is one.
    delta: DeltaMirror | None = None
    # Landed files no batch holds but the landing zone must not read again, by their key.
    landing: dict[str, LandingNote] = field(default_factory=dict)

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
            raise NotFoundError("the store has no published version yet; run `bc-ray train` "
                                "or `bc-ray publish`")
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
        return paths | set(self.delta.paths if self.delta else ())

    @property
    def batch_count(self) -> int:
        return len(self.batches)

    # -- serialisation for checkpoints ----------------------------------------------------------
    def to_dict(self) -> dict:
        """The checkpoint's JSON shape (unchanged since checkpoints held plain dicts)."""
        def records(items: Mapping[str, LogModel]) -> dict[str, dict]:
            return {key: record.to_json() for key, record in items.items()}

        return {
            "seq": self.seq, "current_snapshot": self.current_snapshot,
            "current_version": self.current_version,
            "snapshots": {k: dataclasses.asdict(v) for k, v in self.snapshots.items()},
            "versions": {str(k): dataclasses.asdict(v) for k, v in self.versions.items()},
            "tables": {k: dataclasses.asdict(v) for k, v in self.tables.items()},
            "runs": records(self.runs), "garbage": dict(self.garbage),
            "scheduler": self.scheduler.to_json() if self.scheduler else {},
            "batches": records(self.batches), "segments": [s.to_json() for s in self.segments],
            "retention": self.retention.to_json() if self.retention else {},
            "delta": self.delta.to_json() if self.delta else {},
            "landing": records(self.landing)}

    @classmethod
    def from_dict(cls, data: dict) -> StoreState:
        def files(raw: dict) -> dict[str, FileRecord]:
            return {k: FileRecord.from_dict(v) for k, v in raw.items()}

        def optional(model: type[LogModel], key: str) -> Any:
            return model.model_validate(data[key]) if data.get(key) else None

        state = cls(seq=data["seq"], current_snapshot=data["current_snapshot"],
                    current_version=data["current_version"], garbage=data.get("garbage", {}),
                    runs={k: RunRecord.model_validate(v) for k, v in data.get("runs", {}).items()},
                    batches={k: BatchRecord.model_validate(v)
                             for k, v in data.get("batches", {}).items()},
                    landing={k: LandingNote.model_validate(v)
                             for k, v in data.get("landing", {}).items()},
                    scheduler=optional(ScheduleRecord, "scheduler"),
                    retention=optional(RetentionSetting, "retention"),
                    delta=optional(DeltaMirror, "delta"),
                    segments=[Segment.model_validate(s) for s in data.get("segments", [])])
        for key, raw in data["snapshots"].items():
            state.snapshots[key] = _record(SnapshotRecord, raw, files=files(raw["files"]))
        for key, raw in data["versions"].items():
            state.versions[int(key)] = _record(VersionRecord, raw, files=files(raw["files"]))
        for key, raw in data["tables"].items():
            state.tables[key] = _record(
                TableRecord, raw, files=[FileRecord.from_dict(f) for f in raw["files"]],
                cache={k: FileRecord.from_dict(v) for k, v in raw.get("cache", {}).items()})
        return state


def _record(kind: type[R], raw: dict[str, Any], **parsed: Any) -> R:
    """A checkpoint's record without the keys a newer bc_ray added, which this one does not know
    (one that knows them keeps them): consumers upgrade later than the jobs that write."""
    known = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in {**raw, **parsed}.items() if k in known})


def table_key(version: int, entity: str) -> str:
    return f"v{version}/{entity}"
