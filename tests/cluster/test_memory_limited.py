"""Issue 29: on three Ray nodes that each give a task less memory than an unpartitioned refresh
task must hold, the unpartitioned refresh is refused with the count of ranges that fits, and
the refresh left to choose runs partitioned across the nodes, equal to a plain pass."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_the_partitioned_refresh_runs_where_the_unpartitioned_one_cannot(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.cluster.memory_limited",
                           f"file://{tmp_path}/store"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=480,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["limit"] < 2 * report["unpartitioned_task_bytes"]
    assert "the unpartitioned refresh" in report["unpartitioned"]
    assert "leave --partitions out" in report["unpartitioned"]
    assert report["partitions"]["count"] >= 2
    assert len(report["worker_nodes"]) >= 2  # the ranges' tasks ran on more than one node
    assert report["user_rows"] == report["entities"]["user"]
    assert report["item_rows"] == report["entities"]["item"]
    assert report["max_abs_difference"] <= 1e-5
