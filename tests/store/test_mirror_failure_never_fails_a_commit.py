"""Issue 25, item 15: a storage error while mirroring to Delta (S3 throttling the mirror's reads
with `SlowDown`, from a real misbehaving endpoint in front of moto) never fails the refresh or
rollback that has committed: the refresh returns, retention still runs, `bc-ray rollback` exits
0 without a traceback, and `bc-ray store mirror` catches up once the storage recovers. Before, the
error escaped after the commit: the refresh job failed and was retried, retention was skipped and
the rollback printed a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import boto3
import numpy as np
import pytest
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.io import StorageOptions
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.delta_readers import READERS, assert_same_rows, expected_rows
from tests.store.faulty_s3 import FaultyS3

runner = CliRunner()
MIRROR_READS = ("/embeddings/", "/delta/", "/_delta_log/")  # reads only the Delta mirror makes


@pytest.fixture
def faulty(s3_server, monkeypatch):
    # botocore's own retries of a throttled call, under s3fs's: one attempt each keeps the
    # test short (a real client waits longer, then fails the same way)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy = FaultyS3(s3_server)
    yield proxy
    proxy.close()


def _store(faulty: FaultyS3, keep_versions: int) -> tuple[Store, str]:
    bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=faulty.endpoint).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/store"
    options = StorageOptions(endpoint_url=faulty.endpoint, region="us-east-1")
    store = Store(uri, options, retention=RetentionPolicy(keep_versions=keep_versions,
                                                          staging_grace_seconds=0))
    rng = np.random.default_rng(51)
    publish_fake_version(store, 8, rng)
    refresh_fake_tables(store, 0, 30, rng)
    publish_fake_version(store, 6, rng)
    return store, uri


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_throttled_mirror_fails_neither_the_refresh_nor_retention(faulty):
    store, uri = _store(faulty, keep_versions=1)
    warnings = _Warnings()
    logging.getLogger("bc_ray.store.delta").addHandler(warnings)
    faulty.failing = MIRROR_READS
    try:
        refresh_fake_tables(store, 1, 35, np.random.default_rng(52))  # must not raise
    finally:
        faulty.failing = ()
        logging.getLogger("bc_ray.store.delta").removeHandler(warnings)
    assert faulty.refused > 0, "the fault never reached the mirror"
    assert any("bc-ray store mirror" in m for m in warnings.messages), warnings.messages
    state = store.state()
    assert state.table(1, "user") is not None  # the refresh committed
    assert state.table(0, "user") is None  # and retention ran after it (keep_versions 1)
    result = runner.invoke(app, ["store", "mirror", "--store", uri],
                           env={"BC_RAY_S3_ENDPOINT": faulty.endpoint})
    assert result.exit_code == 0, result.output
    assert_same_rows(READERS["deltalake"](store, None), expected_rows(
        uri, options=store.io.options), "after the storage recovered")


def test_a_throttled_mirror_never_makes_rollback_print_a_traceback(faulty):
    store, uri = _store(faulty, keep_versions=2)
    refresh_fake_tables(store, 1, 35, np.random.default_rng(53))
    env = {**os.environ, "BC_RAY_S3_ENDPOINT": faulty.endpoint,
           "AWS_ENDPOINT_URL": faulty.endpoint, "PYTHONPATH": os.getcwd()}
    faulty.failing = MIRROR_READS
    try:
        done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "rollback", "--store",
                               uri], env=env, capture_output=True, text=True, timeout=300)
    finally:
        faulty.failing = ()
    assert faulty.refused > 0, "the fault never reached the mirror"
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "version 0 is current again" in done.stdout
    assert store.state().current_version == 0
