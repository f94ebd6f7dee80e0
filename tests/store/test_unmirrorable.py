"""A store whose user and item ids have different types (text users, integer items) cannot have
its one Delta table: each refresh says so once, with the ways that do read the tables, and
never suggests `bc-ray store mirror`, which cannot help; that command says the same and fails;
bc_ray's own readers read both tables."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from typer.testing import CliRunner

from bc_ray import read_embeddings
from bc_ray.cli.main import app
from bc_ray.store.store import Store
from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix, write_table
from tests.helpers import publish_fake_version

ROWS, DIM = 12, 4


def test_ids_of_two_types_have_no_delta_view_and_say_how_to_read(tmp_path, caplog):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    rng = np.random.default_rng(7)
    version = publish_fake_version(store, DIM, rng)
    now = datetime.now(timezone.utc)
    refresh_id = store.new_prefix("r").split("/")[1]
    ids = {"user": pa.array([f"u{i}" for i in range(ROWS)]),
           "item": pa.array(np.arange(ROWS, dtype=np.int64))}
    tables = [TableFiles(e, write_table(store, table_prefix(store, version, e, refresh_id),
                                        ids[e], rng.normal(size=(ROWS, DIM)).astype(np.float32),
                                        version, now), ROWS, DIM) for e in ("user", "item")]
    with caplog.at_level(logging.WARNING, logger="bc_ray.store.delta"):
        publish_refresh(store, version, refresh_id, tables, "s", 1.0, "full", now)
    said = [r.getMessage() for r in caplog.records if r.name == "bc_ray.store.delta"]
    assert len(said) == 1 and "the store has no Delta view" in said[0], said
    assert "bc-ray export --entity" in said[0] and "store mirror" not in said[0]
    # nothing is copied for a view that cannot exist; copies an earlier sync left go
    assert store.io.list_files("delta") == {}
    store.io.write_bytes("delta/entity=user/v0-left-behind.parquet", b"PAR1")

    result = CliRunner().invoke(app, ["store", "mirror", "--store", uri])
    assert result.exit_code != 0
    assert "different types" in str(result.exception) + result.output
    assert "bc-ray export --entity" in str(result.exception) + result.output
    assert store.io.list_files("delta") == {}
    assert read_embeddings(uri, "user")["id"].to_list() == [f"u{i}" for i in range(ROWS)]
    assert read_embeddings(uri, "item").height == ROWS
