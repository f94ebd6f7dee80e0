"""Shared fixtures: real components, started once per session.

- `s3_server`: moto's S3 server on 127.0.0.1 (real HTTP, honours If-None-Match: *). Its endpoint
  and credentials go into the environment before any Ray cluster starts, so workers inherit them.
- `store_uri`: a fresh store, parametrised over the local filesystem and the S3 server.
- `ray_cluster`: one local Ray cluster for the whole session (logical CPUs; see ray-notes).
- `small_snapshot`, `ml100k_path`: data (the real file is skipped with a reason when absent).

`tests/models/plugin` holds a test-only model family installed the way a team's package would be:
a `bc_ray.models` entry point in its dist-info. It is on sys.path here and on the Ray workers'
PYTHONPATH, so the driver and every worker find the family `tiny` by name.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

import pytest

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
AMAZON = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-magazine"
PLUGINS = Path(__file__).resolve().parent / "models" / "plugin"
sys.path.insert(0, str(PLUGINS))


def start_s3_server():
    """moto's S3 server on 127.0.0.1, and this process's AWS settings pointing at it; returns
    (server, endpoint). Also used by the two-node benchmark."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
                      AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
                      AWS_RESPONSE_CHECKSUM_VALIDATION="when_required")
    return server, endpoint


@pytest.fixture(scope="session")
def s3_server():
    server, endpoint = start_s3_server()
    yield endpoint
    server.stop()


@pytest.fixture
def s3_uri(s3_server) -> str:
    import boto3

    bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store"


@pytest.fixture(params=["file", "s3"])
def store_uri(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/store"
    return request.getfixturevalue("s3_uri")


@pytest.fixture(scope="session")
def small_raw():
    from bc_ray.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(num_users=300, num_items=200, num_edges=6_000, seed=1))


@pytest.fixture(scope="session")
def small_snapshot(small_raw):
    from bc_ray.data.snapshot import build_snapshot

    return build_snapshot(small_raw)


@pytest.fixture(scope="session")
def ml100k_path() -> str:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (licensed data is never committed)")
    return str(ML100K)


@pytest.fixture(scope="session")
def amazon_path() -> str:
    if not AMAZON.is_dir():
        pytest.skip(f"Amazon 2018 sample not found at {AMAZON} (licensed data is never committed)")
    return str(AMAZON)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head(s3_server, tmp_path_factory):
    """A real `ray start --head` cluster with the Jobs API (dashboard) on 127.0.0.1, stopped at
    the end by signalling the blocking `ray start` process group."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    dashboard = free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    log = open(tmp_path_factory.mktemp("ray-head") / "head.log", "w")
    process = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=4",
         "--include-dashboard=true", "--disable-usage-stats",
         f"--ray-client-server-port={free_port()}", "--node-ip-address=127.0.0.1",
         # Its own agent port: the session's cluster (`ray_cluster`), where it started first,
         # holds the default 52365 even without a dashboard, and a head whose agent cannot bind
         # never takes a job.
         f"--dashboard-agent-listen-port={free_port()}"],
        env={**os.environ, "RAY_AUTH_MODE": "disabled"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                os.killpg(process.pid, signal.SIGTERM)
                pytest.fail(f"ray start --head did not come up; see {log.name}")
            time.sleep(1)
    try:  # the agent registers well after the dashboard answers on a busy machine
        _wait_for_job_agent(address, time.time() + 180, log.name)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)  # a head that never served a test goes too
        raise
    yield address
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def _wait_for_job_agent(address: str, deadline: float, log: str) -> None:
    """The dashboard answers before the head's job agent has registered; until it has, a
    submission fails with 'No available agent' (seen on 2 busy cores). A no-op job probes it."""
    import time

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    while True:
        try:
            client.submit_job(entrypoint="true")
            return
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                pytest.fail(f"the head's job agent did not come up ({exc}); see {log}")
            time.sleep(1)


REPO = Path(__file__).resolve().parents[1]
JOB_EXCLUDES = [".venv", ".git", "bench-out", "demo-store", "**/__pycache__", ".pytest_cache"]


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False,
             object_store_memory=256 * 1024 * 1024,
             log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(Path(__file__).resolve().parents[1]), str(PLUGINS)])}})
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - Serve may never have started
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_port(ray_cluster) -> int:
    """Ray Serve's HTTP proxy on 127.0.0.1, started once per Ray session (a second
    `serve.start` keeps the first one's port): tests add their apps under their own prefixes."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port
