"""A Spark/Hadoop job commit in progress: the committer's renames keep each task file's old
modification time, so the parts already moved up look settled while `_temporary/` still holds
the rest. Without a `_SUCCESS` requirement the partition still waits for the commit to finish
and lands once, as one batch (file and S3)."""

from __future__ import annotations

import time

from bc_ray.ingest.landing import ingest_landing
from bc_ray.store.store import Store
from tests.store.landing_helpers import ZONE, encoded, ingested_edges, move, rows, write, zone

PARTITION = f"{ZONE}/dt=2026-11-22"
PARTS = ("part-00000-c000.snappy.parquet", "part-00001-c000.snappy.parquet")


def _task_output(task: int) -> str:
    return f"{PARTITION}/_temporary/0/task_00000{task}/{PARTS[task]}"


def _later() -> float:
    """A pass long after every write: all modification times are old."""
    return time.time() + 3600


def test_a_partition_mid_commit_waits_and_lands_once(store_uri):
    store = Store(store_uri)
    config = zone(store, settle_seconds=0)
    for task, part in enumerate(PARTS):
        attempt = f"{PARTITION}/_temporary/0/_temporary/attempt_0001_m_00000{task}_0"
        write(store, f"{attempt}/.{part}.crc", b"crc")
        write(store, _task_output(task), encoded(rows(task * 100, 100), part))
    move(store, _task_output(0), f"{PARTITION}/{PARTS[0]}")  # the job commit, half done

    mid_commit = ingest_landing(store, config, now=_later())
    assert mid_commit.taken == [] and ingested_edges(store) == 0
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in mid_commit.skipped}
    assert reasons[PARTS[0]] == "its folder still holds _temporary/: a writer's commit is under way"

    move(store, _task_output(1), f"{PARTITION}/{PARTS[1]}")
    assert ingest_landing(store, config, now=_later()).taken == []  # _temporary/ still there

    store.io.fs.rm(store.io.path(f"{PARTITION}/_temporary"), recursive=True)  # no _SUCCESS
    committed = ingest_landing(store, config, now=_later())
    assert [len(t["files"]) for t in committed.taken] == [2]
    assert ingest_landing(store, config, now=_later()).taken == []
    assert ingested_edges(store) == 200
