"""A bump on a cluster that autoscales asks Ray's autoscaler for its workers' nodes and waits
for them, where before it was refused by the nodes alive; one its node types can never hold
gives up after --placement-timeout as a temporary error (exit 75: the scheduler retries it). A
refresh on the cluster scaled back to its head waits for nodes that can run its tasks. A head
whose v2 monitor only mirrors its nodes refuses what they cannot hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, mode: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.cluster.autoscaling",
                           f"file://{tmp_path}/store", mode],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_bump_waits_for_the_nodes_the_autoscaler_starts(tmp_path):
    report = _run(tmp_path, "v1")
    assert report["cpus_before"] == 1.0  # the head alone: no node could hold a 2-CPU worker
    assert report["train"]["status"] == "published"
    workers = report["train"]["worker_nodes"]
    assert len(set(workers)) == 2 and report["head"] not in workers  # on two started nodes
    assert len(report["nodes"]) == 3
    assert report["train"]["request_after"] == []  # withdrawn: the nodes may go when idle
    too_many = report["too_many"]
    assert too_many["raised"] and "--placement-timeout 6 s" in too_many["raised"]
    assert "hold 2" in too_many["raised"]
    assert too_many["exit_status"] == 75
    assert too_many["request_during"] == [{"CPU": 2}] * 3  # it stood while the bump waited
    assert too_many["request_after"] == []
    assert report["gpu"] == {"placed": True, "gpus": 1.0, "request_after": []}
    refresh = report["refresh"]  # from a cluster back at its head alone
    assert refresh["rows"]["user"] > 0 and refresh["rows"]["item"] > 0
    assert refresh["nodes"] and report["head"] not in refresh["nodes"]
    assert refresh["request_after"] == []


def test_a_v2_monitor_that_only_mirrors_the_nodes_refuses_what_they_cannot_hold(tmp_path):
    report = _run(tmp_path, "v2-readonly")
    assert report["autoscaler"] is True  # a v2 monitor judges every request
    # Refused as infeasible, not after --placement-timeout (whose error says it waited).
    assert "no node type it may start can" in report["raised"]
    assert report["exit_status"] == 2
