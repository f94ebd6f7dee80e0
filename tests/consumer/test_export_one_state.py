"""`export --format delta` reads users and items from one state of the store (issue 25, item
16): a bump and its first refresh that land between the two entity reads gave users of version
0 (dimension 8) beside items of version 1 (dimension 6) in one table.

The race is made real and exact: a second writer (its own `Store`) publishes the bump and
refreshes it at the moment the export has finished reading its first table, triggered by a
profile hook on the return of `read_embedding_rows` (instrumentation of the test's own thread;
nothing of bc_ray is replaced)."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
from deltalake import DeltaTable

from bc_ray import export_delta
from bc_ray.store.delta import s3_options
from bc_ray.io import FileIO
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_fake_version, refresh_fake_tables, store_with_chain


def bump_after_first_table_read(store_uri: str):
    """A profile function that, once the first `read_embedding_rows` returns, publishes version 1
    (dimension 6) and refreshes it through another writer; returns (hook, what it did)."""
    done: dict = {}

    def hook(frame, event, _arg):
        if (event == "return" and not done and frame.f_code.co_name == "read_embedding_rows"
                and frame.f_code.co_filename.endswith("store/tables.py")):
            writer = Store(store_uri, retention=RetentionPolicy(keep_versions=2))
            rng = np.random.default_rng(7)
            done["version"] = publish_fake_version(writer, 6, rng)
            done["matrices"] = refresh_fake_tables(writer, done["version"], 20, rng)

    return hook, done


def exported(out: str) -> pl.DataFrame:
    io = FileIO(out)
    if io.scheme == "s3":
        table = DeltaTable(io.uri, storage_options=s3_options(io.options))
    else:
        table = DeltaTable(io.path())
    return pl.from_arrow(table.to_pyarrow_table()).sort("entity", "id")


def test_a_bump_landing_mid_export_is_not_mixed_in(store_uri):
    _store, before = store_with_chain(store_uri, [8], rows=20, keep_versions=2)
    out = f"{store_uri}-export"
    hook, bump = bump_after_first_table_read(store_uri)
    sys.setprofile(hook)
    try:
        counts = export_delta(store_uri, out)  # the latest: version 0 when the export began
    finally:
        sys.setprofile(None)
    assert bump["version"] == 1  # the second writer did land during the export
    assert counts == {"user": 20, "item": 20}
    frame = exported(out)
    assert frame["version"].unique().to_list() == [0]
    for entity in ("user", "item"):
        rows = frame.filter(pl.col("entity") == entity)
        assert np.array_equal(np.array(rows["embedding"].to_list(), dtype=np.float32),
                              before[entity])
    export_delta(store_uri, out)  # the next export sees the bump, for both entities
    frame = exported(out)
    assert frame["version"].unique().to_list() == [1]
    for entity in ("user", "item"):
        rows = frame.filter(pl.col("entity") == entity)
        assert np.array_equal(np.array(rows["embedding"].to_list(), dtype=np.float32),
                              bump["matrices"][entity])
