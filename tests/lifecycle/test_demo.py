"""`bc-ray demo` end to end (its own local Ray cluster) against the local S3 server."""

import json
import os
import subprocess
import sys

import pytest

from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.conftest import free_port

pytestmark = pytest.mark.ray


def run_demo(uri: str, method: str, versions: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bc_ray.cli.main", "demo", "--store", uri, "--versions",
         str(versions), "--scale", "0.2", "--epochs", "15", "--method", method, "--port",
         str(free_port())],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"},
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "consumer AUC (true ver-0)" in result.stdout
    # a first run shows the progress bar and the table; the logs go to the file it names
    assert not [line for line in result.stderr.splitlines() if " INFO " in line], \
        result.stderr[-3000:]
    log_path = result.stdout.split("logs:   ", 1)[1].split()[0]
    assert os.path.getsize(log_path) > 0
    store = Store(uri)
    [report_dir] = store.io.list_dir("reports")
    assert store.io.size(f"reports/{report_dir}/report.png") > 1000
    return json.loads(store.io.read_bytes(f"reports/{report_dir}/report.json"))


def test_demo_bc_aligner_keeps_consumers_working(s3_uri):
    report = run_demo(s3_uri, "bc-aligner", versions=2)
    state = Store(s3_uri).state()
    # Every stage left its mark in the store's log: one ingested batch per period.
    assert [state.snapshots[s].batches for s in state.snapshots] == [1, 2, 3]
    assert sorted(b.ordinal for b in state.batches.values()) == [0, 1, 2]
    assert [r["version"] for r in report["rows"]] == [0, 1, 2]
    assert all(r["new_users"] > 0 and r["new_items"] > 0 for r in report["rows"])
    assert report["rows"][0]["align_error"] < 1e-4  # version 0 serves itself
    published = [v for v, r in state.versions.items() if r.status == "published"]
    assert state.current_version == max(published) and len(published) >= 2
    assert state.lineage() == published
    for entity in ("user", "item"):
        table = state.table(state.current_version, entity)
        assert table.rows == len(load_snapshot(Store(s3_uri)).entities(entity))
    assert all(row["nightly_refresh"]["mode"] == "incremental" for row in report["rows"][1:])
    # Serve answered ver-0 embeddings over HTTP, equal to what polars read from the store.
    assert report["serve"]["served_version"] == state.current_version
    assert report["serve"]["auc_from_http"] == pytest.approx(report["rows"][-1]["auc_transformed"],
                                                             abs=1e-6)
    # The consumers keep their quality: within a small margin of the true ver-0 embeddings.
    for row in report["rows"][1:]:
        assert row["auc_transformed"] > row["auc_true_ver0"] - 0.03, row
        assert row["status"] == "published"


def test_demo_non_bc_breaks_the_consumers(tmp_path):
    report = run_demo(f"file://{tmp_path}/store", "non-bc", versions=1)
    bump = report["rows"][1]
    assert bump["status"] == "published"
    assert bump["auc_transformed"] < bump["auc_true_ver0"] - 0.06, bump
    assert bump["align_error"] > 5 * max(report["rows"][0]["align_error"], 0.5)
