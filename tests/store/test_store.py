"""Publication is atomic, crashes leave the previous state, corruption is detected and named."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

from bc_ray import read_embeddings
from bc_ray.exceptions import CorruptFileError, NotFoundError, StoreError
from bc_ray.store.maintenance import collect_garbage
from bc_ray.store.snapshots import advance_snapshot, load_snapshot, publish_snapshot
from bc_ray.store.store import Store
from tests.helpers import publish_fake_version, store_with_chain


def test_snapshot_round_trip(store_uri, small_snapshot):
    store = Store(store_uri)
    with pytest.raises(NotFoundError, match="no graph snapshot"):
        store.state().snapshot()
    record = publish_snapshot(store, small_snapshot.with_cutoff(0.5))
    loaded = load_snapshot(store)
    assert loaded.edges.equals(small_snapshot.edges) and loaded.users.equals(small_snapshot.users)
    visible = small_snapshot.edges.filter(pl.col("t") <= 0.5).height
    assert loaded.meta.cutoff == 0.5 and record.stats["visible_edges"] == visible
    advanced = advance_snapshot(store, 0.7)
    assert advanced.files == record.files and load_snapshot(store).meta.cutoff == 0.7
    assert advanced.stats["visible_edges"] == small_snapshot.edges.filter(pl.col("t") <= 0.7).height


CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    from datetime import datetime, timezone
    import numpy as np
    from bc_ray.store.store import Store
    from bc_ray.store.tables import table_prefix, write_table
    store = Store(sys.argv[1])
    version = store.state().current_version
    dim = store.state().version(version).dim
    prefix = table_prefix(store, version, "item", "crashed-run")
    write_table(store, prefix, np.arange(50), np.ones((50, dim), np.float32), version,
                datetime.now(timezone.utc), rows_per_file=20)
    os.kill(os.getpid(), signal.SIGKILL)  # dies after writing, before its commit
""")


def test_writer_killed_mid_publication(store_uri, tmp_path):
    store, matrices = store_with_chain(store_uri, [8, 6], rows=40)
    before = store.state()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, store_uri], env=env)
    assert result.returncode == -signal.SIGKILL
    assert store.state().to_dict() == before.to_dict()  # nothing became visible
    frame = read_embeddings(store_uri, "item")
    assert np.allclose(np.stack(frame["embedding"].to_numpy()), matrices["item"])
    assert store.io.list_dir("embeddings/v1/item") == sorted(
        ["crashed-run", before.table(1, "item").refresh_id])
    assert collect_garbage(store, grace_seconds=0, force=True) == ["embeddings/v1/item/crashed-run"]
    assert store.io.list_dir("embeddings/v1/item") == [before.table(1, "item").refresh_id]
    assert read_embeddings(store_uri, "item").height == 40  # a rerun would publish normally


def _table_file(store: Store):
    return store.state().table(store.state().current_version, "item").files[0]


def test_corrupted_parquet_is_named(store_uri):
    store, _ = store_with_chain(store_uri, [8], rows=30_000)
    record = _table_file(store)
    data = bytearray(store.io.read_bytes(record.path))
    data[len(data) // 2] ^= 0xFF  # same size, flipped bits inside a data page
    store.io.fs.pipe_file(store.io.path(record.path), bytes(data))
    with pytest.raises(CorruptFileError, match=record.path):
        read_embeddings(store_uri, "item")


def test_missing_and_truncated_files_are_named(store_uri):
    store, _ = store_with_chain(store_uri, [8], rows=100)
    record = _table_file(store)
    data = store.io.read_bytes(record.path)
    store.io.fs.pipe_file(store.io.path(record.path), data[:-10])
    with pytest.raises(CorruptFileError, match=f"{record.path}.*truncated"):
        read_embeddings(store_uri, "item")
    store.io.delete(record.path)
    with pytest.raises(CorruptFileError, match=f"{record.path}.*missing"):
        read_embeddings(store_uri, "item")


def test_put_if_absent_is_honoured(store_uri):
    Store(store_uri).ensure_conditional_writes()  # raises UnsafeStoreError if ignored


def test_a_failed_commit_never_removes_staged_files_the_log_names(tmp_path):
    """A commit refused after a writer's earlier entry named its staged prefix (e.g. one that
    landed though the writer was told otherwise) leaves those files to gc, which keeps them."""
    store = Store(f"file://{tmp_path}/store")
    publish_fake_version(store, 4, np.random.default_rng(0))
    model = store.state().version(0).files["model"].path
    staged = model.rsplit("/", 1)[0]

    def refused(_state):
        raise StoreError("another writer changed what this commit was built on")

    with pytest.raises(StoreError, match="another writer"):
        store.commit(refused, staged=staged)
    assert store.io.exists(model)
    fresh = f"{store.new_prefix('r')}/part.bin"  # staged and named by nothing: removed
    store.io.write_bytes(fresh, b"x")
    with pytest.raises(StoreError):
        store.commit(refused, staged=fresh.rsplit("/", 1)[0])
    assert not store.io.exists(fresh)


def test_the_slower_of_two_overlapping_refreshes_publishes_nothing(tmp_path):
    """Both planned from the same tables; the first commits; the second, finishing later with
    an older snapshot or an increment against tables no longer current, must not replace it."""
    from bc_ray.store.tables import table_refreshes
    from tests.helpers import refresh_fake_tables

    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(5)
    publish_fake_version(store, 4, rng)
    refresh_fake_tables(store, 0, 10, rng)
    planned = table_refreshes(store.state(), 0)
    refresh_fake_tables(store, 0, 30, rng, over=planned)  # the faster one
    first = table_refreshes(store.state(), 0)
    with pytest.raises(StoreError, match="another refresh of version 0 was published"):
        refresh_fake_tables(store, 0, 20, rng, over=planned)
    assert table_refreshes(store.state(), 0) == first
    assert read_embeddings(store.uri, "user").height == 30
