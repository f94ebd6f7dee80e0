"""What keeps a store tidy after its commits: the Delta mirror, retention and garbage collection.

The follow-up steps of a commit are registered here, once, as post-commit hooks (the bottom of
this module); which of them a commit runs is a property of the kinds of action it holds
(`actions.Hook`, after delta-rs's post-commit hook properties): a commit that changes the current
tables (a refresh, a rollback) runs the Delta mirror and then retention, one that leaves versions
or files behind (publish, reject, compaction) runs retention. Writers only commit; nothing else
calls these after a commit. Neither fails the commit it follows: a failure is logged, and the
next commit catches up. `bc-ray gc` and `bc-ray store mirror` run them on demand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from bc_ray.exceptions import ConfigError, UnmirrorableError
from bc_ray.store.actions import Action, DeltaMirrored, Hook, RetentionApplied
from bc_ray.store.delta import current_tables, remove_legacy_log, sync
from bc_ray.store.delta import logger as delta_logger
from bc_ray.store.state import DATA_ROOTS, DeltaMirror, StoreState, TableRecord, VersionRecord
from bc_ray.store.store import (
    RetentionPolicy,
    Store,
    checked_seconds,
    register_post_commit,
    utc_now,
)

logger = logging.getLogger(__name__)

# `bc-ray gc` refuses a shorter grace unless forced: a writer's files are unreferenced until its
# commit, and a refresh or training run can take many minutes between its first write and it.
MIN_GC_GRACE_SECONDS = 900.0
MIRROR_ROUNDS = 3  # syncs of one mirror when newer tables keep landing meanwhile


# -- the Delta mirror ------------------------------------------------------------------------------

def mirror_embeddings(store: Store) -> int | None:
    """Make the Delta table show the current tables (`delta.sync`) and note its version in
    bc_ray's log; returns the Delta version now current (None: no tables yet). Raises
    `StoreError` when it cannot."""
    for _ in range(MIRROR_ROUNDS):
        state = store.state()
        tables = current_tables(state)
        if not tables:
            return None
        version = sync(store, state, tables)
        # Two mirrors at once (a refresh beside a rollback): the one that read the older state
        # may sync last. It syncs again until what it synced is still current, so the view
        # ends on the newest tables whoever finishes last.
        if _refresh_ids(current_tables(store.state())) == _refresh_ids(tables):
            break
    _record_mirror(store, state, tables, version)
    remove_legacy_log(store)
    return version


def _refresh_ids(tables: dict[str, TableRecord]) -> dict[str, tuple[int, str]]:
    return {e: (t.version, t.refresh_id) for e, t in tables.items()}


def mirror_quietly(store: Store) -> None:
    """After a commit that changed the current tables: a mirror that fails, for whatever reason
    (a storage error, a bug), is logged and never undoes or fails that commit (the next change,
    or `bc-ray store mirror`, catches up). Logged on the Delta view's logger, where operators
    watch for it."""
    try:
        mirror_embeddings(store)
    except UnmirrorableError as exc:
        delta_logger.warning("the store has no Delta view (%s)", exc)
    except Exception as exc:  # noqa: BLE001 - the commit it follows has landed: never raise
        delta_logger.warning("the Delta view was not updated (%s); readers of bc_ray's log are "
                             "unaffected, run `bc-ray store mirror` to retry", exc)


def _record_mirror(store: Store, state: StoreState, tables: dict[str, TableRecord],
                   delta_version: int) -> None:
    """Note the mirrored version in bc_ray's log (`store mirror`, `versions` show it); its files
    stay live until the mirror moves on."""
    mirrored = DeltaMirror(delta_version=delta_version,
                           paths=sorted(f.path for table in tables.values() for f in table.files),
                           tables={e: t.refresh_id for e, t in tables.items()})
    if state.delta == mirrored:
        return

    def build(latest: StoreState) -> list[DeltaMirrored]:
        if _refresh_ids(current_tables(latest)) != _refresh_ids(tables):
            raise _Superseded  # newer tables landed: their own mirror records itself
        return [DeltaMirrored(**mirrored.to_json(), at=utc_now().isoformat())]

    try:
        store.commit(build)
    except _Superseded:
        logger.info("the Delta version %d was superseded before it was recorded", delta_version)


class _Superseded(Exception):
    """The tables a mirror synced are no longer current when it comes to record them."""


# -- retention -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetentionPlan:
    """What one retention pass unreferenced and deleted."""

    tables: list[str] = field(default_factory=list)  # table keys, "v{version}/{entity}"
    models: list[int] = field(default_factory=list)  # versions whose model file went
    chains: list[int] = field(default_factory=list)  # versions whose composed chain file went
    purged: list[str] = field(default_factory=list)  # files deleted after their grace period

    def __bool__(self) -> bool:
        return any((self.tables, self.models, self.chains, self.purged))


def apply_retention(store: Store) -> RetentionPlan:
    """Unreference embedding tables and models outside the store's policy, and delete the files
    that have been unreferenced for longer than the grace period (one commit, then deletes).

    An entity's newest table on the lineage is kept until a newer version's table for it is
    committed: after a bump, readers keep getting the previous version's table (and any older
    version through the chain) until the new version's first refresh lands."""
    planned: list[RetentionPlan] = []

    def build(state: StoreState) -> list[Action]:
        policy = store.policy(state)
        actions: list[Action] = []
        if not state.retention and store.explicit_retention is None \
                and RetentionPolicy.from_env():
            logger.info("recording the environment's retention %s in the store's log", policy)
            actions.append(policy.action("environment"))
        now = utc_now()
        planned[:] = [_plan(state, policy, now)]
        if planned[0]:
            actions.append(RetentionApplied(at=now.isoformat(), **vars(planned[0])))
        return actions

    if not build(store.state()):
        return RetentionPlan()
    store.commit(build)
    for path in planned[0].purged:
        store.io.delete(path)
    return planned[0]


