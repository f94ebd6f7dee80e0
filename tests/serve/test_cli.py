"""`bc-ray serve` end to end: its own local cluster with the fast (HAProxy) ingress."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from bc_ray.serve.lifetime import is_alive
from tests.conftest import free_port
from tests.helpers import store_with_chain

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("stop", ["SIGINT to the group", "SIGTERM"])
def test_bc_ray_serve_command(tmp_path, stop):
    """Serves, then stops on Ctrl-C (SIGINT to the whole process group, Ray's processes
    included) or SIGTERM: exit 0, no traceback, the port released, nothing it started left."""
    import psutil

    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8, 6], rows=20)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bc_ray.cli.main", "serve", "--store", uri, "--port", str(port),
         "--poll-interval", "0.5"],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started: list = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail("serve never got ready:\n"
                            + process.communicate()[0].decode(errors="replace")[-3000:])
            time.sleep(1)
        rows = np.ones((3, 6), np.float32)
        answer = httpx.post(f"{base}/v1/transform?from_version=1&to_version=0",
                            content=rows.tobytes(),
                            headers={"content-type": "application/octet-stream"}, timeout=30)
        assert answer.status_code == 200
        weight, bias = store.transform_to(0, 1)
        got = np.frombuffer(answer.content, "<f4").reshape(3, 8)
        assert np.allclose(got, rows @ weight.T + bias, atol=1e-5)
        started = psutil.Process(process.pid).children(recursive=True)
        assert any("haproxy" in p.name() for p in started)  # the fast ingress is in play
        if stop == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=45)  # the issue: within 30 s (+ margin)
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-3000:]
        # the command's own lines (Ray forwards its actors' logs, prefixed "(Actor pid=...)",
        # and HAProxy's manager may log a closed socket while it is being stopped)
        own = [line for line in text.splitlines() if "pid=" not in line[:80]]
        assert not [line for line in own if "Traceback" in line] and "stopped" in own
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/readyz", timeout=2)
        assert not [p for p in started if is_alive(p)]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for leftover in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
