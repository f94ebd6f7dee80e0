"""Entities' first interactions found by Ray tasks over the edge files equal `load_ingested`'s,
which sorts and deduplicates the whole edge list in one process."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
import ray

from bc_ray import read_embeddings
from bc_ray.data.mapping import ColumnMapping
from bc_ray.data.timeline import t_at_timestamp
from bc_ray.exceptions import ConfigError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.partition.edge_files import EdgeFiles, count_degrees_by_file
from bc_ray.partition.first_seen import _count_before, _count_task, _plan, first_interactions
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.batches import compact
from bc_ray.store.snapshots import load_entities, load_snapshot, publish_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import put
from tests.helpers import publish_model_version

pytestmark = pytest.mark.ray
MAPPING = ColumnMapping(user_col="user", item_col="item", time_col="when", rating_col="score",
                        allow_old_times=True)


def _day(rng: np.random.Generator, size: int, start: int, stop: int,
         repeats: pl.DataFrame | None = None) -> pl.DataFrame:
    """Edges over a few users and items (pairs repeat), timestamps from few values (they tie),
    and repeats of earlier pairs at earlier times than they were first seen."""
    frame = pl.DataFrame({"user": rng.integers(0, 60, size), "item": rng.integers(0, 40, size),
                          "when": rng.integers(start, stop, size) // 7 * 7,
                          "score": np.ones(size, dtype=np.float32)})
    if repeats is not None:
        frame = pl.concat([frame, repeats.with_columns(pl.col("when") - 500)])
    return frame


REPEATS = 50  # pairs of the first day seen again on the second, 500 s earlier


def _ingested_store(tmp_path, compacted: bool) -> Store:
    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(7)
    first = _day(rng, 400, 10_000, 11_000)
    days = [first, _day(rng, 300, 10_500, 12_000, repeats=first.sample(REPEATS, seed=1)),
            _day(rng, 300, 9_000, 13_000)]
    for n, day in enumerate(days):
        items = None
        if n == 2:  # items announced before their first interaction: no first_t
            items = put(store, "landing/items.parquet", pl.DataFrame({"item": [900, 901]}))
        assert ingest(store, BatchInput(edges=put(store, f"landing/d{n}.parquet", day),
                                        items=items), MAPPING).status == "ingested"
    if compacted:
        compact(store, target_rows=700)  # the first two batches in one file
    return store


@pytest.mark.parametrize("ranges,compacted", [(1, False), (3, False), (4, True)])
def test_first_interactions_equal_the_whole_edge_lists(ray_cluster, tmp_path, ranges, compacted):
    store = _ingested_store(tmp_path, compacted)
    expected = load_snapshot(store)
    state = store.state()
    files = EdgeFiles.of(store, state, expected.num_users, expected.num_items)
    assert len(files.files) == (2 if compacted else 3)
    degrees, file_edges = count_degrees_by_file(files, 1.0, None)
    instants = [8_000, 10_493, 10_500.5, 11_998, 20_000]  # before, within (on a tie), after
    found = first_interactions(files, degrees, file_edges, ranges=ranges, at=instants)
    assert found.t_at.tolist() == [t_at_timestamp(expected, int(i)) for i in instants]
    assert 0.0 == found.t_at[0] < found.t_at[1] < found.t_at[3] < found.t_at[4] == 1.0
    entities = found.applied(load_entities(store, state))
    for entity in ("user", "item"):
        want = expected.entities(entity).select("idx", "first_t", "first_ts")
        got = entities.entities(entity).select("idx", "first_t", "first_ts")
        assert got.equals(want), entity  # exact, nulls included
    announced = entities.items.filter(pl.col("first_t").is_null())
    assert announced.height == 2
    # The repeats moved their pairs' first interaction into the second batch: the edge kept
    # is the second batch's, before the first batch's (which the dedup dropped).
    moved = expected.edges.filter((pl.col("batch") == 1) & (pl.col("timestamp") < 10_500))
    assert 0 < moved.height <= REPEATS  # none without the repeats: the day starts at 10,500


def test_first_interactions_refuse_what_they_cannot_read(tmp_path, small_snapshot):
    store = _ingested_store(tmp_path / "ingested", compacted=False)
    snapshot = load_entities(store, store.state())
    files = EdgeFiles.of(store, store.state(), snapshot.num_users, snapshot.num_items)
    degrees = np.ones(files.num_nodes, dtype=np.int64)
    with pytest.raises(ConfigError, match="a file of 400 edges must hold .* give the nodes"):
        first_interactions(files, degrees, [400, 350, 300], budget=10_000)
    heavy = degrees.copy()
    heavy[0] = 1_000  # a user's edges stay in one range, however many ranges there are
    with pytest.raises(ConfigError, match="a user of 1,000 edges .* more CPUs"):
        first_interactions(files, heavy, [1, 1, 1], budget=150_000, remedy="more CPUs")
    # 1,000 users of an edge each, 3 of whom a range's task fits (the count tasks aside)
    with pytest.raises(ConfigError, match="would take 334 user ranges, more than 256"):
        _plan(np.ones(1_000, dtype=np.int64), [3] * 334, 0, 1, 650, "x")
    replayed = Store(f"file://{tmp_path}/replayed")
    publish_snapshot(replayed, small_snapshot)
    files = EdgeFiles.of(replayed, replayed.state(), small_snapshot.num_users,
                         small_snapshot.num_items)
    with pytest.raises(ConfigError, match="replayed timeline's entity tables hold them"):
        first_interactions(files, degrees, [1])


def test_a_partitioned_refresh_of_an_age_aware_model_equals_the_unpartitioned(ray_cluster,
                                                                              tmp_path, caplog):
    """Its driver finds the entities' ages by tasks (it read the whole edge list before), and
    says each step as it ends."""
    store = _ingested_store(tmp_path, compacted=False)
    publish_model_version(store, load_snapshot(store), layers=2, mixing=True)
    run_refresh(RefreshConfig(store=store.uri, mode="full", block_nodes=64))
    expected = {e: read_embeddings(store.uri, e).sort("id") for e in ("user", "item")}
    with caplog.at_level(logging.INFO, logger="bc_ray"):
        outcome = run_refresh(RefreshConfig(store=store.uri, mode="full", partitions=3,
                                            block_nodes=64))
    assert "3 node ranges" in outcome.reason
    said = [r.getMessage().split(":")[0] for r in caplog.records if r.name.startswith("bc_ray")]
    steps = ["first interactions", "ranges", "layer0", "layer1", "layer2+write", "refresh done"]
    assert [m for m in said if m in steps] == steps, said
    snapshot = load_snapshot(store)
    assert f"layer1: {snapshot.num_users + snapshot.num_items} nodes in " in caplog.text
    for entity in ("user", "item"):
        again = read_embeddings(store.uri, entity).sort("id")
        assert again["id"].equals(expected[entity]["id"])
        difference = (np.stack(again["embedding"].to_numpy())
                      - np.stack(expected[entity]["embedding"].to_numpy()))
        assert np.abs(difference).max() <= 1e-5


def test_user_ranges_are_added_until_each_range_fits():
    degrees = np.random.default_rng(3).integers(1, 50, 100_000)
    budget = 2 * 100 * 200_000  # a range of 200,000 edges at most, but users straddle cuts
    files = [int(degrees.sum()) // 100] * 100  # small files: the ranges decide
    bounds, edges = _plan(degrees, files, 0, 1, budget, "x")
    assert bounds[0] == 0 and bounds[-1] == degrees.size and np.all(np.diff(bounds) > 0)
    assert edges.sum() == degrees.sum() and 2 * 100 * edges.max() <= budget
    assert edges.size <= -(-sum(files) // 190_000)  # and not many more than it takes


@pytest.mark.parametrize("timestamps", [5, 1], ids=["few-ties", "one-timestamp"])
def test_counts_before_each_key_equal_a_search_of_whole_keys(ray_cluster, timestamps):
    """The count tasks' search (by timestamp, then by place among ties) against numpy's search
    of (ts, place) records, over queries in several chunks: some equal to keys, some after
    every key of their timestamp (as an instant asks), some past all."""
    rng = np.random.default_rng(timestamps)
    keys = np.unique(np.rec.fromarrays([rng.integers(0, timestamps, 5_000),
                                        rng.permutation(50_000)[:5_000]], names="ts,place"))
    instants = rng.integers(-1, timestamps + 1, 50)
    queries = np.concatenate([
        keys[rng.integers(0, keys.size, 600)],
        np.rec.fromarrays([rng.integers(-1, timestamps + 1, 600), rng.integers(-1, 50_001, 600)],
                          names="ts,place"),
        np.rec.fromarrays([instants, np.full(instants.size, np.iinfo(np.int64).max)],
                          names="ts,place")])
    queries = queries[np.argsort(queries["ts"], kind="stable")]
    expected = np.searchsorted(keys, queries, side="left")
    counted = ray.get(_count_task.remote(np.stack([keys["ts"], keys["place"]]),
                                         np.stack([queries["ts"], queries["place"]]), 256))
    assert np.array_equal(counted, expected) and expected.min() == 0
    assert expected.max() == keys.size  # a query past every key counts them all
    none = np.zeros(0, dtype=np.int64)
    assert not _count_before(none, none, queries["ts"], queries["place"]).any()
