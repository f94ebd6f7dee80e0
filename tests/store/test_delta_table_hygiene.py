"""Issue 25, item 13: the Delta table carries properties matching the store's retention (and
follows a change of it), a name and description, a checkpoint interval, bc_ray's version and
refresh id in each commit's commitInfo, and min/max statistics of `id` per file; its columns are
the reference names an export must use too (entity, id, embedding, version, refreshed_at)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from typer.testing import CliRunner

import bc_ray
from bc_ray.cli.main import app
from bc_ray.store.delta import _location
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_fake_version, refresh_fake_tables

runner = CliRunner()
COLUMNS = ["entity", "id", "embedding", "version", "refreshed_at"]


def _table(store: Store) -> DeltaTable:
    root, options = _location(store)
    return DeltaTable(root, storage_options=options)


def _commit_info(store: Store, version: int) -> dict:
    """The commitInfo of one Delta commit, from its log file (moto cannot serve the listing
    `DeltaTable.history` makes)."""
    lines = store.io.read_bytes(f"delta/_delta_log/{version:020d}.json").splitlines()
    return next(json.loads(line)["commitInfo"] for line in lines if b'"commitInfo"' in line)


def test_the_delta_table_describes_itself_and_follows_retention(store_uri):
    rng = np.random.default_rng(41)
    store = Store(store_uri)
    store.configure(RetentionPolicy(keep_versions=2, staging_grace_seconds=7200))
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 30, rng)
    metadata = _table(store).metadata()
    assert metadata.name and "bc_ray" in metadata.description
    assert metadata.configuration["delta.deletedFileRetentionDuration"] == "interval 7200 seconds"
    assert metadata.configuration["delta.logRetentionDuration"] == "interval 7200 seconds"
    assert int(metadata.configuration["delta.checkpointInterval"]) <= 10

    store.configure(RetentionPolicy(keep_versions=2, staging_grace_seconds=86400))
    result = runner.invoke(app, ["store", "mirror", "--store", store_uri])
    assert result.exit_code == 0, result.output
    configuration = _table(store).metadata().configuration
    assert configuration["delta.deletedFileRetentionDuration"] == "interval 86400 seconds"


def test_commits_name_bc_ray_versions_and_files_carry_id_statistics(store_uri):
    rng = np.random.default_rng(42)
    store = Store(store_uri)
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 30, rng, rows_per_file=7)
    state = store.state()
    info = _commit_info(store, _table(store).version())
    for entity in ("user", "item"):
        table = state.table(0, entity)
        assert info[f"bc_ray.{entity}.refresh_id"] == table.refresh_id
        assert info[f"bc_ray.{entity}.version"] == "0"
    assert info["bc_ray.package_version"] == bc_ray.__version__

    delta = _table(store)
    assert [f.name for f in pa.schema(delta.schema().to_arrow())] == COLUMNS
    actions = pa.table(delta.get_add_actions(flatten=True)).to_pydict()
    assert len(actions["path"]) == 2 * 5  # 30 rows, 7 per file, per entity
    for path, low, high, rows in zip(actions["path"], actions["min.id"], actions["max.id"],
                                     actions["num_records"]):
        ids = pq.read_table(store.io.path(f"delta/{path}"), columns=["id"],
                            filesystem=store.io.arrow_fs()).column("id").to_pylist()
        assert (low, high, rows) == (min(ids), max(ids), len(ids))
