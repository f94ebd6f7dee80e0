"""A sharded run's workers read each edge file once between them and send every end to the
worker whose row it is (`edge_exchange`): each worker's rows are the rows it built when it read
every file itself, over three gloo ranks with uneven files and ranges, a worker with no file to
read, and rounds small enough that the workers run out of ends at different rounds; a worker
that cannot read its file stops the others with it."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
import torch.distributed as dist

from bc_ray.core.node_rows import drained
from bc_ray.core.row_shards import RowOwners
from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.models.graphsage.sharded_task import LocalRows
from bc_ray.partition.edge_files import EdgeFiles
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from bc_ray.train.edge_exchange import exchanged_keys, keyed_ends, worker_bounds, worker_files
from bc_ray.train.sharded import read_local_rows
from tests.data.test_ingest import put
from tests.helpers import gloo_ranks

MAPPING = ColumnMapping(user_col="user", item_col="item", time_col="when", rating_col="score")
WORLD = 3
EXTRA = (np.array([0, 39, 5]), np.array([24, 0, 11]))  # a held-out split's new users' edges


@pytest.fixture
def two_files(tmp_path) -> tuple[EdgeFiles, RowOwners]:
    """An ingested store of two daily files (one larger), and owners cutting 40 users and 25
    items unevenly (worker 1 owns no item)."""
    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(4)
    for day, edges in enumerate((500, 200)):
        frame = pl.DataFrame({"user": rng.integers(0, 40, edges),
                              "item": rng.integers(0, 25, edges),
                              "when": 1_767_225_600 + 86_400 * day + np.arange(edges),
                              "score": np.ones(edges)})
        ingest(store, BatchInput(edges=put(store, f"landing/d{day}.parquet", frame)), MAPPING)
    snapshot = load_snapshot(store)
    files = EdgeFiles.of(store, store.state(), snapshot.num_users, snapshot.num_items)
    users, items = snapshot.num_users, snapshot.num_items
    owners = RowOwners(users, np.array([0, 3, 30, users]), np.array([0, 10, 10, items]))
    return files, owners


def test_every_file_is_read_by_one_worker_the_larger_first():
    sizes = [5, 50, 7, 30, 30]

    class Record:
        def __init__(self, size):
            self.size = size

    class File:
        def __init__(self, size):
            self.record = Record(size)

    shares = worker_files(EdgeFiles("s", None, tuple(File(s) for s in sizes), 1, 1), 2)
    assert shares == [[0, 1, 2], [3, 4]]  # 50 + 7 + 5 against 30 + 30


def test_each_end_is_keyed_for_its_worker_as_the_worker_keys_its_own(two_files):
    files, owners = two_files
    users, items, _ = next(files.edges(0))
    worker, keys = keyed_ends(owners, worker_bounds(owners), users, items)
    for rank in range(WORLD):
        expected = LocalRows.keys_of(owners, rank, users, items)
        assert np.array_equal(np.sort(keys[worker == rank]), np.sort(expected)), rank


def _rank(rank: int, port: int, files: EdgeFiles, owners: RowOwners, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        # Batches of 16 edges, rounds of 37 ends: the workers run out at different rounds.
        small = replace(files, read_rows=16)
        results[f"keys{rank}"] = np.sort(drained(exchanged_keys(small, owners, rank,
                                                                round_ends=37)))
        rows = read_local_rows(files, owners, rank, EXTRA)
        results[f"rows{rank}"] = (rows.crow, rows.neighbours)
    finally:
        dist.destroy_process_group()


def test_three_workers_reading_a_file_each_build_the_rows_each_read_alone(two_files):
    files, owners = two_files
    assert [len(share) for share in worker_files(files, WORLD)] == [1, 1, 0]
    results = gloo_ranks(_rank, WORLD, files, owners)
    for rank in range(WORLD):
        alone = [LocalRows.keys_of(owners, rank, u, i)
                 for index in range(len(files.files)) for u, i, _ in files.edges(index)]
        assert np.array_equal(results[f"keys{rank}"], np.sort(np.concatenate(alone))), rank
        expected = read_local_rows(files, owners, rank, EXTRA)  # no group: every file read
        crow, neighbours = results[f"rows{rank}"]
        assert np.array_equal(crow, expected.crow), rank
        assert np.array_equal(neighbours, expected.neighbours), rank
    assert results["rows0"][1].size and results["rows2"][1].size


def _failing_rank(rank: int, port: int, files: EdgeFiles, owners: RowOwners, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        exchanged_keys(replace(files, read_rows=16), owners, rank, round_ends=37)
    except Exception as exc:  # noqa: BLE001 - what each worker raised is the result
        results[rank] = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()


def test_a_worker_that_cannot_read_its_file_stops_every_worker(two_files):
    """Worker 1's file is gone: it raises its own error, the others a `TrainingError` naming
    it, in the same round, instead of waiting in the exchange for rows that never come."""
    files, owners = two_files
    os.remove(Store(files.store_uri).io.path(files.files[1].record.path))
    results = gloo_ranks(_failing_rank, WORLD, files, owners)
    assert results[1].startswith("CorruptFileError: cannot read the edges in")
    for rank in (0, 2):
        assert results[rank].startswith("TrainingError: worker(s) [1] could not read"), rank
