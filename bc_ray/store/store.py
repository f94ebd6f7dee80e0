"""The embedding store: every artefact is written once under a fresh prefix, and becomes visible
only when the single log entry naming it lands.

Layout under the store URI::

    _log/                       version log (see log.py)
    snapshots/<run>/            users/items/edges Parquet + meta.json (a replayed data set)
    batches/<run>/              one ingested batch: edges, users/items rows it adds or changes,
                                meta.json (vocabularies); compaction writes merged ones here too
    versions/v<k>-<run>/        model weights, transform B_k, composed chain, metrics
    embeddings/v<k>/<entity>/<run>/part-*.parquet
    delta/                      the Delta Lake view of the current tables (delta.py): its own
                                copies and _delta_log/, never a data root of bc_ray's
    _train/                     Ray Train checkpoints (scratch, not part of any version)

Writers that crash leave only unreferenced files under a run prefix: `maintenance.collect_garbage`
removes them once they are older than a grace period. Readers follow the log and never list data
folders. A commit runs the post-commit hooks its kinds of action ask for (`actions.Hook`; what
each does is registered by `maintenance.py`): the Delta mirror, retention.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from bc_ray import chain as chain_math
from bc_ray.exceptions import (
    CommitStateUnknownError,
    ConfigError,
    CorruptFileError,
    NotFoundError,
    StoreError,
    UnsafeStoreError,
)
from bc_ray.io import FileIO, StorageOptions
from bc_ray.store.actions import Action, Hook, StoreConfigured, post_commit_hooks
from bc_ray.store.log import VersionLog, WriterAction
from bc_ray.store.parquet import sha256
from bc_ray.store.state import FileRecord, StoreState

# What each post-commit hook does, registered once (`maintenance.py`, imported with the package).
PostCommitHook = Callable[["Store"], object]
_POST_COMMIT: dict[Hook, PostCommitHook] = {}


def register_post_commit(hook: Hook, run: PostCommitHook) -> None:
    """Make `run(store)` what `hook` does after every commit whose actions ask for it."""
    _POST_COMMIT[hook] = run


def checked_keep_versions(value: object, name: str = "retention keep_versions") -> int:
    """A count of versions a reader can take back from the log: a whole number >= 1 (a boolean
    is refused, not taken as 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a whole number of versions >= 1, got {value!r}")
    return int(value)


def checked_seconds(value: object, name: str) -> float:
    """A duration a reader can take back from the log: finite and >= 0 (JSON has no inf or
    nan: they would be written as null, which no reader can apply)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetentionPolicy:
    """How many published versions keep their embedding tables and model weights.

    A property of the store, recorded in its log (`bc-ray store config`), so every process that
    applies it (CLI, jobs, scheduler, gc) keeps the same versions. Transforms are tiny and always
    kept: they are what serves old versions.
    """

    # The current version and the one before it: enough to roll back one bump (`bc-ray rollback`).
    keep_versions: int = 2
    staging_grace_seconds: float = 3600.0

    @classmethod
    def from_env(cls) -> RetentionPolicy | None:
        """BC_RAY_KEEP_VERSIONS / BC_RAY_GRACE_SECONDS, when set: recorded into a store's log the
        first time a writer applies retention there (never consulted once the log has one)."""
        env = os.environ
        if "BC_RAY_KEEP_VERSIONS" not in env and "BC_RAY_GRACE_SECONDS" not in env:
            return None
        return cls(keep_versions=_env_number("BC_RAY_KEEP_VERSIONS", int, checked_keep_versions,
                                             2),
                   staging_grace_seconds=_env_number("BC_RAY_GRACE_SECONDS", float,
                                                     checked_seconds, 3600.0))

    @classmethod
    def of(cls, state: StoreState) -> RetentionPolicy | None:
        """The policy the store's log records, if any."""
        recorded = state.retention
        return None if recorded is None else cls(
            keep_versions=recorded.keep_versions,
            staging_grace_seconds=recorded.staging_grace_seconds)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_versions", checked_keep_versions(self.keep_versions))
        object.__setattr__(self, "staging_grace_seconds", checked_seconds(
            self.staging_grace_seconds, "retention staging_grace_seconds"))

    def action(self, source: str) -> StoreConfigured:
        return StoreConfigured(keep_versions=self.keep_versions,
                               staging_grace_seconds=self.staging_grace_seconds, source=source,
                               at=utc_now().isoformat())


def _env_number(variable: str, parse, check, default):
    """One retention variable, parsed and checked, or `default` when unset; a bad value is one
    error naming the variable."""
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        return check(parse(raw), variable)
    except ValueError:
        raise ConfigError(f"{variable} must be a number, got {raw!r}") from None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    def __init__(self, uri: str, options: StorageOptions | None = None,
                 retention: RetentionPolicy | None = None, writer: str | None = None) -> None:
        self.io = FileIO(uri, options)
        self.log = VersionLog(self.io)
        # A policy given by the caller (tests, benchmarks) wins over the one the log records.
        self.explicit_retention = retention
        self.writer = writer or f"{socket.gethostname()}:{os.getpid()}"
        self._probed = self.io.scheme == "file"

    @property
    def retention(self) -> RetentionPolicy:
        """The policy this store keeps: an explicit one (tests, benchmarks), else the one its
        log records, else the environment's or the default. Readers never need it."""
        return self.policy(self.state())

    def policy(self, state: StoreState) -> RetentionPolicy:
        """The policy this store keeps in `state` (see `retention`)."""
        if self.explicit_retention is not None:
            return self.explicit_retention
        recorded = RetentionPolicy.of(state)
        if recorded is not None:
            return recorded
        return RetentionPolicy.from_env() or RetentionPolicy()

    def configure(self, policy: RetentionPolicy) -> StoreState:
        """Record the store's retention in its log (`bc-ray store config`)."""
        return self.commit(lambda _state: [policy.action("bc-ray store config")])

    @property
    def uri(self) -> str:
        return self.io.uri

    def state(self) -> StoreState:
        return self.log.read_state()

    def written_state(self) -> StoreState:
        """`state()` of a store that something has written: a path nothing has been written to,
        most often a mistyped one, is said to be one instead of read as an empty store."""
        state = self.state()
        if state.seq < 0:
            raise NotFoundError(f"no store at {self.uri}: nothing has been written there (check "
                                "the path; `bc-ray data ingest`, `bc-ray data synth` or "
                                "`bc-ray publish` makes one)")
        return state

    def commit(self, build: Callable[[StoreState], Sequence[WriterAction]], retries: int = 10,
               staged: str | None = None) -> StoreState:
        """Commit the actions `build(state)` returns, re-building on conflicts, then run the
        post-commit hooks they ask for (`Action.post_commit`); returns the state the commit made.

        Every file an action adds must exist with its recorded size (and, on a local disk, be
        synced) before the entry lands: a writer whose files were removed meanwhile (a gc with
        too short a grace) fails here instead of committing dangling references. `staged` is a
        prefix this writer wrote for this commit alone: removed when the commit fails (a
        `StoreError`, or a `ConfigError` such as a retention that cannot apply), never when it
        has or may have landed, whatever a post-commit hook raises."""
        try:
            state, actions = self._commit(build, retries)
        except CommitStateUnknownError:
            raise  # the entry may have landed and name the staged files: gc decides later
        except (StoreError, ConfigError):  # ConfigError: from the build, before any entry
            if staged is not None and not self._names_under(staged):
                self.io.delete(staged, recursive=True)  # never referenced: safe to remove
            raise
        for hook in post_commit_hooks(actions):
            _POST_COMMIT[hook](self)
        return state

    def _names_under(self, prefix: str) -> bool:
        """Whether the log names a file under `prefix` (true, too, where it cannot be read:
        gc decides later): a failed commit's staged files are only removed when it does not."""
        try:
            live = self.state().live_paths()
        except Exception:  # noqa: BLE001 - unknown: keep the files
            return True
        folder = prefix.rstrip("/") + "/"
        return any(path.startswith(folder) for path in live)

    def _commit(self, build: Callable[[StoreState], Sequence[WriterAction]], retries: int
                ) -> tuple[StoreState, list[Action]]:
        """The commit itself: the state it made and the actions that landed."""
        self.ensure_conditional_writes()
        checked: set[str] = set()
        committed: list[Action] = []

        def checked_build(state: StoreState) -> list[Action]:
            actions = self.log.typed(build(state), state.seq + 1)
            _check_hooks(actions)
            if Hook.RETENTION in post_commit_hooks(actions):
                # A policy retention could not apply (a bad BC_RAY_* variable) is refused
                # before the entry lands, not by its hook after it.
                self.policy(state)
            for action in actions:
                for record in action.added_files():
                    if record.path not in checked:
                        self._check_added(record)
                        checked.add(record.path)
            committed[:] = actions
            return actions

        return self.log.commit_with_retry(checked_build, self.writer, retries=retries), committed

    def _check_added(self, record: FileRecord) -> None:
        try:
            size = self.io.size(record.path)
        except NotFoundError:
            raise StoreError(f"refusing to commit: {self.io.uri_of(record.path)} was written by "
                             "this writer but is gone (deleted by a gc with a short grace?); "
                             "run it again") from None
        if size != record.size:
            raise StoreError(f"refusing to commit: {self.io.uri_of(record.path)} has {size} "
                             f"bytes, {record.size} were written")
        self.io.sync(record.path)

    # -- files ----------------------------------------------------------------------------------
    def new_prefix(self, kind: str) -> str:
        stamp = utc_now().strftime("%Y%m%dT%H%M%S")
        return f"{kind}/{stamp}-{uuid.uuid4().hex[:10]}"

    def put(self, rel: str, data: bytes | memoryview) -> FileRecord:
        self.io.write_bytes(rel, data)
        return FileRecord(path=rel, size=len(data), sha256=sha256(data))

    def put_parts(self, rel: str, parts: Sequence[bytes | memoryview]) -> FileRecord:
        """`put` of the parts' concatenation, which is never built (`FileIO.write_parts`)."""
        self.io.write_parts(rel, parts)
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        return FileRecord(path=rel, size=sum(memoryview(p).nbytes for p in parts),
                          sha256=digest.hexdigest())

    def get(self, record: FileRecord, verify: bool = True) -> bytes:
        try:
            data = self.io.read_bytes(record.path)
        except NotFoundError as exc:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} listed by the log is "
                                   "missing") from exc
        if len(data) != record.size:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} has {len(data)} bytes, "
                                   f"the log says {record.size}: truncated or replaced")
        if verify and sha256(data) != record.sha256:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} fails its sha256 check")
        return data

    def verify(self, record: FileRecord, chunk_bytes: int = 16 << 20) -> None:
        """Size and sha256 of a file, streamed (never held in memory whole)."""
        self.check_size(record)
        digest = hashlib.sha256()
        try:
            with self.io.fs.open(self.io.path(record.path), "rb") as handle:
                while chunk := handle.read(chunk_bytes):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} listed by the log is "
                                   "missing") from exc
        if digest.hexdigest() != record.sha256:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} fails its sha256 check")

    def check_size(self, record: FileRecord) -> None:
        """Cheap existence and length check before handing a path to a Parquet reader."""
        try:
            size = self.io.size(record.path)
        except NotFoundError as exc:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} listed by the log is "
                                   "missing") from exc
        if size != record.size:
            raise CorruptFileError(f"file {self.io.uri_of(record.path)} has {size} bytes, the "
                                   f"log says {record.size}: truncated or replaced")

    def ensure_conditional_writes(self) -> None:
        """Refuse to commit on a store that ignores put-if-absent (some S3-compatible ones do)."""
        if self._probed:
            return
        probe = f"_probe/{uuid.uuid4().hex}"
        self.io.create(probe, b"1")
        try:
            self.io.create(probe, b"2")
        except FileExistsError:
            self._probed = True
            return
        finally:
            self.io.delete(probe)
        raise UnsafeStoreError(
            f"{self.uri} accepted a second put-if-absent of the same key: this object store "
            "ignores If-None-Match, so concurrent commits could overwrite each other")

    # -- versions and transforms -----------------------------------------------------------------
    def chain(self, version: int | None = None, state: StoreState | None = None
              ) -> dict[int, chain_math.Affine]:
        """The composed transforms of `version` (default current): target j -> (W_k^j, b_k^j)."""
        state = state or self.state()
        record = state.version(version)
        if record.chain_removed:  # outside retention: recomposed from the kept transforms
            lineage = state.lineage(record.version)
            transforms = [chain_math.transform_from_bytes(
                self.get(state.versions[v].files["transform"])) for v in lineage[1:]]
            chain = {target: chain_math.compose_path(transforms[index:])
                     for index, target in enumerate(lineage[:-1])}
        else:
            chain = chain_math.from_bytes(self.get(record.files["chain"]))
        chain[record.version] = chain_math.identity(record.dim)
        return chain

    def transform_to(self, target: int, source: int | None = None,
                     state: StoreState | None = None) -> chain_math.Affine:
        state = state or self.state()
        record = state.version(source)
        if target > record.version:
            raise NotFoundError(f"cannot transform version {record.version} embeddings to the "
                                f"newer version {target}: transforms only go backwards")
        chain = self.chain(record.version, state)
        if target not in chain:
            raise NotFoundError(f"version {target} is not on the lineage of version "
                                f"{record.version} ({state.lineage(record.version)})")
        return chain[target]


def _check_hooks(actions: list[Action]) -> None:
    """Refuse, before anything lands, a commit whose follow-up steps nobody registered."""
    missing = [hook for hook in post_commit_hooks(actions) if hook not in _POST_COMMIT]
    if missing:
        raise StoreError(f"no post-commit hook registered for {', '.join(missing)} "
                         "(bc_ray.store.maintenance registers them)")
