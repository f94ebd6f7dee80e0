"""Bad embedding tables are refused with one line naming the problem, and nothing is committed or
left behind in the store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from bc_ray.exceptions import BcRayError, ConfigError, DataError
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.job import run_publish
from tests.publish.conftest import current, embedding_table, put_parquet


def _store_files(store) -> tuple[int, dict]:
    return store.state().seq, store.io.list_files("")


def _good(uri: str) -> dict[str, tuple[list, np.ndarray]]:
    """Today's tables, slightly moved: a publish of these alone would succeed."""
    return {e: (ids, matrix + 1e-3) for e, (ids, matrix) in current(uri).items()}


def _write(base: str, tables: dict, **kwargs) -> tuple[str, str]:
    return tuple(put_parquet(f"{base}/{e}s.parquet", embedding_table(*tables[e], **kwargs))
                 for e in ("user", "item"))


def _with_users(base: str, tables: dict, users: pa.Table) -> tuple[str, str]:
    items = put_parquet(f"{base}/items.parquet", embedding_table(*tables["item"]))
    return put_parquet(f"{base}/users.parquet", users), items


def ragged(base, tables):
    ids, matrix = tables["user"]
    vectors = [list(row) for row in matrix]
    vectors[7] = vectors[7][:-1]
    return _with_users(base, tables, pa.table({"id": ids, "embedding": vectors}))


def users_and_items_differ(base, tables):
    users = put_parquet(f"{base}/users.parquet", embedding_table(*tables["user"]))
    ids, matrix = tables["item"]
    return users, put_parquet(f"{base}/items.parquet", embedding_table(ids, matrix[:, :12]))


def files_differ(base, tables):
    ids, matrix = tables["user"]
    put_parquet(f"{base}/users/a.parquet", embedding_table(ids[:100], matrix[:100]))
    put_parquet(f"{base}/users/b.parquet", embedding_table(ids[100:], matrix[100:, :12]))
    return f"{base}/users", put_parquet(f"{base}/items.parquet", embedding_table(*tables["item"]))


def nan(base, tables):
    ids, matrix = tables["user"]
    matrix = matrix.copy()
    matrix[3, 5] = np.nan
    return _with_users(base, tables, embedding_table(ids, matrix))


def overflow(base, tables):
    ids, matrix = tables["user"]
    matrix = matrix.astype(np.float64)
    matrix[4, 0] = 1e300  # finite in float64, infinite in float32
    return _with_users(base, tables, embedding_table(ids, matrix))


def duplicate_ids(base, tables):
    ids, matrix = tables["user"]
    return _with_users(base, tables, embedding_table(ids[:-1] + [ids[0]], matrix))


def text_ids(base, tables):
    ids, matrix = tables["user"]
    return _with_users(base, tables, embedding_table([f"u{i}" for i in ids], matrix))


def float_ids(base, tables):
    ids, matrix = tables["user"]
    return _with_users(base, tables, embedding_table([float(i) for i in ids], matrix))


def null_ids(base, tables):
    ids, matrix = tables["user"]
    return _with_users(base, tables, embedding_table([None] + ids[1:], matrix))


def null_vectors(base, tables):
    ids, matrix = tables["user"]
    vectors = [list(row) for row in matrix]
    vectors[2] = None
    return _with_users(base, tables, pa.table({"id": ids, "embedding": vectors}))


def text_vectors(base, tables):
    ids, _ = tables["user"]
    return _with_users(base, tables, pa.table({"id": ids, "embedding": [["a"]] * len(ids)}))


def little_overlap(base, tables):
    shifted = {e: ([i + 1_000_000 for i in ids[:-10]] + ids[-10:], matrix)
               for e, (ids, matrix) in tables.items()}
    return _write(base, shifted)


def empty(base, tables):
    users = embedding_table([], np.zeros((0, 16), np.float32)).cast(
        pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32()))]))
    return _with_users(base, tables, users)


def missing_column(base, tables):
    return _write(base, tables, embedding_col="vector")


