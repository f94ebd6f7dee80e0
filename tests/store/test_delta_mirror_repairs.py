"""Issue 25, item 14 (the mirror's part): `bc-ray store mirror` compares the actual Delta table
(its version and files) with the current tables and repairs it, whatever happened to it: its log
removed (before, it trusted bc_ray's log and reported "version 5"), the table overwritten by
another writer, a data file deleted, or a staging file left by a commit that was killed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.store.delta import _location
from bc_ray.store.store import Store
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.delta_readers import READERS, assert_same_rows, expected_rows

runner = CliRunner()


def _root_rel(store: Store) -> str:
    """The Delta table's root relative to the store root."""
    root, _ = _location(store)
    base = store.io.uri if store.io.scheme == "s3" else store.io.path()
    return root.removeprefix(base).strip("/")


def _rel(store: Store, name: str) -> str:
    return "/".join(p for p in (_root_rel(store), name) if p)


def _store(uri: str, refreshes: int) -> Store:
    rng = np.random.default_rng(31)
    store = Store(uri)
    publish_fake_version(store, 8, rng)
    for rows in range(20, 20 + refreshes):
        refresh_fake_tables(store, 0, rows, rng)
    return store


def _mirror(uri: str, store: Store) -> None:
    result = runner.invoke(app, ["store", "mirror", "--store", uri])
    assert result.exit_code == 0, result.output
    root, options = _location(store)
    actual = DeltaTable(root, storage_options=options).version()
    assert f"version {actual}" in result.output, result.output
    assert store.state().delta.delta_version == actual
    assert_same_rows(READERS["deltalake"](store, None), expected_rows(uri), "after the mirror")
    assert_same_rows(READERS["polars.read_delta"](store, None), expected_rows(uri), "polars")


def test_a_removed_delta_log_is_recreated(store_uri):
    store = _store(store_uri, 4)
    store.io.delete(_rel(store, "_delta_log"), recursive=True)
    _mirror(store_uri, store)
    root, options = _location(store)
    assert DeltaTable(root, storage_options=options).version() == 0


def test_a_table_overwritten_by_another_writer_is_replaced(store_uri):
    store = _store(store_uri, 2)
    root, options = _location(store)
    other = pa.table({"id": [1, 2], "embedding": [[0.0], [1.0]], "source_version": [0, 0],
                      "entity": ["user", "user"]})
    write_deltalake(root, other, mode="overwrite", schema_mode="overwrite",
                    partition_by=["entity"], storage_options=options)
    _mirror(store_uri, store)
    store.io.delete(_rel(store, "_delta_log"), recursive=True)  # and a table with no id
    write_deltalake(root, pa.table({"key": ["a"]}), storage_options=options)  # nor partitions
    _mirror(store_uri, store)
    names = DeltaTable(root, storage_options=options).schema().to_arrow()
    assert [f.name for f in pa.schema(names)] == ["entity", "id", "embedding", "version",
                                                  "refreshed_at"]


def test_a_deleted_data_file_is_copied_again(store_uri):
    store = _store(store_uri, 1)
    root, options = _location(store)
    named = DeltaTable(root, storage_options=options).file_uris()
    victim = named[0].removeprefix(root.rstrip("/") + "/")
    store.io.delete(_rel(store, victim))
    _mirror(store_uri, store)
    assert store.io.exists(_rel(store, victim))


def test_a_staging_file_of_a_killed_first_commit_does_not_block_the_mirror(tmp_path):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    # object_store stages a local commit as `<n>.json#1` before linking it into place: a
    # process killed in between leaves it, and the table has no commit at all
    store.io.write_bytes(_rel(store, "_delta_log/00000000000000000000.json#1"), b'{"add":')
    rng = np.random.default_rng(32)
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 15, rng)
    _mirror(uri, store)
    refresh_fake_tables(store, 0, 16, rng)
    _mirror(uri, store)


def test_a_mirror_in_step_commits_nothing(tmp_path):
    uri, refreshes = f"file://{tmp_path}/store", 3
    store = _store(uri, refreshes)
    root, options = _location(store)
    before = DeltaTable(root, storage_options=options).version()
    _mirror(uri, store)
    assert DeltaTable(root, storage_options=options).version() == before == refreshes - 1


def test_a_damaged_delta_log_is_named_and_the_folder_can_be_recreated(tmp_path):
    uri = f"file://{tmp_path}/store"
    store = _store(uri, 2)
    store.io.replace(_rel(store, "_delta_log/00000000000000000001.json"), b"{not json")
    done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "store", "mirror",
                           "--store", uri], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "delete that folder" in error[0], done.stderr
    assert store.io.path(_root_rel(store)) in error[0]
    store.io.delete(_root_rel(store), recursive=True)
    _mirror(uri, store)
    assert all(store.io.exists(p) for p in store.state().live_paths())
