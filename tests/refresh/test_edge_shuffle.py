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
from bc_ray.partition.edge_files import EdgeFile, EdgeFiles, count_degrees_by_file
from bc_ray.partition.task_memory import HEADROOM
from bc_ray.refresh.edge_shuffle import file_groups, fitted, shuffle_bytes, shuffle_ends
from bc_ray.refresh.range_graphs import build_range_graphs
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
    # int32 indices, as Parquet gives them, do not overflow: item + users is past 2**31.
    users, item, nodes = 1_500_000_000, 1_000_000_000, 3_000_000_000
    owner, keys = end_keys(np.array([1], dtype=np.int32), np.array([item], dtype=np.int32),
                           users, np.array([0, 10, nodes]))
    assert owner.tolist() == [0, 1]
    assert keys.tolist() == [1 * nodes + item + users, (item + users - 10) * nodes + 1]


def test_a_shuffle_task_reads_and_flushes_no_more_than_its_memory_allows():
    # A graph smaller than a flush or a batch: no more than it.
    assert fitted(1 << 22, 1 << 20, 6000, None) == (12000, 6000)
    # Little memory: smaller flushes and batches that fit, not a refusal.
    for incremental in (False, True):
        budget = 400_000
        flush_at, read_rows = fitted(1 << 22, 1 << 20, 10**8, budget, incremental)
        assert HEADROOM * shuffle_bytes(flush_at, read_rows, incremental) <= budget
        assert flush_at >= 1 and read_rows >= 256
    with pytest.raises(ConfigError, match="sending a file's edge ends to their ranges"):
        fitted(1 << 22, 1 << 20, 10**8, 10_000)


def test_small_files_are_read_together_so_that_no_flush_is_small():
    # At least 100 ends a group (edges count twice); files without edges are not read; a last
    # group that would be small joins the one before.
    assert file_groups([10, 30, 0, 60, 40, 10], 100) == [(0, 1, 3), (4, 5)]
    assert file_groups([10, 30, 0, 60, 40, 9], 100) == [(0, 1, 3, 4, 5)]
    assert file_groups([500], 100) == [(0,)] and file_groups([1, 1], 100) == [(0, 1)]


def _files(tmp_path, edge_user, edge_item, batch, read_rows: int, since) -> EdgeFiles:
    """Three ingested files: batches 0-2, 3-5 and 5 again; the snapshot holds batches 0..4,
    so the last file has none of its rows."""
    records = []
    for name, kept in (("a", batch < 3), ("b", batch >= 3), ("c", batch == 5)):
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
    degrees, file_edges = count_degrees_by_file(files, 1, None)
    assert file_edges == [150, 100, 0]
    assert np.array_equal(degrees, np.bincount(
        np.concatenate([edge_user[kept], edge_item[kept] + USERS]), minlength=USERS + ITEMS))
    ranges = NodeRanges.balanced(degrees, 4)
    ends = shuffle_ends(files, ranges, file_edges, 1, None, flush_at)
    [flushes] = {len(pieces) for pieces in ends.pieces}  # a flush sends every range a piece
    # The whole graph is less than a default flush: one. Read 7 edges at a time and flushed
    # past 20 ends, each file several times, and never fewer than 20 ends at once.
    assert flushes == 1 if flush_at is None else flushes > 10
    sent = [sum(piece.keys.size for piece in ray.get([pieces[at] for pieces in ends.pieces]))
            for at in range(flushes)]
    assert sum(sent) == 2 * kept.sum() and min(sent) >= (flush_at or 0)
    sizes, graphs, _ = build_range_graphs(ends.pieces, ranges, np.zeros(0, dtype=np.int64), 1,
                                          degrees)
    new = kept & (batch >= 3) if since is not None else np.zeros_like(kept)
    assert ends.new_edges == int(new.sum())
    touched = np.zeros(USERS + ITEMS, dtype=bool)
    touched[edge_user[new]] = touched[edge_item[new] + USERS] = True
    assert touched.any() == (since is not None)
    for part, (found, graph) in enumerate(zip(sizes, ray.get(graphs))):
        start, stop = ranges.range(part)
        crow, neighbours = range_rows(edge_user[kept], edge_item[kept], USERS, USERS + ITEMS,
                                      start, stop)
        assert np.array_equal(graph.crow, crow)
        assert np.array_equal(graph.source_ids[graph.cols], neighbours)
        assert np.array_equal(found["touched"], np.flatnonzero(touched[start:stop]))
