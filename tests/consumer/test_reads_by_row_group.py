"""Tables read a row group at a time into one matrix (readers of every row, Serve's state):
the same rows as the files hold, across files and groups; rows past the log's count stop the
read before anything is written past what the reader allocated; damage names its file."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bc_ray import chain as chain_math
from bc_ray import read_embeddings
from bc_ray.exceptions import CorruptFileError
from bc_ray.serve.state import ServingState
from bc_ray.store import parquet
from bc_ray.store.store import Store
from bc_ray.store.tables import read_embedding_rows, write_table
from tests.helpers import publish_fake_version, refresh_fake_tables


@pytest.fixture
def many_files(tmp_path, monkeypatch):
    """Versions 0 (dim 6) and 1 (dim 5), version 1's tables 103 rows in files of 40 rows,
    each file in row groups of 16."""
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 16)
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    rng = np.random.default_rng(3)
    for dim in (6, 5):
        version = publish_fake_version(store, dim, rng)
    matrices = refresh_fake_tables(store, version, 103, rng, rows_per_file=40)
    return uri, store, matrices


def test_a_table_of_many_files_and_groups_reads_whole_and_in_order(many_files):
    uri, store, matrices = many_files
    state = store.state()
    record = state.table(1, "user")
    assert len(record.files) == 3
    assert pq.read_metadata(store.io.path(record.files[0].path)).num_row_groups == 3
    ids, matrix = read_embedding_rows(store, record)
    assert ids.to_pylist() == list(range(103))
    assert np.array_equal(matrix, matrices["user"])

    transform = store.transform_to(0, 1, state)
    frame = read_embeddings(uri, "user", version=0)
    expected = chain_math.apply(matrices["user"], transform)
    assert np.allclose(np.stack(frame["embedding"].to_numpy()), expected, atol=1e-5)
    assert frame["id"].to_list() == list(range(103))
    assert frame.schema["embedding"] == pl.Array(pl.Float32, 6)

    served = ServingState.load(Store(uri))
    rows, found, target = served.lookup("item", [10_102, 10_000, 10_040, 5], None)
    assert target == 1 and found.tolist() == [True, True, True, False]
    assert np.array_equal(rows[:3], matrices["item"][[102, 0, 40]])


def test_rows_past_the_logs_count_stop_the_read_before_they_are_copied(many_files):
    """A log entry that counts fewer rows than its files hold: the reader stops at the file
    that goes past the count, naming it, not with an overflow of the matrix it allocated."""
    _, store, _ = many_files
    record = store.state().table(1, "item")
    short = dataclasses.replace(record, rows=50)  # the files hold 40, 40 and 23
    with pytest.raises(CorruptFileError, match=r"more rows than the log's 50 by .*part-00001"):
        read_embedding_rows(store, short, verify=False)


def test_a_replaced_file_is_named_by_every_whole_reader(many_files):
    uri, store, _ = many_files
    path = store.io.path(store.state().table(1, "item").files[0].path)
    frame = pl.read_parquet(path)
    pl.concat([frame, frame]).write_parquet(path)
    for verify in (True, False):
        with pytest.raises(CorruptFileError, match="part-00000.parquet has .* bytes, the log"):
            read_embeddings(uri, "item", verify=verify)
    with pytest.raises(CorruptFileError, match="part-00000.parquet"):
        ServingState.load(Store(uri))


def test_row_groups_of_a_file_without_a_column_or_without_groups():
    table = pa.table({"id": pa.array([1, 2]), "other": pa.array([0.5, 1.5])})
    data = parquet.to_parquet_bytes(table)
    with pytest.raises(CorruptFileError, match="f.parquet has no column embedding"):
        list(parquet.parquet_row_groups(data, "f.parquet", ["id", "embedding"]))
    sink = io.BytesIO()
    pq.ParquetWriter(sink, table.schema).close()  # a writer that wrote nothing: no row group
    empty = sink.getvalue()
    assert pq.read_metadata(pa.BufferReader(empty)).num_row_groups == 0
    parts = list(parquet.parquet_row_groups(empty, "e.parquet", ["id"]))
    assert len(parts) == 1 and parts[0].num_rows == 0 and parts[0].schema.names == ["id"]


def test_apply_into_a_slice_equals_apply():
    rng = np.random.default_rng(0)
    transform = (rng.normal(size=(3, 4)).astype(np.float32),
                 rng.normal(size=3).astype(np.float32))
    rows = rng.normal(size=(10, 4)).astype(np.float32)
    out = np.full((14, 3), 7.0, dtype=np.float32)
    chain_math.apply(rows, transform, out=out[2:12])
    assert np.allclose(out[2:12], chain_math.apply(rows, transform))
    assert (out[:2] == 7).all() and (out[12:] == 7).all()


def test_a_file_of_another_dimension_or_id_type_is_named(many_files):
    _, store, _ = many_files
    record = store.state().table(1, "user")
    with pytest.raises(CorruptFileError, match=r"part-00000\.parquet: .*dimension 7"):
        read_embedding_rows(store, dataclasses.replace(record, dim=7))
    text_ids = write_table(store, "elsewhere/user", pa.array(["a", "b"]),
                           np.zeros((2, record.dim), dtype=np.float32), 1,
                           datetime.now(timezone.utc))
    mixed = dataclasses.replace(record, files=[record.files[0], *text_ids], rows=42)
    with pytest.raises(CorruptFileError, match=r"elsewhere/user/part-00000\.parquet holds ids "
                                               r"of type string"):
        read_embedding_rows(store, mixed)
