"""`bc-ray publish`: embeddings a team computed in its own pipeline become the next version.

Read and check both tables (`source.py`) against what the store holds (`current.py`), fit B_k
post hoc on the entities they share with the current version and gate it (`align.py`), write the
tables under a fresh prefix, and make the version and its tables current in one log commit
(`bc_ray.store.versions.publish_with_tables`). Bad input commits nothing; a B_k the gate refuses
is recorded as a rejected candidate with its measurements, as training records one, and no
table is written. The store's first version needs no B_k. The current version's own bytes
published again (a retry) change nothing; so do bytes rejected before, gated the same way
against the same tables (the fit is seeded: it would reject them again).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from bc_ray.exceptions import CommitStateUnknownError, DataError
from bc_ray.publish.align import (
    Alignment,
    Pairs,
    check_overlap,
    fit_alignment,
    gate,
    paired_rows,
)
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.current import (
    Current,
    matching_ids,
    outside_snapshot,
    read_current,
    snapshot_ids,
    store_id_types,
)
from bc_ray.publish.source import Columns, ExternalTable, read_external
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState, VersionRecord
from bc_ray.store.store import Store, utc_now
from bc_ray.store.tables import (
    ENTITIES,
    TableFiles,
    table_prefix,
    table_refreshes,
    write_table,
)
from bc_ray.store.versions import (
    Candidate,
    next_version,
    publish_with_tables,
    register_candidate,
    reject_version,
)

logger = logging.getLogger(__name__)
MODE = "external"  # how the tables were made, as the log records it (a refresh: full, incremental)
ALREADY_PUBLISHED = "already published"  # the tables are the current version's: nothing changed


@dataclass(frozen=True)
class PublishOutcome:
    """What one publish did: the version it made, published or rejected, and why."""

    version: int
    status: str  # published | rejected | already published
    parent: int | None
    dim: int
    method: str
    rows: dict[str, int]
    metrics: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    refresh_id: str | None = None

    def summary(self) -> dict:
        return {"version": self.version, "status": self.status, "parent": self.parent,
                "dim": self.dim, "method": self.method, "rows": self.rows,
                "reasons": self.reasons, "refresh_id": self.refresh_id, **self.metrics}


def read_tables(config: PublishConfig) -> dict[str, ExternalTable]:
    """The user and item tables, each checked, and of one dimension."""
    tables = {entity: read_external(uri, entity, _columns(config, entity))
              for entity, uri in (("user", config.users), ("item", config.items))}
    if tables["user"].dim != tables["item"].dim:
        raise DataError(f"mixed dimensions: --users holds vectors of {tables['user'].dim} values "
                        f"and --items of {tables['item'].dim}; users and items share one "
                        "dimension (scores are their dot products)")
    if tables["user"].sha256 == tables["item"].sha256:
        raise DataError(f"--users and --items are the same table ({tables['item'].uri}): give "
                        "each entity's own")
    return tables


def _columns(config: PublishConfig, entity: str) -> Columns:
    column, option = config.id_col_of(entity)
    return Columns(column, config.embedding_col, option)


def _read_as(spec: dict) -> tuple:
    """How a version's tables were read: each entity's id column (a spec written before
    `--user-id-col` names one `id_col`), and the embedding column."""
    return (spec.get("user_id_col", spec.get("id_col")),
            spec.get("item_id_col", spec.get("id_col")), spec.get("embedding_col"))


def source_spec(config: PublishConfig, tables: dict[str, ExternalTable]) -> dict:
    """The version's spec: where its embeddings were read from (canonical URIs, which the
    scheduler's --publish-from also reads to publish each folder once) and how."""
    return {"dim": tables["user"].dim, "users": tables["user"].uri,
            "items": tables["item"].uri, "id_col": config.id_col,
            "user_id_col": config.id_col_of("user")[0],
            "item_id_col": config.id_col_of("item")[0],
            "embedding_col": config.embedding_col, "sha256": _digests(tables)}


def _digests(tables: dict[str, ExternalTable]) -> dict[str, str]:
    return {"users": tables["user"].sha256, "items": tables["item"].sha256}


def _retried(record: VersionRecord, config: PublishConfig,
             tables: dict[str, ExternalTable]) -> bool:
    """Whether the current version was published from these very bytes, read the same way: a
    retry (of a publish whose reply was lost, of a copied folder) changes nothing, where a
    new version would be an identity B_k and one more link in every consumer's chain."""
    spec = record.spec
    return (record.external and spec.get("sha256") == _digests(tables)
            and _read_as(spec) == _read_as(source_spec(config, tables)))


