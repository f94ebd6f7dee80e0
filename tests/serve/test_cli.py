"""`bc-ray serve` end to end: its own local cluster with the fast (HAProxy) ingress."""

import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from tests.conftest import free_port
from tests.helpers import store_with_chain

pytestmark = pytest.mark.ray


def test_bc_ray_serve_command(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8, 6], rows=20)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bc_ray.cli.main", "serve", "--store", uri, "--port", str(port),
         "--poll-interval", "0.5"],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and process.poll() is None, "serve never got ready"
            time.sleep(1)
        rows = np.ones((3, 6), np.float32)
        answer = httpx.post(f"{base}/v1/transform?from_version=1&to_version=0",
                            content=rows.tobytes(),
                            headers={"content-type": "application/octet-stream"}, timeout=30)
        assert answer.status_code == 200
        weight, bias = store.transform_to(0, 1)
        got = np.frombuffer(answer.content, "<f4").reshape(3, 8)
        assert np.allclose(got, rows @ weight.T + bias, atol=1e-5)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
