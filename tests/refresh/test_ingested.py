"""The nightly path on a team's own, growing data: ingest -> train -> refresh -> ingest ->
incremental refresh -> bump -> refresh, on a real local Ray cluster, to file:// and to the local
S3 server, with integer and string ids, CSV and Parquet, and items announced before their first
interaction."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bc_ray import read_embeddings
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.train_config import TrainConfig
from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.train.config import GateConfig, TrainJobConfig
from bc_ray.train.job import run_training
from tests.data.test_ingest import put

pytestmark = pytest.mark.ray
MAPPING = ColumnMapping(user_col="user", item_col="item", time_col="when", rating_col="score")
TRAIN = TrainConfig(epochs=4, batch_size=1024, lr=5e-3, eval_every=2, warmup_epochs=1)
BOUNDS = (0.6, 0.75, 0.88, 1.0)  # batch k holds the edges of (BOUNDS[k-1], BOUNDS[k]]


def _landed(raw, string_ids: bool):
    """The synthetic marketplace as a team's files would hold it."""
    edges = raw.edges.sort("timestamp", maintain_order=True).with_row_index("row")
    cuts = [int(b * edges.height) for b in BOUNDS]
    users, items = raw.user_features, raw.item_features
    if string_ids:
        edges = edges.with_columns(pl.format("u{}", "user_id").alias("user_id"),
                                   pl.format("i{}", "item_id").alias("item_id"))
        users = users.with_columns(pl.format("u{}", "id").alias("id"))
        items = items.with_columns(pl.format("i{}", "id").alias("id"))
    edges = edges.select(user="user_id", item="item_id", when="timestamp", score="rating",
                         row="row")
    return edges, cuts, users.rename({"id": "user"}), items.rename({"id": "item"})


def _job(uri: str, method: str = "bc-aligner") -> TrainJobConfig:
    return TrainJobConfig(store=uri, method=method, num_workers=0, spec=VersionSpec(hidden_dim=16),
                          train=TRAIN, holdout_days=15,
                          gate=GateConfig(max_align_error_rel=5.0, min_recall_vs_parent=0.0))


def _refresh(uri: str, mode: str):
    return run_refresh(RefreshConfig(store=uri, mode=mode, num_tasks=1, block_nodes=256))


def _matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame.sort("id")["embedding"].to_numpy())


def _same_rows(uri: str, expected: dict[str, pl.DataFrame]) -> None:
    """The tables now hold `expected`'s ids and rows (to float rounding)."""
    for entity in ("user", "item"):
        again = read_embeddings(uri, entity)
        assert expected[entity].sort("id")["id"].equals(again.sort("id")["id"])
        assert np.abs(_matrix(expected[entity]) - _matrix(again)).max() <= 1e-5


@pytest.mark.parametrize("backend,string_ids", [("file", False), ("s3", True)])
def test_nightly_path_on_ingested_batches(ray_cluster, small_raw, tmp_path, request, backend,
                                          string_ids):
    uri = f"file://{tmp_path}/store" if backend == "file" else request.getfixturevalue("s3_uri")
    store = Store(uri, retention=RetentionPolicy(keep_versions=2, staging_grace_seconds=0))
    edges, cuts, users, items = _landed(small_raw, string_ids)
    batch = [edges.filter((pl.col("row") >= lo) & (pl.col("row") < hi)).drop("row")
             for lo, hi in zip([0] + cuts[:-1], cuts)]

    # Day 0: interactions as Parquet with the user and item tables of everyone seen so far.
    seen_items = batch[0]["item"].unique()
    first = ingest(store, BatchInput(
        edges=put(store, "landing/d0/part.parquet", batch[0]),
        users=put(store, "landing/users0.parquet",
                  users.filter(pl.col("user").is_in(batch[0]["user"].unique().implode()))),
        items=put(store, "landing/items0.parquet",
                  items.filter(pl.col("item").is_in(seen_items.implode())))), MAPPING)
    assert first.status == "ingested"
    assert run_training(_job(uri)).status == "published"
    assert _refresh(uri, "full").mode == "full"

    # Day 1: interactions as CSV; the catalogue announces items that sell only on day 2.
    announced = batch[2]["item"].unique().filter(
        ~batch[2]["item"].unique().is_in(pl.concat([batch[0]["item"], batch[1]["item"]])
                                         .implode()))[:5]
    assert announced.len() > 0
    day1_items = items.filter(pl.col("item").is_in(pl.concat([batch[1]["item"], announced])
                                                   .unique().implode()))
    second = ingest(store, BatchInput(edges=put(store, "landing/d1/part.csv", batch[1]),
                                      items=put(store, "landing/items1.parquet", day1_items)),
                    MAPPING)
    assert second.stats["new_users"] > 0 and second.stats["new_items"] >= announced.len()
    nightly = _refresh(uri, "auto")
    assert nightly.mode == "incremental" and nightly.stats["reason"].startswith("1 new batch")
    served_items = read_embeddings(uri, "item")
    assert set(announced.to_list()) <= set(served_items["id"].to_list())  # no edge, embedded
    snapshot = load_snapshot(store)
    assert served_items.height == snapshot.num_items  # every entity, announced ones included

    # Partitioned: range graphs from the two batches' edge files, the same rows as the
    # incremental refresh (a full one: the caches it finds are not by range).
    before = {e: read_embeddings(uri, e) for e in ("user", "item")}
    partitioned = run_refresh(RefreshConfig(store=uri, partitions=3, num_tasks=1,
                                            block_nodes=256))
    assert partitioned.stats["partitions"]["count"] == 3 and partitioned.mode == "full"
    _same_rows(uri, before)

    # Day 2: incremental over 2 ranges from the caches of 3, equal to a full refresh.
    ingest(store, BatchInput(edges=put(store, "landing/d2/part.parquet", batch[2])), MAPPING)
    grown = run_refresh(RefreshConfig(store=uri, partitions=2, num_tasks=1, block_nodes=256))
    assert grown.mode == "incremental" and grown.stats["reason"].startswith("1 new batch")
    after = {e: read_embeddings(uri, e) for e in ("user", "item")}
    assert _refresh(uri, "full").mode == "full"
    _same_rows(uri, after)

    # Day 3, then a version bump trained on everything ingested so far, and its refresh.
    third = ingest(store, BatchInput(edges=put(store, "landing/d3/part.csv", batch[3])), MAPPING)
    bump = run_training(_job(uri))
    assert bump.status == "published" and bump.version == 1
    state = store.state()
    assert state.version(1).snapshot_id == "ingested-000004"
    _refresh(uri, "auto")
    newest = load_snapshot(store).users.filter(pl.col("batch") == third.ordinal)
    assert newest.height > 0
    ver1 = read_embeddings(uri, "user", version=1)
    ver0 = read_embeddings(uri, "user", version=0)
    assert ver0.height == ver1.height == load_snapshot(store).num_users
    weight, bias = store.transform_to(0, 1)
    new_ids = newest["id"].to_list()
    rows1 = ver1.filter(pl.col("id").is_in(new_ids)).sort("id")
    rows0 = ver0.filter(pl.col("id").is_in(new_ids)).sort("id")
    assert rows0["id"].to_list() == sorted(new_ids)
    expected = np.stack(rows1["embedding"].to_numpy()) @ weight.T + bias
    assert np.allclose(np.stack(rows0["embedding"].to_numpy()), expected, atol=1e-4)
