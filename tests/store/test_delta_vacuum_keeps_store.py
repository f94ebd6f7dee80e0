"""Issue 25, item 12: the Delta table's root holds nothing but the Delta table, so a routine
VACUUM (deltalake's, in both modes, at 0 hours with the retention check off) deletes no file
bc_ray needs: every file the log references stays, and every read (each kept version's
embeddings, the snapshot, the models, a rollback) still works. Before, the root was the store
root and a full vacuum deleted snapshots/, versions/, the layer caches and the tables kept for
rollback. A store whose Delta table was at the store root moves on its next mirror."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, Schema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, create_table_with_add_actions

from bc_ray import read_embeddings
from bc_ray.store.delta import _location, s3_options
from bc_ray.store.parquet import embedding_parquet_bytes, embedding_table, to_parquet_bytes
from bc_ray.store.snapshots import load_snapshot, publish_snapshot
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix
from bc_ray.store.versions import load_model_bytes, rollback_version
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.delta_readers import READERS, assert_same_rows, expected_rows, missing_readers


def _refresh_with_caches(store: Store, version: int, rows: int, rng) -> None:
    """A refresh that also keeps layer caches beside its tables, as the real refresh does."""
    dim = store.state().version(version).dim
    now = datetime.now(timezone.utc)
    refresh_id = store.new_prefix("r").split("/")[1]
    tables = []
    for entity in ("user", "item"):
        prefix = table_prefix(store, version, entity, refresh_id)
        table = embedding_table(np.arange(rows, dtype=np.int64), rng.normal(
            size=(rows, dim)).astype(np.float32), version, now)
        files = [store.put(f"{prefix}/part-00000.parquet", embedding_parquet_bytes(table))]
        cache = {"layer1": store.put(f"{prefix}/cache/layer1.npy", rng.bytes(256))}
        tables.append(TableFiles(entity, files, rows, dim, cache=cache))
    publish_refresh(store, version, refresh_id, tables, "s", 1.0, "full", now)


def _assert_bc_ray_intact(store: Store, uri: str, snapshot_id: str) -> None:
    state = store.state()
    missing = sorted(p for p in state.live_paths() if not store.io.exists(p))
    assert not missing, f"vacuum deleted files bc_ray needs: {missing}"
    for version in state.lineage():
        for entity in ("user", "item"):
            if state.table(version, entity) is not None:
                assert read_embeddings(uri, entity, version=version).height > 0
        load_model_bytes(store, version)
    for record in state.tables.values():
        for file in record.cache.values():
            store.get(file)
    assert load_snapshot(store, snapshot_id).num_edges > 0


def _vacuum(store: Store, full: bool) -> list[str]:
    root, options = _location(store)
    return DeltaTable(root, storage_options=options).vacuum(
        retention_hours=0, dry_run=False, enforce_retention_duration=False, full=full)


def test_no_vacuum_deletes_a_file_bc_ray_needs(store_uri, small_snapshot):
    rng = np.random.default_rng(21)
    store = Store(store_uri, retention=RetentionPolicy(keep_versions=2))
    snapshot_id = publish_snapshot(store, small_snapshot).id
    publish_fake_version(store, 8, rng)
    _refresh_with_caches(store, 0, 30, rng)
    _refresh_with_caches(store, 0, 35, rng)  # the first table: unreferenced, in its grace time
    publish_fake_version(store, 6, rng)
    _refresh_with_caches(store, 1, 40, rng)  # ver-0's table is kept for a rollback
    current = expected_rows(store_uri)
    for full in (False, True):  # deltalake's 'lite' and 'full' vacuum
        _vacuum(store, full)
        _assert_bc_ray_intact(store, store_uri, snapshot_id)
        assert_same_rows(READERS["deltalake"](store, None), current, f"after vacuum full={full}")
    rollback_version(store)  # the ver-0 tables were kept: the rollback works
    assert_same_rows(READERS["deltalake"](store, None), expected_rows(store_uri), "rollback")
    _vacuum(store, True)
    _assert_bc_ray_intact(store, store_uri, snapshot_id)
    with pytest.raises(TableNotFoundError):  # the store root is not a Delta table to vacuum
        DeltaTable(store.io.uri if store.io.scheme == "s3" else store.io.path(),
                   storage_options=_location(store)[1])


def _legacy_table(store: Store, version: int, rows: int, rng) -> tuple:
    """What bc_ray wrote before issue 25: tables whose files embed pyarrow's schema, and a Delta
    table whose root is the store root, naming them by store-relative paths."""
    dim = store.state().version(version).dim
    now = datetime.now(timezone.utc)
    refresh_id = store.new_prefix("r").split("/")[1]
    tables, actions = [], []
    for entity in ("user", "item"):
        prefix = table_prefix(store, version, entity, refresh_id)
        data = to_parquet_bytes(embedding_table(np.arange(rows, dtype=np.int64), rng.normal(
            size=(rows, dim)).astype(np.float32), version, now))
        record = store.put(f"{prefix}/part-00000.parquet", data)
        tables.append(TableFiles(entity, [record], rows, dim))
        actions.append(AddAction(record.path, record.size, {"entity": entity},
                                 int(time.time() * 1000), True,
                                 json.dumps({"numRecords": rows})))
    schema = pa.schema([("entity", pa.string()), ("id", pa.int64()),
                        ("embedding", pa.list_(pa.float32())), ("version", pa.int32()),
                        ("refreshed_at", pa.timestamp("us", tz="UTC"))])
    root = store.io.uri if store.io.scheme == "s3" else store.io.path()
    create_table_with_add_actions(root, Schema.from_arrow(schema), actions, mode="error",
                                  partition_by=["entity"],
                                  storage_options=s3_options(store.io.options)
                                  if store.io.scheme == "s3" else None)
    return tables, refresh_id, now


def test_a_store_with_its_delta_table_at_the_root_moves_it(store_uri):
    rng = np.random.default_rng(22)
    store = Store(store_uri)
    publish_fake_version(store, 8, rng)
    tables, refresh_id, now = _legacy_table(store, 0, 20, rng)
    assert store.io.list_dir("_delta_log")
    # the old tables stay readable by bc_ray (fixed-size lists from the embedded schema)
    publish_refresh(store, 0, refresh_id, tables, "s", 1.0, "full", now)
    assert read_embeddings(store_uri, "user")["embedding"].dtype.shape == (8,)
    assert not store.io.list_dir("_delta_log"), "the old log at the store root was left behind"
    for name, read in READERS.items():  # the copies are re-encoded: every engine reads them
        if name in missing_readers() or (store.io.scheme == "s3" and name.startswith("duckdb")):
            continue
        assert_same_rows(read(store, None), expected_rows(store_uri), name)
    refresh_fake_tables(store, 0, 25, rng)
    assert_same_rows(READERS["polars.read_delta"](store, None), expected_rows(store_uri),
                     "after the next refresh")
