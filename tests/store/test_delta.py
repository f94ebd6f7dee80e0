"""The Delta Lake view of the current embedding tables (issue 17; at `<store>/delta` since issue
25): after refreshes, a bump and a rollback, `deltalake` reads exactly the rows `read_embeddings`
returns; every Delta version holds whole tables (never a mix of two refreshes); garbage collection
never touches the Delta log and never deletes a file the mirror still names, even when it lags."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from bc_ray import read_embeddings
from bc_ray.cli.main import app
from bc_ray.store.delta import _location
from bc_ray.io import FileIO
from bc_ray.store.maintenance import apply_retention, collect_garbage
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.versions import rollback_version
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.delta_readers import duckdb_extension

runner = CliRunner()


def _delta(store: Store, version: int | None = None) -> DeltaTable:
    root, options = _location(store)
    return DeltaTable(root, version=version, storage_options=options)


def _assert_mirror_equals_readers(store: Store, uri: str) -> None:
    frame = pl.from_arrow(_delta(store).to_pyarrow_table())
    for entity in ("user", "item"):
        expected = read_embeddings(uri, entity).sort("id")
        got = frame.filter(pl.col("entity") == entity).sort("id")
        assert got["id"].to_list() == expected["id"].to_list()
        np.testing.assert_array_equal(np.stack(got["embedding"].to_numpy()),
                                      np.stack(expected["embedding"].to_numpy()))
        assert set(got["version"].to_list()) == set(expected["source_version"].to_list())


def _source_path(copy: str) -> str:
    """The store file a copy under the Delta root was made from (delta.MirroredFile.path)."""
    folder, name = copy.split("/")
    version, rest = name.split("-", 1)
    run, part = rest.rsplit("-part-", 1)
    return f"embeddings/{version}/{folder.removeprefix('entity=')}/{run}/part-{part}"


def _published_tables(store: Store) -> list[frozenset[str]]:
    """The file set of every table ever published, from the log."""
    tables = []
    seq = 0
    while (entry := store.log.read_entry(seq)) is not None:
        tables += [frozenset(f.path for f in action.files) for action in entry.actions
                   if action.type == "refresh.published"]
        seq += 1
    return tables


def test_the_delta_view_follows_refreshes_bumps_and_rollbacks(store_uri):
    rng = np.random.default_rng(0)
    store = Store(store_uri, retention=RetentionPolicy(keep_versions=2, staging_grace_seconds=0))
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 40, rng)
    _assert_mirror_equals_readers(store, store_uri)
    refresh_fake_tables(store, 0, 45, rng)  # a nightly refresh: more users and items
    publish_fake_version(store, 6, rng)  # a bump: until its refresh lands, version 0's tables
    _assert_mirror_equals_readers(store, store_uri)
    refresh_fake_tables(store, 1, 50, rng)
    _assert_mirror_equals_readers(store, store_uri)
    assert store.state().delta.delta_version == _delta(store).version() == 2
    rollback_version(store)
    _assert_mirror_equals_readers(store, store_uri)

    # every Delta version is whole tables of one refresh per entity, never a mix
    published = _published_tables(store)
    for version in range(_delta(store).version() + 1):
        table = _delta(store, version)
        files = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        files["path"] = [_source_path(p) for p in files["path"]]
        for entity in ("user", "item"):
            paths = frozenset(p for p, e in zip(files["path"], files["partition.entity"])
                              if e == entity)
            assert paths in published, (version, entity)

    # gc and retention never touch the Delta log nor a file the current Delta version names
    apply_retention(store)
    collect_garbage(store, grace_seconds=0, force=True)
    _assert_mirror_equals_readers(store, store_uri)
    assert store.io.list_dir("delta/_delta_log")


def test_export_materialises_an_old_version_as_delta_or_parquet(store_uri, tmp_path):
    rng = np.random.default_rng(3)
    store = Store(store_uri, retention=RetentionPolicy(keep_versions=1, staging_grace_seconds=0))
    for dim in (8, 6):
        version = publish_fake_version(store, dim, rng)
    refresh_fake_tables(store, version, 25, rng)
    base = (store_uri.rsplit("/", 1)[0] if store_uri.startswith("s3://")
            else f"file://{tmp_path}") + "/exports"
    for attempt in (1, 2):  # a second export replaces the first in one Delta commit
        result = runner.invoke(app, ["export", "--store", store_uri, "--format", "delta",
                                     "--version", "0", "--out", f"{base}/v0-delta"])
        assert result.exit_code == 0, result.output
    exported = DeltaTable(f"{base}/v0-delta" if base.startswith("s3://")
                          else f"{base}/v0-delta".removeprefix("file://"),
                          storage_options=_location(store)[1])
    assert exported.version() == 1
    frame = pl.from_arrow(exported.to_pyarrow_table())
    for entity in ("user", "item"):
        expected = read_embeddings(store_uri, entity, version=0).sort("id")
        got = frame.filter(pl.col("entity") == entity).sort("id")
        assert got["id"].to_list() == expected["id"].to_list()
        np.testing.assert_allclose(np.stack(got["embedding"].to_numpy()),
                                   np.stack(expected["embedding"].to_numpy()), rtol=1e-6)
    result = runner.invoke(app, ["export", "--store", store_uri, "--format", "parquet",
                                 "--version", "0", "--entity", "user",
                                 "--out", f"{base}/users-v0.parquet"])
    assert result.exit_code == 0, result.output
    written = read_embeddings(store_uri, "user", version=0)
    target = FileIO(f"{base}/users-v0.parquet")
    with target.fs.open(target.path(), "rb") as handle:
        assert pl.read_parquet(handle.read()).equals(written)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_lagging_mirror_keeps_its_files_and_catches_up(tmp_path):
    uri = f"file://{tmp_path}/store"
    rng = np.random.default_rng(1)
    store = Store(uri, retention=RetentionPolicy(keep_versions=1, staging_grace_seconds=0))
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 30, rng)
    mirrored = list(store.state().delta.paths)
    log_dir = store.io.path("delta/_delta_log")
    shutil.move(log_dir, f"{log_dir}.away")  # the Delta commit of the next refresh fails
    with open(log_dir, "w") as blocker:
        blocker.write("not a folder")
    records = _Records()
    logging.getLogger("bc_ray.store.delta").addHandler(records)
    try:
        refresh_fake_tables(store, 0, 30, rng)  # bc_ray's commit lands; the mirror only warns
    finally:
        logging.getLogger("bc_ray.store.delta").removeHandler(records)
    assert any("bc-ray store mirror" in message for message in records.messages)
    apply_retention(store)
    assert all(os.path.exists(store.io.path(p)) for p in mirrored)  # still named by Delta
    os.remove(log_dir)
    shutil.move(f"{log_dir}.away", log_dir)
    result = runner.invoke(app, ["store", "mirror", "--store", uri])
    assert result.exit_code == 0 and f"version {_delta(store).version()}" in result.output, \
        result.output
    assert _delta(store).version() == 1
    _assert_mirror_equals_readers(store, uri)
    apply_retention(store)
    assert not any(os.path.exists(store.io.path(p)) for p in mirrored)  # now released


def test_duckdb_reads_the_same_rows_with_its_offline_delta_extension(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    extension = duckdb_extension()
    if extension is None:
        pytest.skip("the duckdb-extension-delta wheel is not installed")
    connection = duckdb.connect()
    connection.execute(f"LOAD '{extension}'")
    uri = f"file://{tmp_path}/store"
    rng = np.random.default_rng(2)
    store = Store(uri)
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 30, rng)
    root, _ = _location(store)
    rows = connection.execute("SELECT count(*) FROM delta_scan(?)", [root]).fetchone()
    assert rows[0] == 60


def test_a_mirror_that_read_an_older_state_ends_on_the_newest_tables(tmp_path, monkeypatch):
    """Two mirrors at once: mirror A reads the state, then a refresh lands and its own mirror
    B syncs and records; then A syncs the tables it read. A must not leave the view on them."""
    from bc_ray.store import maintenance
    from tests.store.delta_readers import read_deltalake

    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(12)
    publish_fake_version(store, 4, rng)
    refresh_fake_tables(store, 0, 10, rng)
    real_sync = maintenance.sync
    raced: list[str] = []

    def another_refresh_lands_first(store_, state, tables):
        if not raced:
            raced.append("refresh")
            refresh_fake_tables(store, 0, 12, rng)  # commits, and its mirror B runs to the end
        return real_sync(store_, state, tables)

    monkeypatch.setattr(maintenance, "sync", another_refresh_lands_first)
    maintenance.mirror_embeddings(store)  # mirror A
    state = store.state()
    newest = state.table(0, "user").refresh_id
    assert state.delta.tables == {"user": newest, "item": state.table(0, "item").refresh_id}
    assert read_deltalake(store, None).height == 24  # 12 users and 12 items, not 10 of each
