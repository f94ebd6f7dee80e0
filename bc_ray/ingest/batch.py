"""The batch workflow: read a batch's files, drop what the batches it corrects already hold, and
commit it (one attempt: `attempt.py`), mapping it again whenever another batch landed first."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

import polars as pl

from bc_ray.data.assign import CurrentEntities, resolve_ids
from bc_ray.data.batch import RawBatch
from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import CommitConflictError, DataError
from bc_ray.ingest.attempt import IngestOutcome, already_ingested, check_not_taken, commit_batch
from bc_ray.ingest.read import BatchInput, read_batch
from bc_ray.ingest.sources import SourceFile
from bc_ray.store.batches import ENTITY_FILES, current_entities, read_rows
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)
# Each failed attempt means another batch landed first: 64 lets 64 ingests started together
# (32 tested) all land, with room for a stream of new ones arriving meanwhile.
INGEST_ATTEMPTS = 64


def ingest(store: Store, request: BatchInput, mapping: ColumnMapping, batch_id: str | None = None,
           files: dict[str, list[SourceFile]] | None = None, name: str = "ingested",
           attempts: int = INGEST_ATTEMPTS, corrects: tuple[str, ...] = (),
           before_commit: Callable[[], None] | None = None) -> IngestOutcome:
    """Read and validate the batch, then write it and publish the grown snapshot in one commit.

    Nothing is written before validation passes; a batch id already in the log changes nothing.
    An attempt fails only when another batch landed meanwhile, so N ingests at once need at
    most N attempts each; the store's jittered backoff between them spreads the writers out.
    `corrects` names the batches that took earlier content of the same files: interactions
    already in them are dropped, so each interaction is counted once. `before_commit` is called
    when every file of an attempt is written, before its commit (tests kill the process there).
    """
    state = store.state()
    _check_store(state)
    if batch_id is not None and batch_id in state.batches:
        return already_ingested(state, batch_id)
    _check_corrects(state, corrects)
    raw = _without_corrected(store, state, read_batch(request, mapping, files), corrects)
    logger.info("read %d interaction rows from %d file(s) (and %d entity file(s)); %d exact "
                "duplicates dropped", raw.counts["rows_read"],
                sum(s["role"] == "edges" for s in raw.sources),
                sum(s["role"] != "edges" for s in raw.sources), raw.counts["duplicates_dropped"])
    batch_id = batch_id or raw.default_id
    for attempt in range(attempts):
        if batch_id in state.batches:
            return already_ingested(state, batch_id)
        check_not_taken(state, raw, corrects)  # against every batch that landed meanwhile too
        outcome = commit_batch(store, state, raw, batch_id, name, before_commit)
        if outcome is not None:
            return outcome
        _back_off(store, batch_id, attempt)
        state = store.state()
    raise CommitConflictError(f"batch {batch_id}: other batches kept landing first "
                              f"({attempts} attempts); run the ingest again")


def _check_corrects(state: StoreState, corrects: tuple[str, ...]) -> None:
    unknown = [batch_id for batch_id in corrects if batch_id not in state.batches]
    if unknown:
        recent = sorted(state.batches.values(), key=lambda b: b.ordinal)[-5:]
        named = ", ".join(b.batch_id for b in reversed(recent)) or "none yet"
        raise DataError(f"--corrects {unknown[0]}: no batch with that id in the store (the "
                        f"newest: {named}; the landing report's `changed` command names the "
                        "one to correct)")


def _without_corrected(store: Store, state: StoreState, raw: RawBatch,
                       corrects: tuple[str, ...]) -> RawBatch:
    """The batch less the interactions (user, item, time, rating) the corrected batches hold,
    compared by external id; counted as `already_in_corrected_batch`."""
    if not corrects:
        return raw
    current, _ = current_entities(store, state)
    raw = resolve_ids(raw, current)
    earlier = _external_edges(store, state, current, corrects)
    keys = ["user_id", "item_id", "timestamp", "rating"]
    earlier = earlier.select(keys).cast(dict(raw.edges.select(keys).schema)).unique()
    kept = raw.edges.join(earlier, on=keys, how="anti", maintain_order="left")
    dropped = raw.edges.height - kept.height
    if kept.height == 0:
        raise DataError(f"every interaction here ({dropped}) is already in batch "
                        f"{', '.join(corrects)}: nothing to ingest")
    return replace(raw, edges=kept,
                   counts={**raw.counts, "already_in_corrected_batch": dropped})


def _external_edges(store: Store, state: StoreState, current: dict[str, CurrentEntities],
                    batch_ids: tuple[str, ...]) -> pl.DataFrame:
    """The edges of the named batches, with the entities' external ids."""
    frames = []
    for batch_id in batch_ids:
        ordinal = state.batches[batch_id].ordinal
        frames.append(read_rows(store, state, ordinal + 1, kinds=("edges",),
                                since=ordinal)["edges"])
    edges = pl.concat([f for f in frames if f is not None], how="diagonal_relaxed")
    for entity in ENTITY_FILES:
        ids = current[entity].table.select(pl.col("idx").cast(pl.Int64).alias(f"{entity}_idx"),
                                           pl.col("id").alias(f"{entity}_id"))
        edges = edges.join(ids, on=f"{entity}_idx", how="left")
    return edges


def _back_off(store: Store, batch_id: str, attempt: int) -> None:
    """Wait before mapping a batch again: the store's jittered exponential backoff, so writers
    that collided do not collide again in lockstep."""
    delay = store.log.backoff.delay(attempt)
    logger.info("another batch landed first; mapping %s again in %.2f s (attempt %d)",
                batch_id, delay, attempt + 2)
    time.sleep(delay)


def _check_store(state: StoreState) -> None:
    if state.current_snapshot is not None and state.snapshot().batches is None:
        raise DataError(f"this store's snapshot {state.current_snapshot} is a replayed data set "
                        "(bc-ray data import/synth), which does not grow by ingestion; ingest "
                        "into a new store")
