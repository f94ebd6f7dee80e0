"""Issue 16: the nightly path on two Ray nodes with the store on S3 (the local S3 server): every
kind of work must run on both nodes, and nothing may depend on the driver's disk. Issue 29: a
sharded bump's two workers, one per node, each train on their own share."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]


def test_ingest_train_refresh_and_serve_run_on_both_nodes(s3_uri, tmp_path):
    # The driver runs in an empty directory: the store and Train's checkpoints live on S3.
    done = subprocess.run([sys.executable, "-m", "tests.cluster.two_nodes", s3_uri],
                          cwd=tmp_path, capture_output=True, text=True, timeout=480,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    nodes = report["nodes"]
    assert len(nodes) == 2
    assert report["train"]["status"] == "published"
    assert report["train"]["nodes"] == nodes
    assert sorted(report["train"]["worker_nodes"]) == nodes  # rank 0 and rank 1, one per node
    assert report["refresh"]["nodes"] == nodes
    assert report["refresh"]["rows"]["user"] > 0 and report["refresh"]["rows"]["item"] > 0
    assert report["serve"]["nodes"] == nodes
    assert report["serve"]["status"] == 200
    assert report["serve"]["body"]["found"] == [True]
    sharded = report["sharded"]
    assert sharded["status"] == "published", sharded["reasons"]
    assert sorted(sharded["worker_nodes"]) == nodes  # rank 0 and rank 1, one per node
    graph_bytes = [int(b) for b in sharded["worker_graph_bytes"]]
    assert len(graph_bytes) == 2 and max(graph_bytes) < 0.75 * sum(graph_bytes)
    assert list(tmp_path.iterdir()) == []  # nothing written next to the driver
