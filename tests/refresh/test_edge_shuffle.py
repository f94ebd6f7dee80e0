"""Every edge file read once and its ends sent to the ranges of their rows, on a real local Ray
cluster: each range's graph equals its rows of the whole edge list, however the files are read
and flushed, and an incremental refresh's new edges are found as before."""

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from bc_ray.core.node_rows import end_keys, range_rows, row_keys
from bc_ray.exceptions import ConfigError
from bc_ray.refresh.edge_shuffle import fitted, shuffle_bytes, shuffle_ends
from bc_ray.refresh.sizing import HEADROOM
from bc_ray.refresh.range_graphs import EdgeFile, EdgeFiles, build_range_graphs
from bc_ray.refresh.ranges import NodeRanges
from bc_ray.store.state import FileRecord

USERS, ITEMS, BATCHES, PER_BATCH = 40, 15, 6, 50


def _edges(seed: int = 0):
    rng = np.random.default_rng(seed)
    count = BATCHES * PER_BATCH
    # Skewed items (a few hubs), and repeats, which the CSR merges.
    items = np.minimum(rng.zipf(1.6, count) - 1, ITEMS - 1).astype(np.int64)
    return rng.integers(0, USERS, count), items, np.arange(count) // PER_BATCH


def test_ends_keyed_for_every_range_at_once_are_each_ranges_own_keys():
    edge_user, edge_item, _ = _edges()
    nodes = USERS + ITEMS
    bounds = np.array([0, 7, 38, 41, nodes])  # a range across users and items, an empty one
    for cut in (bounds, np.array([0, nodes]), np.array([0, 20, 20, nodes])):
        owner, keys = end_keys(edge_user, edge_item, USERS, cut)
        for part in range(len(cut) - 1):
            expected = row_keys(edge_user, edge_item, USERS, nodes, int(cut[part]),
                                int(cut[part + 1]))
            # `end_keys` keeps the edges' order within a range, as `row_keys` does.
            assert np.array_equal(keys[owner == part], expected)
    # int32 indices, as Parquet gives them, do not overflow their keys.
    big = 3_000_000_000 // 2
    owner, keys = end_keys(np.array([1], dtype=np.int32), np.array([2], dtype=np.int32), big,
                           np.array([0, 10, 2 * big]))
    assert owner.tolist() == [0, 1] and keys.tolist() == [1 * 2 * big + 2 + big,
                                                          (2 + big - 10) * 2 * big + 1]


def test_a_shuffle_task_reads_and_flushes_no_more_than_its_memory_allows():
    # A graph smaller than a flush or a batch: no more than it.
    assert fitted(1 << 22, 1 << 20, 6000, None) == (12000, 6000)
    # Little memory: smaller flushes and batches that fit, not a refusal.
    budget = 200_000
    flush_at, read_rows = fitted(1 << 22, 1 << 20, 10**8, budget)
    assert HEADROOM * shuffle_bytes(flush_at, read_rows) <= budget and flush_at >= 1
    assert read_rows >= 256
    with pytest.raises(ConfigError, match="sending a file's edge ends to their ranges"):
        fitted(1 << 22, 1 << 20, 10**8, 10_000)


def _files(tmp_path, edge_user, edge_item, batch, read_rows: int, since) -> EdgeFiles:
    """Two ingested files of three batches each; the snapshot holds batches 0..4."""
    records = []
    for name, kept in (("a", batch < 3), ("b", batch >= 3)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"user_idx": edge_user[kept].astype(np.int32),
                                 "item_idx": edge_item[kept].astype(np.int32),
                                 "batch": batch[kept]}), path)
        data = path.read_bytes()
        records.append(EdgeFile(FileRecord(path.name, len(data), hashlib.sha256(data).hexdigest()),
                                "batch", 5))
    return EdgeFiles(f"file://{tmp_path}", None, tuple(records), USERS, ITEMS, since,
                     read_rows=read_rows)


@pytest.mark.ray
@pytest.mark.parametrize("read_rows,flush_at,since", [(1 << 20, None, None), (7, 20, 3)])
def test_each_ranges_graph_from_its_shuffled_ends_equals_its_rows_of_the_edge_list(
        ray_cluster, tmp_path, read_rows, flush_at, since):
    edge_user, edge_item, batch = _edges(seed=5)
    files = _files(tmp_path, edge_user, edge_item, batch, read_rows, since)
    kept = batch < 5
    degrees = np.bincount(np.concatenate([edge_user[kept], edge_item[kept] + USERS]),
                          minlength=USERS + ITEMS)
    ranges = NodeRanges.balanced(degrees, 4)
    ends = shuffle_ends(files, ranges, int(kept.sum()), 1, None, flush_at)
    [flushes] = {len(pieces) for pieces in ends.pieces}  # a flush sends every range a piece
    # A file read in one batch flushes once; read 7 edges at a time, every 2 batches.
    assert flushes == 2 if flush_at is None else flushes > 10
    sizes, graphs, _ = build_range_graphs(ends.pieces, ranges, np.zeros(0, dtype=np.int64), 1,
                                          degrees)
    new = kept & (batch >= 3) if since is not None else np.zeros_like(kept)
    assert ends.new_edges == int(new.sum())
    touched = np.zeros(USERS + ITEMS, dtype=bool)
    touched[edge_user[new]] = touched[edge_item[new] + USERS] = True
    for part, (found, graph) in enumerate(zip(sizes, ray.get(graphs))):
        start, stop = ranges.range(part)
        crow, neighbours = range_rows(edge_user[kept], edge_item[kept], USERS, USERS + ITEMS,
                                      start, stop)
        assert np.array_equal(graph.crow, crow)
        assert np.array_equal(graph.source_ids[graph.cols], neighbours)
        assert np.array_equal(found["touched"] + start, np.flatnonzero(touched[start:stop]) + start)
