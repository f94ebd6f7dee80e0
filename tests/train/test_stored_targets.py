"""Alignment targets read from a version's stored tables, whole or by a worker's range of
entities, a file at a time."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bc_ray.exceptions import TrainingError
from bc_ray.train.stored_targets import stored_target_rows
from tests.helpers import publish_fake_version, refresh_fake_tables
from bc_ray.store.store import Store

ROWS, DIM = 300, 8


@pytest.fixture
def stored(tmp_path):
    """Version 0's tables in files of 70 rows (users 0..299, items 10,000..10,299), and a
    snapshot's users in another order, some without a stored row."""
    rng = np.random.default_rng(4)
    store = Store(f"file://{tmp_path}/store")
    version = publish_fake_version(store, DIM, rng)
    matrices = refresh_fake_tables(store, version, ROWS, rng, rows_per_file=70)
    ids = rng.permutation(np.arange(-20, ROWS - 40))  # 20 unknown ids; 40 stored ids unused
    entities = pl.DataFrame({"idx": np.arange(ids.size), "id": ids})
    return store, version, matrices["user"], entities


def test_a_workers_range_equals_that_range_of_the_whole(stored):
    store, version, matrix, entities = stored
    state = store.state()
    parent = state.version(version)
    whole = stored_target_rows(store, state, parent, "user", entities)
    ids = entities["id"].to_numpy()
    known = ids >= 0
    assert (whole.mask == known).all() and known.sum() == ROWS - 40
    np.testing.assert_array_equal(whole.values[known], matrix[ids[known]])
    assert not whole.values[~known].any()
    for first, last in [(0, 100), (100, 101), (101, ids.size), (50, 50)]:
        part = stored_target_rows(store, state, parent, "user", entities, first, last)
        np.testing.assert_array_equal(part.mask, whole.mask)  # whole on every worker
        np.testing.assert_array_equal(part.values, whole.values[first:last])


def test_a_version_without_tables_is_refused(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    version = publish_fake_version(store, DIM, np.random.default_rng(0))
    state = store.state()
    with pytest.raises(TrainingError, match="needs refreshed embeddings of version 0"):
        stored_target_rows(store, state, state.version(version), "user",
                           pl.DataFrame({"idx": [0], "id": [0]}))
