"""The demo's upstream job: one period of a data set lands as files a team would produce.

Interactions with external ids and Unix-second times, plus user and item tables (features as
strings and lists of strings) for the entities first seen in the period, written under
``landing/<name>/`` in the store, ready for `bc-ray data ingest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from bc_ray.data.mapping import ColumnMapping
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.ingest.read import BatchInput
from bc_ray.store.parquet import to_parquet_bytes
from bc_ray.store.store import Store

MAPPING = ColumnMapping(user_col="user_id", item_col="item_id", time_col="timestamp",
                        rating_col="rating")


@dataclass(frozen=True)
class LandedFiles:
    request: BatchInput
    mapping: ColumnMapping


def decode_features(table: pl.DataFrame, vocab: dict[str, list[str]], key: str) -> pl.DataFrame:
    """Feature codes back to their text values: one list of strings per field."""
    out = table.select(pl.col("id").alias(key))
    for name, values in vocab.items():
        lookup = pl.Series(values, dtype=pl.String)
        out = out.with_columns(table[name].list.eval(
            pl.element().replace_strict(pl.Series(range(len(values)), dtype=pl.Int32), lookup)
        ).alias(name) if values else pl.lit([], dtype=pl.List(pl.String)).alias(name))
    return out


def land_period(store: Store, snapshot: GraphSnapshot, start: float, end: float,
                name: str) -> LandedFiles:
    """Edges with start < t <= end and the entities first seen then, as Parquet files."""
    edges = snapshot.edges.filter((pl.col("t") > start) & (pl.col("t") <= end))
    edges = (edges.join(snapshot.users.select(user_idx="idx", user_id="id"), on="user_idx",
                        maintain_order="left")
             .join(snapshot.items.select(item_idx="idx", item_id="id"), on="item_idx",
                   maintain_order="left")
             .select("user_id", "item_id", "rating", "timestamp"))
    paths = {"edges": f"landing/{name}/interactions.parquet"}
    store.put(paths["edges"], _parquet(edges))
    for entity, role in (("user", "users"), ("item", "items")):
        table = snapshot.entities(entity)
        fresh = table.filter((pl.col("first_t") > start) & (pl.col("first_t") <= end))
        fields = snapshot.feature_fields(entity)
        if fresh.height and fields:
            paths[role] = f"landing/{name}/{role}.parquet"
            store.put(paths[role], _parquet(decode_features(fresh, fields, f"{entity}_id")))
    uris = {role: store.io.uri_of(path) for role, path in paths.items()}
    return LandedFiles(BatchInput(**uris), MAPPING)


def _parquet(frame: pl.DataFrame) -> bytes:
    return to_parquet_bytes(frame.to_arrow())
