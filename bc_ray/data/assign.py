"""A validated batch against the store's dictionary: ids made stable, features encoded.

Pure polars. Existing entities keep their index forever; new ones take the next free index in
order of first appearance in the batch's rows; feature vocabularies only grow (the id type rule:
`bc_ray.data.ids`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from bc_ray.data.batch import ENTITY_ROLES, RawBatch
from bc_ray.data.features import FEATURE_DTYPE, encode_fields
from bc_ray.data.ids import store_id_type

# Largest id range mapped through a direct-address table (4 bytes per id in the range).
DENSE_ID_SPAN_LIMIT = 1 << 26


@dataclass(frozen=True)
class CurrentEntities:
    """The store's entities before this batch: idx, id and current feature codes."""

    table: pl.DataFrame  # idx, id, batch, feature columns (List(Int32))
    vocab: dict[str, list[str]]


@dataclass
class AssignedBatch:
    edges: pl.DataFrame  # user_idx, item_idx (Int32: fewer bytes written), rating, timestamp, batch
    deltas: dict[str, pl.DataFrame]  # entity rows added or changed: idx, id, batch, features
    vocab: dict[str, dict[str, list[str]]]
    counts: dict[str, int]


def resolve_ids(raw: RawBatch, current: dict[str, CurrentEntities]) -> RawBatch:
    """Give the batch's ids the store's id type, or refuse the file whose ids do not have it
    (the rule: bc_ray.data.ids)."""
    edges, entities = raw.edges, dict(raw.entities)
    for entity in ENTITY_ROLES:
        column = f"{entity}_id"
        store = current[entity].table["id"].dtype if current[entity].table.height else None
        target = store_id_type(entity, raw.id_origins[entity], edges[column].dtype, store)
        edges = edges.with_columns(pl.col(column).cast(target))
        if entities[entity] is not None:
            entities[entity] = entities[entity].with_columns(pl.col("id").cast(target))
    return replace(raw, edges=edges, entities=entities)


def assign_batch(raw: RawBatch, current: dict[str, CurrentEntities], ordinal: int,
                 last_timestamp: int | None) -> AssignedBatch:
    """Map ids to stable indices and encode features; `ordinal` tags every row written."""
    raw = resolve_ids(raw, current)
    order = raw.edges
    counts = dict(raw.counts)
    counts["edges"] = order.height
    counts["late_edges"] = 0 if last_timestamp is None else int(
        (order["timestamp"] < last_timestamp).sum())
    with ThreadPoolExecutor(max_workers=2) as pool:  # polars and numpy release the GIL
        done = dict(zip(ENTITY_ROLES, pool.map(
            lambda entity: _assign_entity(entity, raw, current[entity], ordinal),
            ENTITY_ROLES)))
    deltas = {entity: result.delta for entity, result in done.items()}
    vocab = {entity: result.vocab for entity, result in done.items()}
    for entity, result in done.items():
        counts[f"new_{entity}s"] = result.new
        counts[f"updated_{entity}s"] = result.updated
    edges = pl.DataFrame({f"{entity}_idx": done[entity].idx for entity in ENTITY_ROLES}
                         ).with_columns(order["rating"], order["timestamp"],
                                        batch=pl.lit(ordinal, dtype=pl.Int32))
    return AssignedBatch(edges=edges, deltas=deltas, vocab=vocab, counts=counts)


@dataclass
class _EntityAssignment:
    idx: pl.Series  # the batch's rows' indices of this entity
    delta: pl.DataFrame
    vocab: dict[str, list[str]]
    new: int
    updated: int


def _assign_entity(entity: str, raw: RawBatch, prior: CurrentEntities, ordinal: int
                   ) -> _EntityAssignment:
    ids = raw.edges[f"{entity}_id"]
    seen = ids.gather(ids.arg_unique())  # first appearance order, one hash pass
    if prior.table.height == 0:  # an empty dictionary takes the batch's id type
        prior = CurrentEntities(prior.table.with_columns(pl.col("id").cast(seen.dtype)),
                                prior.vocab)
    features = raw.entities[entity]
    if features is not None:
        seen = pl.concat([seen, features["id"]]).unique(maintain_order=True)
    fresh = seen.to_frame("id").join(prior.table.select("id"), on="id", how="anti",
                                     maintain_order="left")
    fresh = fresh.with_columns(idx=pl.int_range(prior.table.height,
                                                prior.table.height + fresh.height,
                                                dtype=pl.Int64))
    changed = fresh.select("idx", "id")
    if features is not None:
        updated = prior.table.select("idx", "id").join(features.select("id"), on="id",
                                                       how="semi")
        changed = pl.concat([changed, updated]).sort("idx")
    delta, vocab = _encode(changed, features, prior)
    index = pl.concat([prior.table.select("idx", "id"), fresh.select("idx", "id")])
    return _EntityAssignment(idx=map_ids(ids, index),
                             delta=delta.with_columns(batch=pl.lit(ordinal, dtype=pl.Int32)),
                             vocab=vocab, new=fresh.height,
                             updated=changed.height - fresh.height)


def map_ids(ids: pl.Series, index: pl.DataFrame) -> pl.Series:
    """Each id's index in `index` (idx, id), which holds every id of `ids`.

    Integer ids in a compact range (database keys usually are) are looked up in a direct-address
    table, several times faster than hashing 10M values; other ids go through a hash lookup.
    """
    if ids.dtype.is_integer() and ids.len():
        low, high = ids.min(), ids.max()
        span = high - low + 1
        if span <= min(DENSE_ID_SPAN_LIMIT, 4 * (ids.len() + index.height)):
            inside = index.filter(pl.col("id").is_between(low, high))
            table = np.full(span, -1, dtype=np.int32)
            table[inside["id"].to_numpy() - low] = inside["idx"].to_numpy()
            return pl.Series(ids.name, table[ids.to_numpy() - low])
    return ids.replace_strict(index["id"], index["idx"], return_dtype=pl.Int32)


def _encode(changed: pl.DataFrame, features: pl.DataFrame | None, prior: CurrentEntities
            ) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Feature codes of the changed entities: fields this batch names are replaced, the others
    keep the entity's current codes (new entities start with none)."""
    if features is None:
        return changed, dict(prior.vocab)
    encoded, vocab, _ = encode_fields(changed, features, prior.vocab, 1, "entity")
    kept = [f for f in prior.vocab if f not in features.columns]
    if kept and prior.table.height:
        encoded = (encoded.drop(kept)
                   .join(prior.table.select("idx", *kept), on="idx", how="left")
                   .with_columns([pl.col(f).fill_null(pl.lit([], dtype=FEATURE_DTYPE))
                                  for f in kept]))
    return encoded.sort("idx"), vocab