def retain_quietly(store: Store) -> None:
    """Retention after a commit: one that fails (a bucket that refuses deletes, a throttled
    read) is logged and never fails the commit it follows. A job whose version had landed would
    fail and be retried (the scheduler's retry of a bump trained a second version); the next
    commit, or `bc-ray gc`, applies it again."""
    try:
        apply_retention(store)
    except Exception as exc:  # noqa: BLE001 - the commit it follows has landed: never raise
        logger.warning("retention did not run after this commit (%s: %s); the commit stands, "
                       "the next commit or `bc-ray gc` applies it", type(exc).__name__, exc)


def _plan(state: StoreState, policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    keep = _kept_versions(state, policy.keep_versions)
    tables = _expired_tables(state, keep)
    read_through = {t.version for k, t in state.tables.items() if k not in tables}
    # never a file the state still names (the Delta mirror's, or one a commit named again)
    live = state.live_paths()
    return RetentionPlan(
        tables=tables,
        models=[v for v, r in state.versions.items()
                if not r.model_removed and "model" in r.files
                and _model_expired(r, keep, state.current_version)],
        chains=[v for v, r in state.versions.items()
                if not r.chain_removed and "chain" in r.files
                and _model_expired(r, keep, state.current_version) and v not in read_through],
        purged=[p for p, at in state.garbage.items()
                if (now - datetime.fromisoformat(at)).total_seconds()
                >= policy.staging_grace_seconds and p not in live])


def _kept_versions(state: StoreState, keep_versions: int) -> set[int]:
    lineage = state.lineage()
    return set(lineage[-keep_versions:]) if lineage else set()


def _expired_tables(state: StoreState, keep: set[int]) -> list[str]:
    """Tables outside the kept versions, except each entity's newest table on the lineage while
    no kept version has one yet (a bump's first refresh has not landed)."""
    lineage = state.lineage()
    protected = set()
    for entity in {t.entity for t in state.tables.values()}:
        if not any(state.table(v, entity) for v in keep):
            newest = [v for v in lineage if state.table(v, entity) is not None]
            if newest:
                protected.add((newest[-1], entity))
    return [k for k, t in state.tables.items()
            if t.version not in keep and (t.version, t.entity) not in protected]


def _model_expired(record: VersionRecord, keep: set[int], current: int | None) -> bool:
    if record.status in ("rejected", "rolled_back"):
        return True
    if record.status == "candidate":  # trained against a version no longer current (its job
        return record.parent != current  # died, or another version landed): never published
    return record.status == "published" and record.version not in keep


# -- garbage collection ----------------------------------------------------------------------------

def collect_garbage(store: Store, grace_seconds: float | None = None, force: bool = False
                    ) -> list[str]:
    """Delete every file under the data folders that no live state references: run prefixes
    no log entry ever named (writers that crashed before their commit) go whole, and single
    files inside a referenced prefix (a retention or compaction killed between its commit and
    its deletes, a retried task's extra part) go one by one. Returns what was deleted.

    A run prefix is only touched once its newest file is older than the grace period, so a
    running writer is never hurt; a grace below `MIN_GC_GRACE_SECONDS` could still delete a
    slow writer's files: refused unless `force`. Files the log keeps for readers of older
    states (its garbage list) are retention's, after their own grace."""
    grace = store.retention.staging_grace_seconds if grace_seconds is None else grace_seconds
    grace = checked_seconds(grace, "the gc grace (--grace)")
    if grace < MIN_GC_GRACE_SECONDS and not force:
        raise ConfigError(f"a gc grace of {grace:g} s could delete the files of a writer "
                          f"still running (refresh, training, ingest); use at least "
                          f"{MIN_GC_GRACE_SECONDS:g} s, or --force when no writer runs")
    state = store.state()
    kept = state.live_paths() | set(state.garbage)
    deleted = []
    now = time.time()
    for prefix, files in _data_files(store).items():
        newest = max((t for t in files.values() if t is not None), default=None)
        if newest is not None and now - newest < grace:
            continue
        orphans = sorted(path for path in files if path not in kept)
        if len(orphans) == len(files):
            store.io.delete(prefix, recursive=True)
            deleted.append(prefix)
            continue
        for path in orphans:
            store.io.delete(path)
        deleted += orphans
    return deleted


def _data_files(store: Store) -> dict[str, dict[str, float | None]]:
    """Every file under the data folders with its modification time, by run prefix."""
    prefixes: dict[str, dict[str, float | None]] = {}
    for root in DATA_ROOTS:
        for path, modified in store.io.list_files(root).items():
            prefixes.setdefault(_run_prefix(path), {})[path] = modified
    return prefixes


def _run_prefix(path: str) -> str:
    parts = path.split("/")
    depth = 4 if parts[0] == "embeddings" else 2
    return "/".join(parts[:depth])


# -- the post-commit hooks, registered once --------------------------------------------------------

register_post_commit(Hook.DELTA_MIRROR, mirror_quietly)
register_post_commit(Hook.RETENTION, retain_quietly)
