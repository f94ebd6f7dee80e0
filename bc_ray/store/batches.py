"""Ingested batches in the store: a team's own, growing data.

Each ingest writes its rows once under a fresh ``batches/<run>/`` prefix (edges, the user and item
rows it adds or changes, and the vocabularies after it) and one log entry both records the batch
and publishes the grown snapshot. The batch id is recorded in that entry, so a retried ingest of
the same batch finds it and changes nothing; a concurrent ingest that landed first makes the
prepared ids stale, and the batch is mapped again against the new state (never committed on top).
Every row carries its batch ordinal: a snapshot of the first n batches is the rows with
``batch < n``, whatever compaction did to the files since. Reading, mapping, writing and
committing a batch is the workflow in `bc_ray.ingest`; this module holds the records: reading
batches back, the current entities, compaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import orjson
import polars as pl

from bc_ray.data.assign import CurrentEntities
from bc_ray.data.features import FEATURE_DTYPE
from bc_ray.data.snapshot import GraphSnapshot, SnapshotMeta
from bc_ray.exceptions import DataError, StoreError
from bc_ray.store.actions import BatchesCompacted
from bc_ray.store.parquet import frame_to_parquet_bytes, from_parquet_bytes
from bc_ray.store.state import Segment, SnapshotRecord, StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)
ENTITY_FILES = {"user": "users", "item": "items"}
DEFAULT_COMPACT_ROWS = 5_000_000


def snapshot_id_for(batches: int) -> str:
    return f"ingested-{batches:06d}"


# -- reading ---------------------------------------------------------------------------------------

def read_rows(store: Store, state: StoreState, upto: int, kinds=("edges", "users", "items"),
              since: int = 0) -> dict[str, pl.DataFrame | None]:
    """Rows of batches `since` to `upto` (excluded), by kind, in batch order (None where no
    batch has any)."""
    parts: dict[str, list[pl.DataFrame]] = {kind: [] for kind in kinds}
    for segment in state.segments:
        if segment.first >= upto or segment.last < since:
            continue
        for kind in kinds:
            record = segment.files.get(kind)
            if record is None:
                continue
            frame = pl.from_arrow(from_parquet_bytes(store.get(record),
                                                     store.io.uri_of(record.path)))
            if segment.last >= upto or segment.first < since:
                frame = frame.filter(pl.col("batch").is_between(since, upto - 1))
            if kind == "edges":  # written as Int32; every reader of a snapshot takes Int64
                frame = frame.with_columns(pl.col("user_idx", "item_idx").cast(pl.Int64))
            parts[kind].append(frame)
    return {kind: (pl.concat(frames, how="diagonal_relaxed") if frames else None)
            for kind, frames in parts.items()}


def fold_entities(deltas: pl.DataFrame | None, vocab: dict[str, list[str]]) -> pl.DataFrame:
    """One row per entity, its latest change winning; every known field present."""
    if deltas is None:
        return pl.DataFrame(schema={"idx": pl.Int64, "id": pl.Int64,
                                    "batch": pl.Int32, **{f: FEATURE_DTYPE for f in vocab}})
    table = deltas.sort(["idx", "batch"], maintain_order=True).unique(
        subset=["idx"], keep="last", maintain_order=True)
    missing = [f for f in vocab if f not in table.columns]
    table = table.with_columns([pl.lit([], dtype=FEATURE_DTYPE).alias(f) for f in missing])
    return table.with_columns([pl.col(f).fill_null(pl.lit([], dtype=FEATURE_DTYPE))
                               for f in vocab]).select("idx", "id", "batch", *vocab)


def read_meta(store: Store, record: SnapshotRecord) -> SnapshotMeta:
    return SnapshotMeta.from_dict(orjson.loads(store.get(record.files["meta"])))


def current_entities(store: Store, state: StoreState) -> tuple[dict[str, CurrentEntities],
                                                             SnapshotMeta | None]:
    meta = None
    if state.batch_count:
        meta = read_meta(store, state.snapshot(snapshot_id_for(state.batch_count)))
    rows = read_rows(store, state, state.batch_count, kinds=tuple(ENTITY_FILES.values()))
    current = {}
    for entity, kind in ENTITY_FILES.items():
        vocab = meta.features.get(entity, {}) if meta else {}
        current[entity] = CurrentEntities(fold_entities(rows[kind], vocab), vocab)
    return current, meta


def load_ingested(store: Store, record: SnapshotRecord, state: StoreState) -> GraphSnapshot:
    """The graph of the first `record.batches` batches, in the snapshot format every job reads."""
    meta = read_meta(store, record)
    rows = read_rows(store, state, record.batches)
    edges = rows["edges"].sort(["timestamp", "batch"], maintain_order=True)
    edges = edges.unique(subset=["user_idx", "item_idx"], keep="first", maintain_order=True)
    edges = edges.with_columns(t=pl.Series(np.linspace(0.0, 1.0, edges.height)))
    tables = {}
    for entity, kind in ENTITY_FILES.items():
        table = fold_entities(rows[kind], meta.features.get(entity, {}))
        first = edges.group_by(f"{entity}_idx").agg(first_t=pl.col("t").first(),
                                                    first_ts=pl.col("timestamp").first())
        table = table.join(first.rename({f"{entity}_idx": "idx"}), on="idx", how="left")
        tables[entity] = table.select("idx", "id", "first_t", "first_ts", "batch",
                                      *meta.features.get(entity, {}))
    snapshot = GraphSnapshot(users=tables["user"], items=tables["item"],
                             edges=edges.select("user_idx", "item_idx", "rating", "timestamp",
                                                "t", "batch"), meta=meta)
    snapshot.validate()
    return snapshot


def load_ingested_entities(store: Store, record: SnapshotRecord,
                           state: StoreState) -> GraphSnapshot:
    """The snapshot's entity tables without reading its edges (a partitioned refresh's driver
    plans by them): each entity's latest row, `first_t` unknown (null). The cutoff of an
    ingested snapshot is 1.0, so every entity is present either way; only an age-aware model
    reads first_t, which `partition.first_seen.first_interactions` finds from the edge files
    (`load_ingested` from the whole edge list)."""
    meta = read_meta(store, record)
    rows = read_rows(store, state, record.batches, kinds=tuple(ENTITY_FILES.values()))
    tables = {}
    for entity, kind in ENTITY_FILES.items():
        table = fold_entities(rows[kind], meta.features.get(entity, {}))
        tables[entity] = table.with_columns(
            first_t=pl.lit(None, dtype=pl.Float64), first_ts=pl.lit(None, dtype=pl.Int64)).select(
            "idx", "id", "first_t", "first_ts", "batch", *meta.features.get(entity, {}))
    edges = pl.DataFrame(schema={"user_idx": pl.Int64, "item_idx": pl.Int64,
                                 "rating": pl.Float32, "timestamp": pl.Int64, "t": pl.Float64,
                                 "batch": pl.Int32})
    return GraphSnapshot(users=tables["user"], items=tables["item"], edges=edges, meta=meta)


# -- compaction ----------------------------------------------------------------------------------

def compact(store: Store, target_rows: int = DEFAULT_COMPACT_ROWS) -> dict:
    """Merge runs of small segments into segments of about `target_rows` edges (never splitting a
    batch); one commit swaps them in, and the old files are deleted after the grace period."""
    if target_rows < 1:
        raise DataError(f"--target-rows must be positive, got {target_rows}")
    state = store.state()
    groups = _groups(state, target_rows)
    if not groups:
        return {"segments_before": len(state.segments), "segments_after": len(state.segments),
                "merged": 0}
    prefix = store.new_prefix("batches")
    written, replaced = [], []
    for index, group in enumerate(groups):
        files = {}
        for kind in ("edges", *ENTITY_FILES.values()):
            frames = [pl.from_arrow(from_parquet_bytes(store.get(s.files[kind]),
                                                       store.io.uri_of(s.files[kind].path)))
                      for s in group if kind in s.files]
            if frames:
                merged = pl.concat(frames, how="diagonal_relaxed")
                files[kind] = vars(store.put(f"{prefix}/{index:05d}-{kind}.parquet",
                                             frame_to_parquet_bytes(merged)))
        written.append({"first": group[0].first, "last": group[-1].last, "files": files})
        replaced += [{"first": s.first, "last": s.last} for s in group]
    at = datetime.now(timezone.utc).isoformat()
    keys = {(r["first"], r["last"]) for r in replaced}

    def build(latest: StoreState) -> list[BatchesCompacted]:
        if not keys <= {(s.first, s.last) for s in latest.segments}:
            raise StoreError("another compaction changed the segments meanwhile; run it again")
        return [BatchesCompacted(at=at, replaced=replaced, segments=written)]

    landed = store.commit(build, staged=prefix)  # retention follows (a post-commit hook)
    return {"segments_before": len(state.segments), "segments_after": len(landed.segments),
            "merged": len(replaced)}


def _groups(state: StoreState, target_rows: int) -> list[list[Segment]]:
    """Consecutive segments packed up to `target_rows` edges; groups of one are left alone."""
    edges = {b.ordinal: b.stats["edges"] for b in state.batches.values()}
    rows = {s.first: sum(edges[o] for o in range(s.first, s.last + 1)) for s in state.segments}
    groups, current, size = [], [], 0
    for segment in state.segments:
        if current and size + rows[segment.first] > target_rows:
            groups.append(current)
            current, size = [], 0
        current.append(segment)
        size += rows[segment.first]
    if current:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def batches_summary(state: StoreState, record: SnapshotRecord) -> dict:
    """What `bc-ray data info` adds for an ingested snapshot (its first `batches` batches)."""
    batches = sorted((b for b in state.batches.values() if b.ordinal < record.batches),
                     key=lambda b: b.ordinal)
    return {"batches": len(batches), "segments": len(state.segments),
            "last_batch": batches[-1].batch_id if batches else None,
            "interactions_ingested": sum(b.stats["edges"] for b in batches),
            "late_edges": sum(b.stats.get("late_edges", 0) for b in batches),
            "duplicates_dropped": sum(b.stats.get("duplicates_dropped", 0) for b in batches)}

