"""Issue 25, item 11 (and the checkpoint of item 13): every Delta reader that installs here
(deltalake, polars read_delta/scan_delta, DuckDB delta_scan, Daft, pyarrow.dataset over the files
the log names) reads the store's Delta view with the same rows, ids and bitwise embeddings as
`read_embeddings`: at the current version, after a bump, after a rollback, with time travel and
across a Delta checkpoint. Before, the files' embedded Arrow schema said fixed_size_list while the
Delta schema said array<float>, and polars refused the table."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from bc_ray.store.delta import CHECKPOINT_INTERVAL
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.versions import rollback_version
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.delta_readers import READERS, assert_same_rows, expected_rows, missing_readers

# On S3, the readers that cannot be pointed at this test's endpoint from here, and why.
S3_UNREACHABLE = {
    "duckdb.delta_scan": "DuckDB reads S3 through its httpfs extension, which is not installed "
                         "offline",
}


@pytest.fixture(scope="module", params=["file", "s3"])
def history(request, tmp_path_factory):
    """One store through refreshes, a bump and a rollback: the store and, per stage, the Delta
    version then current with what `read_embeddings` returned then."""
    if request.param == "file":
        uri = f"file://{tmp_path_factory.mktemp('delta')}/store"
    else:
        import boto3

        endpoint = request.getfixturevalue("s3_server")
        bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        uri = f"s3://{bucket}/store"
    rng = np.random.default_rng(11)
    store = Store(uri, retention=RetentionPolicy(keep_versions=2))
    stages = []

    def stage(name: str) -> None:
        stages.append((name, store.state().delta.delta_version, expected_rows(uri)))

    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 40, rng)
    stage("first refresh")
    refresh_fake_tables(store, 0, 45, rng)
    stage("second refresh")
    publish_fake_version(store, 6, rng)
    refresh_fake_tables(store, 1, 50, rng)
    stage("bump and its refresh")
    rollback_version(store)
    stage("rollback")
    return store, stages


def _reader(name: str, scheme: str):
    if name in missing_readers():
        pytest.skip(f"{name} is not installed here (pip install -e '.[dev]')")
    if scheme == "s3" and name in S3_UNREACHABLE:
        pytest.skip(S3_UNREACHABLE[name])
    return READERS[name]


@pytest.mark.parametrize("name", list(READERS))
def test_each_reader_reads_what_read_embeddings_returned(history, name):
    store, stages = history
    read = _reader(name, store.io.scheme)
    assert [version for _, version, _ in stages] == [0, 1, 2, 3]
    assert_same_rows(read(store, None), stages[-1][2], f"{name} (current)")
    for label, version, expected in stages:  # time travel to every earlier version
        assert_same_rows(read(store, version), expected, f"{name} at {label}")


@pytest.mark.parametrize("name", list(READERS))
def test_each_reader_agrees_across_a_delta_checkpoint(tmp_path, name):
    read = _reader(name, "file")
    uri = f"file://{tmp_path}/store"
    rng = np.random.default_rng(12)
    store = Store(uri, retention=RetentionPolicy(keep_versions=1))
    publish_fake_version(store, 4, rng)
    refresh_fake_tables(store, 0, 10, rng)
    first = (store.state().delta.delta_version, expected_rows(uri))
    for _ in range(CHECKPOINT_INTERVAL + 1):
        refresh_fake_tables(store, 0, int(rng.integers(5, 15)), rng)
    log = store.io.list_dir("delta/_delta_log")
    assert "_last_checkpoint" in log and any(n.endswith(".checkpoint.parquet") for n in log)
    assert store.state().delta.delta_version > CHECKPOINT_INTERVAL
    assert_same_rows(read(store, None), expected_rows(uri), f"{name} after a checkpoint")
    assert_same_rows(read(store, first[0]), first[1], f"{name} before the checkpoint")
