"""A sharded bump's held-out split, decided by Ray tasks streaming the edge files, is the split
the one-table bump makes from the loaded snapshot (`period_split`): the same evaluation edges in
the same order, the same validation and test users, new users and pools, and every worker's
training rows are its rows of the one-table training graph. On an ingested store whose batches
repeat pairs (before and within the held-out period), arrive late and tie on timestamps, and on
a replayed timeline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from bc_ray.core.row_shards import RowOwners
from bc_ray.core.splits import period_split
from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import TrainingError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.models.graphsage.sharded_task import LocalRows
from bc_ray.partition.edge_files import EdgeFiles, count_degrees
from bc_ray.store.snapshots import load_snapshot, publish_snapshot
from bc_ray.store.store import Store
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.held_out import held_out_split
from bc_ray.train.inputs import holdout_window
from bc_ray.train.sharded import read_local_rows
from tests.data.test_ingest import put

pytestmark = pytest.mark.ray
MAPPING = ColumnMapping(user_col="user", item_col="item", time_col="when", rating_col="score")
DAY, SEED, WORKERS = 86_400, 5, 3


def _days(raw) -> list[pl.DataFrame]:
    """Four daily batches of the synthetic edges, with what real logs hold: users coming back
    to an item days later, within the last days and as the very last interactions; an edge
    that arrives a day late; edges that tie on their timestamp."""
    edges = raw.edges.sort("timestamp").select(
        user="user_id", item="item_id", when="timestamp", score="rating")
    first, last = edges["when"].min(), edges["when"].max()
    edges = edges.with_columns(when=first + (pl.col("when") - first) * (40 * DAY) // (last - first))
    again_later = edges.head(60).with_columns(when=pl.col("when") + 37 * DAY)
    again_soon = edges.tail(40).with_columns(when=pl.col("when") + 1)
    ties = edges.slice(edges.height - 300, 20).with_columns(when=pl.col("when").max())
    # The latest interactions repeat old pairs: the snapshot's last one is hours earlier.
    again_last = edges.head(5).with_columns(
        when=pl.lit(edges["when"].max() + 6 * 3600, dtype=edges["when"].dtype))
    edges = pl.concat([edges, again_later, again_soon, again_last, ties.with_columns(
        item=pl.col("item").reverse())]).sort("when", maintain_order=True)
    cuts = [first + d * DAY for d in (0, 30, 36, 38, 41)]
    days = [edges.filter((pl.col("when") >= lo) & (pl.col("when") < hi))
            for lo, hi in zip(cuts, cuts[1:])]
    late = days[2].head(15).with_columns(when=pl.col("when") - 2 * DAY)
    return [days[0], days[1], days[2].slice(15), pl.concat([days[3], late])]


def _rows(rows: LocalRows) -> set[tuple[int, int]]:
    lengths = np.diff(rows.crow)
    return set(zip(np.repeat(np.arange(lengths.size), lengths).tolist(),
                   rows.neighbours.tolist()))


def _same_split(store: Store, job: TrainJobConfig, max_eval_users: int) -> None:
    snapshot = load_snapshot(store)
    start, end, _ = holdout_window(snapshot, job)
    split = period_split(snapshot, start, end, seed=SEED, max_eval_users=max_eval_users)
    files = EdgeFiles.of(store, store.state(), snapshot.num_users, snapshot.num_items)
    degrees = count_degrees(files, 1.0, None)
    held = held_out_split(files, degrees, job.holdout_days, job.holdout, SEED, max_eval_users)

    eval_user, eval_item = split.eval_pairs
    assert torch.equal(held.eval_user, eval_user) and torch.equal(held.eval_item, eval_item)
    for name in ("val_users", "test_users", "new_users", "user_pool", "item_pool"):
        assert torch.equal(getattr(held, name), getattr(split, name)), name
    assert held.extra_user.size > 0  # new users with earlier edges train on them

    graph = split.graph
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), WORKERS)
    train_files = replace(files, until=held.start)
    for rank in range(WORKERS):
        streamed = read_local_rows(train_files, owners, rank, held.extra)
        expected = LocalRows.from_edges(owners, rank, graph.edge_user.numpy(),
                                        graph.edge_item.numpy())
        assert np.array_equal(streamed.crow, expected.crow), rank
        assert _rows(streamed) == _rows(expected), rank


def test_streamed_split_of_ingested_batches_is_the_loaded_split(ray_cluster, small_raw,
                                                                tmp_path):
    store = Store(f"file://{tmp_path}/store")
    for day, frame in enumerate(_days(small_raw)):
        ingest(store, BatchInput(edges=put(store, f"landing/d{day}.parquet", frame)), MAPPING)
    snapshot = load_snapshot(store)
    repeated = snapshot.edges.height < sum(frame.height for frame in _days(small_raw))
    assert repeated  # the store's batches hold pairs the snapshot keeps once
    for days, max_eval_users in ((4, 0), (7, 25)):
        _same_split(store, TrainJobConfig(store=store.uri, holdout_days=days), max_eval_users)
    files = EdgeFiles.of(store, store.state(), snapshot.num_users, snapshot.num_items)
    with pytest.raises(TrainingError, match="--holdout-days 60 covers every interaction"):
        held_out_split(files, count_degrees(files, 1.0, None), holdout_days=60)


def test_streamed_split_of_a_replayed_timeline_is_the_loaded_split(ray_cluster, small_snapshot,
                                                                   tmp_path):
    store = Store(f"file://{tmp_path}/store")
    publish_snapshot(store, small_snapshot.with_cutoff(0.8))
    _same_split(store, TrainJobConfig(store=store.uri, holdout=0.15), 0)