def run_publish(config: PublishConfig) -> PublishOutcome:
    """Publish (or reject) the tables of `config` as the store's next version."""
    store = Store(config.store)
    state = store.state()
    tables = read_tables(config)
    latest = state.version() if state.current_version is not None else None
    if latest is not None and _retried(latest, config, tables):  # before reading its tables
        logger.info("these tables are version %d's already (the same bytes): nothing published",
                    latest.version)
        return _unchanged(state, latest, tables)
    rejected = _rejected_before(state, config, tables)
    if rejected is not None:
        return _rejected_again(rejected)
    if state.seq < 0:  # a mistyped --store would otherwise pass unnoticed
        logger.info("no store at %s yet: this publish starts one", config.store)
    _warn_earlier(state, config, tables)
    current = read_current(store, state)
    known = snapshot_ids(store, state)
    types = store_id_types(current, known)
    tables = {e: matching_ids(t, types.get(e)) for e, t in tables.items()}
    outside = outside_snapshot(tables, known)
    _warn_outside(outside, tables)
    alignment = _aligned(tables, current, config)
    metrics = {"rows": {e: t.rows for e, t in tables.items()},
               **({"ids_outside_snapshot": outside} if outside else {}),
               **(alignment.metrics if alignment else {}),
               **(_gated_as(state, config) if alignment else {})}
    snapshot = state.snapshots.get(state.current_snapshot) if state.current_snapshot else None
    candidate = Candidate(
        parent=current.record.version if current else None, dim=tables["user"].dim,
        method=config.method, spec=source_spec(config, tables),
        snapshot_id=snapshot.id if snapshot else "", cutoff=snapshot.cutoff if snapshot else 0.0,
        model=None, transform=alignment.transform if alignment else None, metrics=metrics,
        family=EXTERNAL_FAMILY)
    reasons = gate(alignment.metrics, config) if alignment else []
    if reasons:
        record = register_candidate(store, candidate)
        reject_version(store, record.version, reasons)
        logger.warning("version %d rejected: %s", record.version, "; ".join(reasons))
        return _outcome(candidate, record.version, "rejected", reasons=reasons)
    version, refresh_id = _publish(store, state, candidate, tables)
    return _outcome(candidate, version, "published", refresh_id=refresh_id)


def publish_settings(config: PublishConfig) -> dict:
    """What decides the fit and the gate besides the tables' bytes and how they are read."""
    settings = dataclasses.asdict(config)
    for name in ("store", "users", "items", "id_col", "user_id_col", "item_id_col",
                 "embedding_col"):
        del settings[name]
    return settings


def _gated_as(state: StoreState, config: PublishConfig) -> dict:
    """Recorded with a gated version: the settings and the parent's tables it was gated with."""
    return {"publish_settings": publish_settings(config),
            "parent_tables": table_refreshes(state, state.current_version)}


def _rejected_before(state: StoreState, config: PublishConfig,
                     tables: dict[str, ExternalTable]) -> VersionRecord | None:
    """The version these bytes made and the gate rejected, gated as this publish would be
    (the same settings against the same parent tables): the seeded fit would reject them
    again, and each retry would record one more rejected version."""
    if state.current_version is None:
        return None
    expected = _gated_as(state, config)
    for record in sorted(state.versions.values(), key=lambda r: r.version, reverse=True):
        if (record.status == "rejected" and record.parent == state.current_version
                and _retried(record, config, tables)
                and all(record.metrics.get(k) == v for k, v in expected.items())):
            return record
    return None


def _rejected_again(record: VersionRecord) -> PublishOutcome:
    logger.warning("these tables were rejected as version %d (the same bytes, gated the same "
                   "way against the same tables of version %d): nothing recorded again; other "
                   "tables, --method or --max-align-error-rel are gated anew", record.version,
                   record.parent)
    metrics = {k: v for k, v in record.metrics.items() if k != "rows"}
    return PublishOutcome(record.version, "rejected", record.parent, record.dim, record.method,
                          dict(record.metrics["rows"]), metrics, list(record.reasons))


def _warn_earlier(state: StoreState, config: PublishConfig,
                  tables: dict[str, ExternalTable]) -> None:
    """An older version's own tables published again make a new version of them: said, since
    `bc-ray rollback` is what brings a version back (one chain link fewer)."""
    lineage = state.lineage()
    for number, record in sorted(state.versions.items(), reverse=True):
        if record.status != "rejected" and _retried(record, config, tables):
            how = (f"`bc-ray rollback --to {number}`, while its tables are kept, makes it "
                   "current without one" if number in lineage else
                   f"it was {record.status.replace('_', ' ')}: it cannot be made current again")
            logger.warning("these tables are version %d's (the same bytes): they are published "
                           "again as a new version (%s)", number, how)
            return


