"""A bump on an autoscaling cluster whose GPU nodes are not up yet is not refused for want of
them: the pre-checks plan by every node the autoscaler may start (and still refuse what even
those could not hold)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_the_checks_count_the_nodes_an_autoscaler_may_start(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.cluster.autoscaling"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["alive"]["CPU"] == 1 and "GPU" not in report["alive"]
    assert "needs 2 GPUs but the cluster has at most 0" in report["refused_alive"]
    assert report["types"] == ["gpu_node", "head"]
    assert report["totals"]["GPU"] == 2 and report["totals"]["CPU"] == 1 + 2 * 2
    assert report["two_gpu_workers"] is None  # they wait for the nodes the autoscaler starts
    assert "needs 3 GPUs but the cluster has at most 2" in report["three_gpu_workers"]
    assert 0 < report["sharded_request"] < 4 << 30
    assert "peaks near 1.8x that" in report["sharded_too_big"]
