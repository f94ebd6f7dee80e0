"""Writing a landing zone the way upstream jobs do (Spark committers, slow CSV writers), on the
local disk or the local S3 server, beside a store."""

from __future__ import annotations

import io
import os

import polars as pl

from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.landing import LandingConfig
from bc_ray.store.store import Store

MAPPING = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")
ZONE = "landing/events"


def rows(first: int, count: int) -> pl.DataFrame:
    """`count` distinct interactions numbered from `first`."""
    return pl.DataFrame({"uid": [f"u{i % 37}" for i in range(first, first + count)],
                         "sku": [f"i{i}" for i in range(first, first + count)],
                         "ts": [1_700_000_000 + i for i in range(first, first + count)],
                         "stars": [float(i % 5 + 1) for i in range(first, first + count)]})


def encoded(frame: pl.DataFrame, rel: str) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer) if rel.endswith(".parquet") else frame.write_csv(buffer)
    return buffer.getvalue()


def write(store: Store, rel: str, data: bytes) -> None:
    """Bytes at `rel` under the store's root (one atomic object on S3)."""
    path = store.io.path(rel)
    if store.io.scheme == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
    store.io.fs.pipe_file(path, data)


def move(store: Store, source: str, target: str) -> None:
    """A committer's rename (copy and delete on S3)."""
    store.io.fs.mv(store.io.path(source), store.io.path(target))


def zone(store: Store, **options) -> LandingConfig:
    return LandingConfig(edges=store.io.uri_of(ZONE), mapping=MAPPING, **options)


def ingested_edges(store: Store) -> int:
    """Interactions counted by every batch in the store."""
    return sum(b.stats["edges"] for b in store.state().batches.values())
