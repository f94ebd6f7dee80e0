"""Issue 25 item 20 (parts): a store whose S3 bucket does not exist is one clear line for every
command, reading or writing (never a traceback, never read as an empty store); `data info` on an
empty store names `bc-ray data ingest` beside synth and import. An S3 endpoint that is down is
one line too, and its exit status (75) tells a scheduler that a later try may pass, where a
missing bucket's (2) says it would fail alike."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import botocore.exceptions
import pytest

from bc_ray.exceptions import (
    EXIT_REPEATS,
    EXIT_TEMPORARY,
    CommitConflictError,
    CommitStateUnknownError,
    ConfigError,
    NotFoundError,
    StaleInputError,
    StorageAccessError,
    exit_status,
)
from bc_ray.io import temporary
from bc_ray.store.store import RetentionPolicy, Store
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def missing_bucket_uri(s3_server) -> str:
    return f"s3://bc-ray-missing-{uuid.uuid4().hex[:10]}/store"


@pytest.mark.parametrize("command", [
    ["store", "config", "--keep-versions", "3"],  # the first write
    ["data", "info"], ["versions"], ["gc"], ["store", "config"]])
def test_every_command_on_a_missing_bucket_is_one_line(missing_bucket_uri, command):
    done = cli(*command, "--store", missing_bucket_uri)
    bucket = missing_bucket_uri.split("/")[2]
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"bucket '{bucket}'" in lines[0] and "does not exist" in lines[0]


def test_an_endpoint_that_is_down_is_one_line_and_a_temporary_exit(missing_bucket_uri):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens
    done = cli("versions", "--store", missing_bucket_uri, AWS_ENDPOINT_URL=down,
               BC_RAY_S3_ENDPOINT=down)
    assert done.returncode == EXIT_TEMPORARY, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Could not connect to the endpoint" in lines[0] and "check the S3 endpoint" in lines[0]


@pytest.mark.parametrize("error, status", [
    (ConfigError("x"), EXIT_REPEATS), (NotFoundError("x"), EXIT_REPEATS),
    (StorageAccessError("x"), EXIT_REPEATS), (StorageAccessError("x", temporary=True), 75),
    (CommitConflictError("x"), EXIT_TEMPORARY), (CommitStateUnknownError("x"), EXIT_TEMPORARY),
    (StaleInputError("x"), EXIT_TEMPORARY)])
def test_the_exit_status_says_whether_a_later_try_may_pass(error, status):
    assert exit_status(error) == status


def test_an_error_raised_in_a_ray_task_exits_as_itself():
    from ray.exceptions import RayTaskError

    cause = StorageAccessError("throttled", temporary=True)
    wrapped = RayTaskError("edges", "traceback", cause).as_instanceof_cause()
    assert isinstance(wrapped, StorageAccessError) and exit_status(wrapped) == EXIT_TEMPORARY


def _from_s3(code: str, status: int) -> OSError:
    """An S3 error reply as s3fs raises it: an OSError whose cause holds the reply."""
    reply = botocore.exceptions.ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    error = OSError(errno.EIO, code)
    error.__cause__ = reply
    return error


@pytest.mark.parametrize("failure, waiting_may_cure", [
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
    (OSError(errno.EBUSY, "SlowDown"), True), (OSError(errno.EREMOTEIO, "InternalError"), True),
    (ConnectionResetError(), True), (TimeoutError(), True),
    (botocore.exceptions.ProfileNotFound(profile="nope"), False),
    (botocore.exceptions.NoCredentialsError(), False), (PermissionError("AccessDenied"), False),
    (NotADirectoryError(errno.ENOTDIR, "not a folder"), False), (OSError("unknown"), False),
    (_from_s3("ConditionalRequestConflict", 409), True), (_from_s3("BadGateway", 502), True),
    (_from_s3("NotImplemented", 501), True), (_from_s3("InvalidArgument", 400), False),
    (botocore.exceptions.SSLError(endpoint_url="https://x", error="bad certificate"), False)])
def test_only_failures_waiting_may_cure_are_temporary(failure, waiting_may_cure):
    assert temporary(failure) is waiting_may_cure


def test_a_store_that_is_a_file_is_one_line_that_a_retry_would_repeat(tmp_path):
    (tmp_path / "a-file").write_text("not a store")
    done = cli("versions", "--store", f"file://{tmp_path}/a-file")
    assert done.returncode == EXIT_REPEATS, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0


def test_the_api_names_the_missing_bucket_for_reads_and_writes(missing_bucket_uri):
    store = Store(missing_bucket_uri)
    with pytest.raises(StorageAccessError, match="does not exist"):
        store.state()
    with pytest.raises(StorageAccessError, match="does not exist"):
        Store(missing_bucket_uri).configure(RetentionPolicy())
    with pytest.raises(StorageAccessError, match="does not exist"):
        Store(missing_bucket_uri).io.write_bytes("batches/x/edges.parquet", b"x")


def test_an_existing_bucket_still_reads_as_an_empty_store(s3_uri):
    assert Store(s3_uri).state().seq == -1
    assert Store(s3_uri).io.list_dir("batches") == []


def test_data_info_on_an_empty_store_suggests_ingest_too(store_uri):
    done = cli("data", "info", "--store", store_uri)
    assert done.returncode == 2
    assert "bc-ray data ingest" in done.stderr and "bc-ray data synth" in done.stderr


def test_a_store_whose_credentials_cannot_head_the_bucket_still_works(s3_server):
    """Least-privilege credentials (objects under a prefix, no HeadBucket/GetBucketLocation)
    or a throttled bucket call are no verdict that the bucket is missing."""
    import boto3

    from bc_ray.io import StorageOptions
    from tests.store.faulty_s3 import FaultyS3

    proxy = FaultyS3(s3_server)
    try:
        bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
        proxy.bucket_calls_denied = True
        options = StorageOptions(endpoint_url=proxy.endpoint, region="us-east-1")
        store = Store(f"s3://{bucket}/store", options)
        assert store.state().seq == -1  # an empty store, not "the bucket does not exist"
        store.configure(RetentionPolicy(keep_versions=3))
        assert Store(f"s3://{bucket}/store", options).state().retention.keep_versions == 3
    finally:
        proxy.close()