def csv_file(base, tables):
    users = f"{base}/users.csv"
    put_parquet(f"{base}/ignored.parquet", embedding_table(*tables["user"]))
    with open(users.removeprefix("file://"), "w") as handle:
        handle.write("id,embedding\n1,0.5\n")
    return users, put_parquet(f"{base}/items.parquet", embedding_table(*tables["item"]))


def missing_path(base, tables):
    return f"{base}/nowhere", put_parquet(f"{base}/items.parquet",
                                          embedding_table(*tables["item"]))


def same_table(base, tables):
    users = put_parquet(f"{base}/users.parquet", embedding_table(*tables["user"]))
    return users, users


def items_of_user_ids(base, tables):
    users = put_parquet(f"{base}/users.parquet", embedding_table(*tables["user"]))
    return users, put_parquet(f"{base}/items.parquet",
                              embedding_table(tables["user"][0], tables["item"][1]))


BAD = [
    (ragged, "ragged embeddings: rows hold between 15 and 16 values"),
    (users_and_items_differ, "mixed dimensions: --users holds vectors of 16 values and --items "
                             "of 12"),
    (files_differ, "mixed dimensions: vectors of 12 values here but 16"),
    (nan, "--users: 1 embeddings hold NaN or infinity (first at row 3"),
    (overflow, "--users: 1 embeddings hold NaN or infinity (first at row 4"),
    (duplicate_ids, "--users: 1 ids occur more than once"),
    (text_ids, "--users: ids are text, but the store's user ids are integer"),
    (float_ids, "--users: ids must be integers or text, not double"),
    (null_ids, "--users: 1 rows have no id"),
    (null_vectors, "--users: 1 rows have no embedding"),
    (text_vectors, "the embedding column must hold a list of floats per row"),
    (little_overlap, "only 20 entities (10 users, 10 items) are in both the new tables and "
                     "version 0's; B_k needs at least 32"),
    (empty, "--users: the table is empty"),
    (missing_column, "no column 'embedding'"),
    (csv_file, "embeddings are read from Parquet only"),
    (missing_path, "--users: no such file or folder"),
    (same_table, "--users and --items are the same table ("),
    (items_of_user_ids, "--items: none of its 300 ids is one of version 0's 300 items, so B_k "
                        "cannot be measured on items; 300 are its user ids: is it the users' "
                        "table?"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[make.__name__ for make, _ in BAD])
def test_bad_tables_are_one_line_and_commit_nothing(chain_store, tmp_path, make, message):
    store, uri = chain_store
    users, items = make(f"file://{tmp_path}/external", _good(uri))
    before = _store_files(store)
    with pytest.raises(DataError) as refused:
        run_publish(PublishConfig(store=uri, users=users, items=items))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert _store_files(store) == before


def test_a_larger_min_overlap_is_enforced(chain_store, tmp_path):
    store, uri = chain_store
    users, items = _write(f"file://{tmp_path}/external", _good(uri))
    before = _store_files(store)
    with pytest.raises(DataError, match="only 600 entities .* at least 601 "
                                        r"\(--min-overlap"):
        run_publish(PublishConfig(store=uri, users=users, items=items, min_overlap=601))
    assert _store_files(store) == before


@pytest.mark.parametrize("values, message", [
    ({"users": "s3://KEY:hunter2x@bucket/users"}, "--users 's3://***@bucket/users' carries "
                                                "credentials"),
    ({"method": "post-magic"}, "--method must be one of post-procrustes, post-lowrank, "
                               "post-lin"),
    ({"min_overlap": 0}, "--min-overlap must be >= 1"),
    ({"max_align_error_rel": 0.0}, "--max-align-error-rel must be positive"),
])
def test_bad_options_are_refused_before_reading(values, message):
    config = {"store": "file:///tmp/s", "users": "u", "items": "i", **values}
    with pytest.raises(ConfigError) as refused:
        PublishConfig(**config)
    assert message in str(refused.value) and "hunter2x" not in str(refused.value)
    assert isinstance(refused.value, BcRayError)
