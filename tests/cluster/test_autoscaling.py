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
    assert report["alive_gpus"] == 0  # none up yet: the checks by the nodes alive refused
    assert report["totals"]["GPU"] == 2 and report["totals"]["CPU"] == 1 + 2 * 2
    assert report["two_gpu_workers"] is None
    assert "needs 3 GPUs but the cluster has at most 2" in report["three_gpu_workers"]
    assert report["sharded_request"] > 0
    assert "peaks near 1.8x that" in report["sharded_too_big"]
