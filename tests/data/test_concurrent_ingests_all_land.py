"""Issue 25 item 10: 32 ingests started at the same moment, each its own process with its own
Store, into one store: every one lands once, with the store's jittered backoff between the
attempts a concurrent batch made stale, and no index is handed out twice. On the local S3
server, 8 (its one in-process server makes 32 take minutes on two cores)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store

REPO = Path(__file__).resolve().parents[2]
ROWS = 5
ITEMS = 7  # shared by every batch: each must find the others' items, never re-index them

INGEST = """
import json, os, sys, time
from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.store import Store

uri, edges, go = sys.argv[1:4]
store = Store(uri)
while not os.path.exists(go):  # every writer starts at the same moment
    time.sleep(0.01)
outcome = ingest(store, BatchInput(edges=edges), ColumnMapping("uid", "sku", "ts", "stars"))
print(json.dumps(outcome.to_dict()))
"""


def _batch(k: int) -> bytes:
    frame = pl.DataFrame({"uid": [f"u{k}-{i}" for i in range(ROWS)],
                          "sku": [f"i{(k + i) % ITEMS}" for i in range(ROWS)],
                          "ts": [1_700_000_000 + 100 * k + i for i in range(ROWS)],
                          "stars": [float(1 + i % 5) for i in range(ROWS)]})
    sink = io.BytesIO()
    frame.write_parquet(sink)
    return sink.getvalue()


def test_32_concurrent_ingests_all_land_once(tmp_path):
    _all_land(f"file://{tmp_path}/store", 32, tmp_path)


def test_concurrent_ingests_all_land_once_on_s3(s3_uri, tmp_path):
    _all_land(s3_uri, 8, tmp_path)


def _all_land(uri: str, writers: int, tmp_path: Path) -> None:
    store = Store(uri)
    inputs = []
    for k in range(writers):
        store.io.write_bytes(f"in/batch{k}.parquet", _batch(k))
        inputs.append(store.io.uri_of(f"in/batch{k}.parquet"))
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", INGEST, uri, path, str(go)],
                                  cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for path in inputs]
    time.sleep(1.0)  # most have imported by now; the rest join as they come
    go.touch()
    results = [process.communicate(timeout=600) for process in processes]
    failed = [err[-1500:] for process, (_, err) in zip(processes, results) if process.returncode]
    assert not failed, f"{len(failed)} of {writers} ingests failed: {failed[0]}"

    outcomes = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert all(o["status"] == "ingested" for o in outcomes)
    state = store.state()
    assert len({o["batch_id"] for o in outcomes}) == writers == len(state.batches)
    assert sorted(o["ordinal"] for o in outcomes) == list(range(writers))
    snapshot = load_snapshot(store)
    assert snapshot.num_edges == writers * ROWS
    assert snapshot.num_users == writers * ROWS and snapshot.num_items == ITEMS
    for entity in ("user", "item"):  # no index handed out twice, none skipped
        table = snapshot.entities(entity)
        assert table["id"].n_unique() == table.height
        assert sorted(table["idx"].to_list()) == list(range(table.height))
