"""The log's actions: one frozen model per kind of entry, tagged by its `type`.

An entry of the log is a list of actions. Each kind is a class here (PyIceberg's table updates
are the pattern: one class per update, a tagged union), parsed once when an entry is read
(`parse_action`) and folded into the state by its own `apply`. Writers build these classes and the
log writes them as the same JSON as ever (`to_json`: the same keys and `type` strings), so logs
written by older bc_ray read, and entries written now read in older bc_ray.

Which follow-up steps run after a commit is a property of the kinds of action it holds
(`post_commit`, after delta-rs's post-commit hook properties): a commit that changes the current
tables mirrors them to Delta, and a commit that leaves files or versions behind applies retention.
`maintenance.py` registers what each hook does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import PlainSerializer, ValidationError

from bc_ray.exceptions import LogEntryError, StoreError, UnappliableSettingError
from bc_ray.store.state import (
    DEFAULT_FAMILY,
    BatchRecord,
    DeltaMirror,
    FileRecord,
    LandingNote,
    LoggedFile,
    LoggedPath,
    LogModel,
    RetentionSetting,
    RunRecord,
    ScheduleRecord,
    Segment,
    SegmentRange,
    SnapshotRecord,
    StoreState,
    TableRecord,
    VersionRecord,
    table_key,
)

# A version number the log writes as a string (`retention.applied` lists them as text).
VersionText = Annotated[int, PlainSerializer(str)]
Record = TypeVar("Record", bound=LogModel)


class Hook(StrEnum):
    """A step run after a commit; they run in this order (the mirror first: retention then
    sees which files the Delta view still names)."""

    DELTA_MIRROR = "delta-mirror"
    RETENTION = "retention"


class Action(LogModel):
    """One action of a log entry."""

    type: str
    # The hooks a commit holding this kind of action runs once it has landed.
    post_commit: ClassVar[tuple[Hook, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **super().to_json()}

    def added_files(self) -> list[FileRecord]:
        """The files it starts to reference (they must exist when it is committed)."""
        return []

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        """Fold it into `state` (in place). Files it stops referencing enter the garbage list
        stamped with `committed_at` (the entry's commit time): the grace period before they
        are deleted counts from the moment the log stopped naming them."""
        raise NotImplementedError


def _discard(state: StoreState, paths: Iterable[str], at: str) -> None:
    """Stamped with the latest time a commit stopped naming the path: one named again while on
    the list (a re-pointed table, the Delta mirror) gets a whole grace period when it is
    dropped again, never the rest of its first one."""
    for path in paths:
        state.garbage[path] = at


class SnapshotPublished(Action):
    type: Literal["snapshot.published"] = "snapshot.published"
    id: str
    cutoff: float
    # Ingested snapshots: made of the first `batches` batches (absent: a replayed data set).
    batches: int | None = None
    files: dict[str, LoggedFile]
    stats: dict[str, Any] = {}

    def added_files(self) -> list[FileRecord]:
        return list(self.files.values())

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        state.snapshots[self.id] = SnapshotRecord(
            id=self.id, files=dict(self.files), cutoff=self.cutoff, stats=dict(self.stats),
            seq=seq, batches=self.batches)
        state.current_snapshot = self.id


class VersionCandidate(Action):
    type: Literal["version.candidate"] = "version.candidate"
    version: int
    parent: int | None
    dim: int
    method: str
    spec: dict[str, Any]
    snapshot_id: str
    cutoff: float
    created_at: str
    metrics: dict[str, Any] = {}
    files: dict[str, LoggedFile]  # model, chain, metrics, and transform (k >= 1)
    # The model family (absent in entries written before families: GraphSAGE).
    family: str = DEFAULT_FAMILY

    def added_files(self) -> list[FileRecord]:
        return list(self.files.values())

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        state.versions[self.version] = VersionRecord(
            version=self.version, status="candidate", parent=self.parent, dim=self.dim,
            method=self.method, spec=dict(self.spec), snapshot_id=self.snapshot_id,
            cutoff=self.cutoff, files=dict(self.files), metrics=dict(self.metrics),
            created_at=self.created_at, family=self.family)


class VersionPublished(Action):
    type: Literal["version.published"] = "version.published"
    post_commit: ClassVar[tuple[Hook, ...]] = (Hook.RETENTION,)
    version: int
    at: str

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        record = state.version(self.version)
        record.status, record.published_at = "published", self.at
        state.current_version = record.version


class VersionRejected(Action):
    type: Literal["version.rejected"] = "version.rejected"
    post_commit: ClassVar[tuple[Hook, ...]] = (Hook.RETENTION,)
    version: int
    reasons: list[str]

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        record = state.version(self.version)
        record.status, record.reasons = "rejected", list(self.reasons)


class VersionRolledBack(Action):
    type: Literal["version.rolled_back"] = "version.rolled_back"
    post_commit: ClassVar[tuple[Hook, ...]] = (Hook.DELTA_MIRROR, Hook.RETENTION)
    to: int
    versions: list[int]  # the versions undone, newest first
    at: str
    reason: str | None = None

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        target = state.version(self.to)
        if target.status != "published":
            raise LogEntryError(f"log entry {seq} rolls back to version {target.version}, "
                                f"which is {target.status}")
        for number in self.versions:
            record = state.version(number)
            record.status = "rolled_back"
            record.reasons = [f"rolled back to version {target.version} at {self.at}"
                              + (f": {self.reason}" if self.reason else "")]
        state.current_version = target.version


class RefreshPublished(Action):
    type: Literal["refresh.published"] = "refresh.published"
    post_commit: ClassVar[tuple[Hook, ...]] = (Hook.DELTA_MIRROR, Hook.RETENTION)
    version: int
    entity: str
    refresh_id: str
    files: list[LoggedFile]
    rows: int
    dim: int
    refreshed_at: str
    snapshot_id: str
    cutoff: float
    mode: str
    stats: dict[str, Any] = {}
    cache: dict[str, LoggedFile] = {}  # inner layers, for incremental refreshes

    def added_files(self) -> list[FileRecord]:
        return list(self.files) + list(self.cache.values())

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        table = TableRecord(
            version=self.version, entity=self.entity, refresh_id=self.refresh_id,
            files=list(self.files), rows=self.rows, dim=self.dim,
            refreshed_at=self.refreshed_at, snapshot_id=self.snapshot_id, cutoff=self.cutoff,
            mode=self.mode, stats=dict(self.stats), cache=dict(self.cache))
        key = table_key(table.version, table.entity)
        if key in state.tables:
            _discard(state, (f.path for f in state.tables[key].all_files),
                     committed_at or table.refreshed_at)
        state.tables[key] = table


class RetentionApplied(Action):
    type: Literal["retention.applied"] = "retention.applied"
    at: str
    tables: list[str] = []  # table keys unreferenced
    models: list[VersionText] = []  # versions whose model file is unreferenced
    chains: list[VersionText] = []  # versions whose composed chain file is unreferenced
    purged: list[str] = []  # garbage deleted after its grace period

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        at = committed_at or self.at
        for key in self.tables:
            if key in state.tables:
                _discard(state, (f.path for f in state.tables.pop(key).all_files), at)
        for version in self.models:
            record = state.versions[version]
            if not record.model_removed and "model" in record.files:
                record.model_removed = True
                _discard(state, [record.files["model"].path], at)
        for version in self.chains:
            record = state.versions[version]
            if not record.chain_removed and "chain" in record.files:
                record.chain_removed = True
                _discard(state, [record.files["chain"].path], at)
        for path in self.purged:
            state.garbage.pop(path, None)


class BatchIngested(BatchRecord, Action):
    type: Literal["batch.ingested"] = "batch.ingested"
    segment: Segment

    def added_files(self) -> list[FileRecord]:
        return list(self.segment.files.values())

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        if self.batch_id in state.batches:
            raise LogEntryError(f"log entry {seq} ingests batch {self.batch_id!r} a second time")
        if self.ordinal != state.batch_count:
            raise LogEntryError(f"log entry {seq} ingests batch ordinal {self.ordinal}, "
                                f"expected {state.batch_count}")
        state.batches[self.batch_id] = _record_of(self, BatchRecord, "segment")
        state.segments.append(self.segment)


class BatchesCompacted(Action):
    type: Literal["batches.compacted"] = "batches.compacted"
    post_commit: ClassVar[tuple[Hook, ...]] = (Hook.RETENTION,)
    at: str
    replaced: list[SegmentRange]
    segments: list[Segment]

    def added_files(self) -> list[FileRecord]:
        return [f for segment in self.segments for f in segment.files.values()]

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        replaced = {(s.first, s.last) for s in self.replaced}
        kept = [s for s in state.segments if (s.first, s.last) not in replaced]
        if len(kept) != len(state.segments) - len(replaced):
            raise LogEntryError(f"log entry {seq} compacts segments the state does not hold")
        for segment in state.segments:
            if (segment.first, segment.last) in replaced:
                _discard(state, (f.path for f in segment.files.values()),
                         committed_at or self.at)
        state.segments = sorted(kept + list(self.segments), key=lambda s: s.first)


class RunRecorded(RunRecord, Action):
    type: Literal["run.recorded"] = "run.recorded"

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        state.runs[self.run_id] = _record_of(self, RunRecord)


class SchedulerConfigured(ScheduleRecord, Action):
    type: Literal["scheduler.configured"] = "scheduler.configured"

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        state.scheduler = _record_of(self, ScheduleRecord)


class StoreConfigured(Action):
    type: Literal["store.configured"] = "store.configured"
    # Any JSON value: whether a process can apply it is `apply`'s decision, so a setting an
    # older writer let through is skipped by readers, not a log nobody can read.
    keep_versions: Any
    staging_grace_seconds: Any
    source: str | None = None
    at: str | None = None

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        """Refused unless every process can apply it (a grace written as null, a count below
        one). Values older writers let through and readers took (`true` as 1, 2.0 as 2) are
        still taken, so no readable store turns unreadable."""
        keep, grace = self.keep_versions, self.staging_grace_seconds
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (keep, grace)) \
                or int(keep) < 1 or grace < 0:
            raise UnappliableSettingError(
                f"log entry {seq} configures a retention no process can apply (keep_versions "
                f"{keep!r}, staging_grace_seconds {grace!r})")
        state.retention = RetentionSetting(keep_versions=int(keep),
                                           staging_grace_seconds=float(grace))


class DeltaMirrored(Action):
    type: Literal["delta.mirrored"] = "delta.mirrored"
    delta_version: int
    paths: list[LoggedPath]
    tables: dict[str, str] = {}
    at: str | None = None

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        state.delta = DeltaMirror(delta_version=self.delta_version, paths=list(self.paths),
                                  tables=dict(self.tables))


class LandingNoted(Action):
    type: Literal["landing.noted"] = "landing.noted"
    at: str | None = None
    files: list[LandingNote]

    def apply(self, state: StoreState, seq: int, committed_at: str | None) -> None:
        for note in self.files:
            state.landing[note.key] = note


# Every kind of action, by its `type` (the tag of the union).
ACTIONS: dict[str, type[Action]] = {cls.model_fields["type"].default: cls for cls in (
    SnapshotPublished, VersionCandidate, VersionPublished, VersionRejected, VersionRolledBack,
    RefreshPublished, RetentionApplied, BatchIngested, BatchesCompacted, RunRecorded,
    SchedulerConfigured, StoreConfigured, DeltaMirrored, LandingNoted)}


def _record_of(action: Action, record: type[Record], *dropped: str) -> Record:
    """The state's record of an action that carries one: its keys less the action's own."""
    data = action.to_json()
    for key in ("type", *dropped):
        data.pop(key, None)
    return record.model_validate(data)


def parse_action(raw: object, entry: object) -> Action:
    """The typed action of one JSON action of log entry `entry` (its number or its URI).
    Raises `LogEntryError` naming the entry when no reader could take it."""
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    model = ACTIONS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise LogEntryError(f"log entry {entry} holds an unknown action type {kind!r}; this "
                            "store was written by a newer bc_ray")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise LogEntryError(f"log entry {entry} holds a malformed {kind} action "
                            f"({_described(exc)}); the log is damaged") from None
    except StoreError as exc:  # a path outside the data roots (`confined_path`)
        raise LogEntryError(f"log entry {entry} holds a refused {kind} action: {exc}") from exc


def as_action(action: Action | Mapping[str, Any], entry: object) -> Action:
    """A writer's action, typed: raw JSON (tests, tools) is parsed as readers parse it."""
    return action if isinstance(action, Action) else parse_action(action, entry)


def post_commit_hooks(actions: Iterable[Action]) -> list[Hook]:
    """The hooks a commit of `actions` runs, each once, in `Hook` order."""
    wanted = {hook for action in actions for hook in action.post_commit}
    return [hook for hook in Hook if hook in wanted]


def _described(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, error['loc'])) or 'action'}: {error['msg']}"
                     for error in exc.errors()[:3])
