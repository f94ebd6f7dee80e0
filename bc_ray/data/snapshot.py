"""A graph snapshot: users, items and timestamped rated edges with node features.

This is the unit every other part of bc_ray consumes. Three tables:

- ``users`` / ``items``: ``idx`` (internal contiguous index, stable across snapshots for entities
  that already existed), ``id`` (the external id, preserved as given), ``first_t`` (time of first
  interaction, as an edge fraction), ``first_ts`` (unix seconds), and one ``List(Int32)`` column per
  feature field holding indices into that field's vocabulary (one-hot fields are lists of length 1).
- ``edges``: ``user_idx``, ``item_idx``, ``rating`` (float32), ``timestamp`` (unix seconds) and
  ``t``, the time rescaled to the fraction of edges seen (0 for the first edge, 1 for the last).

``meta.cutoff`` says how much of the timeline is visible "now": training and refresh at version k
use the edges with ``t <= cutoff``. Advancing time is a new snapshot entry with the same files.

A snapshot grown by ingestion (``meta.clock == "calendar"``) is always whole (cutoff 1): its
tables carry a ``batch`` column (the ingest ordinal that added the edge or last changed the
entity), its time windows are calendar days, and entities announced in a catalogue before their
first interaction are present with a null ``first_t``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl

from bc_ray.data.features import encode_fields
from bc_ray.exceptions import DataError

ENTITIES = ("user", "item")
RAW_EDGE_SCHEMA = {"user_id": None, "item_id": None, "rating": pl.Float32, "timestamp": pl.Int64}


@dataclass(frozen=True)
class SnapshotMeta:
    name: str
    source: str
    rating_low: float
    rating_high: float
    cutoff: float = 1.0
    features: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: {"user": {}, "item": {}})
    cleanup: dict[str, int] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    clock: str = "fraction"  # "fraction": a replayed timeline; "calendar": grown by ingestion

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SnapshotMeta:
        return cls(**data)


@dataclass(frozen=True)
class RawGraph:
    """What a loader produces: raw edges with external ids, and optional feature tables.

    ``edges`` has ``user_id``, ``item_id``, ``rating``, ``timestamp``. Feature tables have an ``id``
    column and one ``List(Utf8)`` column per field.
    """

    edges: pl.DataFrame
    name: str
    source: str
    rating_scale: tuple[float, float]
    user_features: pl.DataFrame | None = None
    item_features: pl.DataFrame | None = None
    min_feature_count: int = 1
    cleanup: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphSnapshot:
    users: pl.DataFrame
    items: pl.DataFrame
    edges: pl.DataFrame
    meta: SnapshotMeta

    @property
    def num_users(self) -> int:
        return self.users.height

    @property
    def num_items(self) -> int:
        return self.items.height

    @property
    def num_edges(self) -> int:
        return self.edges.height

    def entities(self, entity: str) -> pl.DataFrame:
        if entity not in ENTITIES:
            raise DataError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
        return self.users if entity == "user" else self.items

    @property
    def grows(self) -> bool:
        """Grown by ingestion (calendar time), as opposed to a replayed timeline."""
        return self.meta.clock == "calendar"

    def present(self, entity: str) -> np.ndarray:
        """Entities that exist now: first seen by the cutoff, plus, in a whole snapshot, the ones
        announced without any interaction yet (they are embedded from their features)."""
        first = self.entities(entity)["first_t"]
        seen = (first <= self.meta.cutoff).fill_null(False).to_numpy()
        if self.meta.cutoff >= 1.0:
            seen |= first.is_null().to_numpy()
        return seen

    def feature_fields(self, entity: str) -> dict[str, list[str]]:
        return self.meta.features.get(entity, {})

    def with_cutoff(self, cutoff: float) -> GraphSnapshot:
        if not 0.0 < cutoff <= 1.0:
            raise DataError(f"cutoff must be in (0, 1], got {cutoff}")
        return dataclasses.replace(self, meta=dataclasses.replace(self.meta, cutoff=cutoff))

    def validate(self) -> None:
        """Internal consistency; raised as DataError so a corrupt snapshot never trains."""
        for entity in ENTITIES:
            table = self.entities(entity)
            if not table["idx"].equals(pl.Series("idx", np.arange(table.height), pl.Int64)):
                raise DataError(f"{entity} idx is not contiguous 0..{table.height - 1}")
            if table["id"].is_duplicated().any():
                raise DataError(f"duplicate external {entity} ids")
        for column, bound in (("user_idx", self.num_users), ("item_idx", self.num_items)):
            if self.edges.height and (self.edges[column].max() >= bound
                                      or self.edges[column].min() < 0):
                raise DataError("edges reference a missing entity", column=column)


def build_snapshot(raw: RawGraph, previous: GraphSnapshot | None = None) -> GraphSnapshot:
    """Sort, de-duplicate, rescale time and index entities; indices of entities already in
    `previous` are kept, new ones are appended in order of first appearance."""
    edges = _validate_raw_edges(raw.edges)
    before = edges.height
    edges = (
        edges.with_row_index("_row")
        .sort(["timestamp", "_row"])
        .unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
        .drop("_row")
    )
    cleanup = dict(raw.cleanup)
    cleanup["duplicate_edges_dropped"] = before - edges.height
    edges = edges.with_columns(t=pl.Series(np.linspace(0.0, 1.0, edges.height)))

    tables = {}
    features = {}
    for entity, feature_table in (("user", raw.user_features), ("item", raw.item_features)):
        prior = previous.entities(entity) if previous else None
        index = _index_entities(edges, f"{entity}_id", prior)
        prior_vocab = previous.feature_fields(entity) if previous else {}
        index, vocab, dropped = encode_fields(index, feature_table, prior_vocab,
                                              raw.min_feature_count, entity)
        cleanup[f"{entity}_feature_rows_without_edges"] = dropped
        tables[entity], features[entity] = index, vocab

    edges = (
        edges.join(tables["user"].select(user_id="id", user_idx="idx"), on="user_id", how="left")
        .join(tables["item"].select(item_id="id", item_idx="idx"), on="item_id", how="left")
        .select("user_idx", "item_idx", "rating", "timestamp", "t")
    )
    meta = SnapshotMeta(name=raw.name, source=raw.source, rating_low=raw.rating_scale[0],
                        rating_high=raw.rating_scale[1], features=features, cleanup=cleanup)
    snapshot = GraphSnapshot(users=tables["user"], items=tables["item"], edges=edges, meta=meta)
    snapshot.validate()
    return snapshot


def _validate_raw_edges(edges: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in RAW_EDGE_SCHEMA if c not in edges.columns]
    if missing:
        raise DataError(f"raw edges lack column(s) {missing}", column=missing[0])
    if edges.height == 0:
        raise DataError("no edges: the input holds no interactions")
    for column in RAW_EDGE_SCHEMA:
        nulls = edges[column].is_null()
        if nulls.any():
            raise DataError("missing value", column=column, row=int(nulls.arg_true()[0]) + 1)
    return edges.select(
        pl.col("user_id"), pl.col("item_id"),
        pl.col("rating").cast(pl.Float32), pl.col("timestamp").cast(pl.Int64))


def _index_entities(edges: pl.DataFrame, id_column: str,
                    prior: pl.DataFrame | None) -> pl.DataFrame:
    seen = (
        edges.group_by(id_column, maintain_order=True)
        .agg(first_t=pl.col("t").first(), first_ts=pl.col("timestamp").first())
        .rename({id_column: "id"})
    )
    if prior is None:
        return seen.with_row_index("idx").with_columns(pl.col("idx").cast(pl.Int64))
    if prior["id"].dtype != seen["id"].dtype:
        raise DataError(
            f"external ids changed type from {prior['id'].dtype} to {seen['id'].dtype} "
            "since the previous snapshot", column=id_column)
    known = prior.select("idx", "id").join(seen, on="id", how="left")
    fresh = seen.join(prior.select("id"), on="id", how="anti")
    fresh = fresh.with_columns(
        idx=pl.int_range(prior.height, prior.height + fresh.height, dtype=pl.Int64))
    return pl.concat([known, fresh.select(known.columns)]).sort("idx")
