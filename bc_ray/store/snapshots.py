"""Graph snapshots in the store: three Parquet tables and a meta file under one run prefix."""

from __future__ import annotations

import orjson
import polars as pl

from bc_ray.data.snapshot import GraphSnapshot, SnapshotMeta
from bc_ray.exceptions import DataError, NotFoundError
from bc_ray.store.actions import SnapshotPublished
from bc_ray.store.parquet import from_parquet_bytes, to_parquet_bytes
from bc_ray.store.state import SnapshotRecord, StoreState
from bc_ray.store.store import Store

TABLES = ("users", "items", "edges")


def snapshot_stats(snapshot: GraphSnapshot) -> dict:
    visible = snapshot.edges.filter(pl.col("t") <= snapshot.meta.cutoff)
    return {"name": snapshot.meta.name, "users": snapshot.num_users, "items": snapshot.num_items,
            "edges": snapshot.num_edges, "visible_edges": visible.height}


def visible_edge_count(edges: int, cutoff: float) -> int:
    """Edges with t <= cutoff, from t = linspace(0, 1, edges) (no need to read the table)."""
    return min(edges, int(cutoff * (edges - 1) + 1e-9) + 1) if edges else 0


def publish_snapshot(store: Store, snapshot: GraphSnapshot) -> SnapshotRecord:
    """Write the tables under a fresh prefix, then commit one entry that makes them current."""
    snapshot.validate()
    prefix = store.new_prefix("snapshots")
    files = {name: store.put(f"{prefix}/{name}.parquet",
                             to_parquet_bytes(getattr(snapshot, name).to_arrow()))
             for name in TABLES}
    files["meta"] = store.put(f"{prefix}/meta.json", orjson.dumps(snapshot.meta.to_dict()))
    snapshot_id = prefix.split("/", 1)[1]
    action = SnapshotPublished(id=snapshot_id, cutoff=snapshot.meta.cutoff, files=files,
                               stats=snapshot_stats(snapshot))
    state = store.commit(lambda _state: [action])
    return state.snapshots[snapshot_id]


def advance_snapshot(store: Store, cutoff: float) -> SnapshotRecord:
    """New data arrives: the current snapshot's files with a later cutoff (nothing is copied)."""
    if not 0.0 < cutoff <= 1.0:
        raise DataError(f"cutoff must be in (0, 1], got {cutoff}")

    def build(state: StoreState) -> list[SnapshotPublished]:
        current = state.snapshot()
        if current.batches is not None:
            raise DataError("the current snapshot grows by ingestion (bc-ray data ingest); a "
                            "cutoff only moves through a replayed data set")
        if cutoff < current.cutoff:
            raise DataError(f"cutoff {cutoff} is before the current snapshot's {current.cutoff}: "
                            "time only moves forward")
        base = current.id.split("@", 1)[0]
        stats = dict(current.stats)
        stats["visible_edges"] = visible_edge_count(stats["edges"], cutoff)
        return [SnapshotPublished(id=f"{base}@{cutoff:g}", cutoff=cutoff, files=current.files,
                                  stats=stats)]

    state = store.commit(build)
    return state.snapshot()


def load_entities(store: Store, state: StoreState) -> GraphSnapshot:
    """The current snapshot's entity tables and meta, its edges left unread (empty)."""
    record = state.snapshot()
    if record.batches is not None:
        from bc_ray.store.batches import load_ingested_entities

        return load_ingested_entities(store, record, state)
    tables = {name: pl.from_arrow(from_parquet_bytes(store.get(record.files[name]),
                                                     store.io.uri_of(record.files[name].path)))
              for name in ("users", "items")}
    meta = SnapshotMeta.from_dict(orjson.loads(store.get(record.files["meta"])))
    edges = pl.DataFrame(schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "t": pl.Float64})
    return GraphSnapshot(users=tables["users"], items=tables["items"], edges=edges,
                         meta=meta).with_cutoff(record.cutoff)


def load_snapshot(store: Store, snapshot_id: str | None = None,
                  state: StoreState | None = None) -> GraphSnapshot:
    state = state or store.state()
    record = state.snapshot(snapshot_id)
    if record.batches is not None:
        from bc_ray.store.batches import load_ingested

        return load_ingested(store, record, state)
    tables = {}
    for name in TABLES:
        if name not in record.files:
            raise NotFoundError(f"snapshot {record.id} lacks its {name} table")
        data = store.get(record.files[name])
        tables[name] = pl.from_arrow(from_parquet_bytes(
            data, store.io.uri_of(record.files[name].path)))
    meta = SnapshotMeta.from_dict(orjson.loads(store.get(record.files["meta"])))
    snapshot = GraphSnapshot(users=tables["users"], items=tables["items"], edges=tables["edges"],
                             meta=meta)
    return snapshot.with_cutoff(record.cutoff)