def _warn_outside(outside: dict[str, int], tables: dict[str, ExternalTable]) -> None:
    for entity, count in outside.items():
        if count:
            logger.warning("%d of the %d %s ids are not in the store's snapshot: published as "
                           "given (ids_outside_snapshot)", count, tables[entity].rows, entity)


def _warn_dropped(pairs: Pairs, current: Current) -> dict[str, int]:
    """The current version's entities the new tables lack, by entity: every version's readers
    lose them (older versions are views of the newest table), so it is said."""
    dropped = {e: len(current.tables[e].ids) - pairs.counts[e] for e in ENTITIES}
    for entity, count in dropped.items():
        if count:
            logger.warning("%d of the %d %s ids of version %d are not in the new table: "
                           "readers of every version lose them once it is published "
                           "(ids_dropped)", count, len(current.tables[entity].ids), entity,
                           current.record.version)
    return dropped


def _aligned(tables: dict[str, ExternalTable], current: Current | None,
             config: PublishConfig) -> Alignment | None:
    if current is None:
        return None  # the store's first version: nothing to be compatible with
    pairs = paired_rows(tables, current)
    check_overlap(pairs, tables, current, config)
    alignment = fit_alignment(pairs, config)
    metrics = alignment.metrics
    metrics["ids_dropped"] = _warn_dropped(pairs, current)
    logger.info("B to version %d (%s) on %d pairs: relative alignment error on those held out "
                "%s", current.record.version, config.method, metrics["fit_rows"],
                ", ".join(f"{e}s {error:.4g} ({metrics['align_sample_by_entity'][e]})"
                          for e, error in metrics["align_error_rel_by_entity"].items()))
    return alignment


def _publish(store: Store, state: StoreState, candidate: Candidate,
             tables: dict[str, ExternalTable]) -> tuple[int, str]:
    """Write both tables under a fresh prefix for the next version number, then commit the
    version and its tables at once; a refused commit leaves no file behind."""
    version = next_version(state)
    refresh_id = store.new_prefix("publish").split("/", 1)[1]
    refreshed_at = utc_now()
    prefixes = [table_prefix(store, version, e, refresh_id) for e in ENTITIES]
    try:
        written = [TableFiles(entity, write_table(store, prefix, tables[entity].ids,
                                                  tables[entity].matrix, version, refreshed_at),
                              tables[entity].rows, tables[entity].dim,
                              stats={"source": tables[entity].uri,
                                     "source_files": tables[entity].files})
                   for entity, prefix in zip(ENTITIES, prefixes)]
        publish_with_tables(store, candidate, version, refresh_id, written, refreshed_at, MODE)
    except CommitStateUnknownError:
        raise  # the entry may have landed and name the tables: gc decides later
    except Exception:  # noqa: BLE001 - whatever failed, unless the log names these files now
        if not _named(store, version, refresh_id):  # (a step after the commit failed)
            for prefix in prefixes:
                store.io.delete(prefix, recursive=True)
        raise
    return version, refresh_id


def _named(store: Store, version: int, refresh_id: str) -> bool:
    """Whether the log names the tables of `version` written as `refresh_id`: true, too, where
    the log cannot be read (gc decides later, by the log)."""
    try:
        table = store.state().table(version, ENTITIES[0])
    except Exception:  # noqa: BLE001 - unknown: keep the files
        return True
    return table is not None and table.refresh_id == refresh_id


def _unchanged(state: StoreState, record: VersionRecord, tables: dict[str, ExternalTable]
               ) -> PublishOutcome:
    table = state.table(record.version, ENTITIES[-1])
    return PublishOutcome(record.version, ALREADY_PUBLISHED, record.parent, record.dim,
                          record.method, {e: t.rows for e, t in tables.items()},
                          refresh_id=table.refresh_id if table else None)


def _outcome(candidate: Candidate, version: int, status: str, reasons: list[str] | None = None,
             refresh_id: str | None = None) -> PublishOutcome:
    metrics = {k: v for k, v in candidate.metrics.items() if k != "rows"}
    return PublishOutcome(version, status, candidate.parent, candidate.dim, candidate.method,
                          dict(candidate.metrics["rows"]), metrics, reasons or [], refresh_id)
