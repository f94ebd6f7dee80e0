"""Spark/Hadoop's commit protocol into a landing zone: tasks write under
`dt=.../_temporary/0/task_.../`, the job commit moves the parts up and writes `_SUCCESS` last.
Only the committed files land, once (file and S3)."""

from __future__ import annotations

import time

from bc_ray.ingest.landing import ingest_landing
from bc_ray.store.store import Store
from tests.store.landing_helpers import ZONE, encoded, ingested_edges, move, rows, write, zone

PARTITION = f"{ZONE}/dt=2026-11-22"
PARTS = ("part-00000-c000.snappy.parquet", "part-00001-c000.snappy.parquet")


def _tasks_write(store: Store) -> None:
    """Two tasks write and commit their attempt into the job's _temporary folder."""
    for task, part in enumerate(PARTS):
        attempt = f"{PARTITION}/_temporary/0/_temporary/attempt_202611220000_0001_m_00000{task}_0"
        write(store, f"{attempt}/{part}", encoded(rows(task * 100, 100), part))
        write(store, f"{attempt}/.{part}.crc", b"crc")
        move(store, f"{attempt}/{part}", f"{PARTITION}/_temporary/0/task_00000{task}/{part}")


def _job_commits_parts(store: Store) -> None:
    for task, part in enumerate(PARTS):
        move(store, f"{PARTITION}/_temporary/0/task_00000{task}/{part}", f"{PARTITION}/{part}")
    store.io.fs.rm(store.io.path(f"{PARTITION}/_temporary"), recursive=True)


def test_in_flight_files_are_never_taken_and_the_committed_ones_once(store_uri):
    store = Store(store_uri)
    config = zone(store, settle_seconds=0)
    _tasks_write(store)
    during = ingest_landing(store, config)
    assert during.taken == [] and ingested_edges(store) == 0
    assert [s["reason"] for s in during.skipped] == ["hidden"]
    assert during.skipped[0]["file"].endswith("dt=2026-11-22/_temporary")

    _job_commits_parts(store)
    write(store, f"{PARTITION}/_SUCCESS", b"")
    committed = ingest_landing(store, config)
    assert [len(t["files"]) for t in committed.taken] == [2]
    assert ingest_landing(store, config).taken == []
    assert ingested_edges(store) == 200


def test_require_success_takes_a_partition_only_after_its_marker(store_uri):
    store = Store(store_uri)
    config = zone(store, require_success=True, settle_seconds=0)
    _tasks_write(store)
    _job_commits_parts(store)  # the parts are up, the job has not finished yet
    write(store, f"{ZONE}/dt=2026-11-21/_temporary/0/task_000000/part-0.parquet",
          encoded(rows(500, 10), ".parquet"))  # a nested hidden folder of another partition
    early = ingest_landing(store, config)
    assert early.taken == [] and ingested_edges(store) == 0
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in early.skipped}
    assert reasons[PARTS[0]] == reasons[PARTS[1]] == "no _SUCCESS in its folder yet"
    assert reasons["_temporary"] == "hidden"

    write(store, f"{PARTITION}/_SUCCESS", b"")
    done = ingest_landing(store, config)
    assert [t["batch"].rsplit("/", 1)[-1] for t in done.taken] == ["dt=2026-11-22"]
    assert ingested_edges(store) == 200


def test_a_success_marker_skips_the_settle_wait(store_uri):
    store = Store(store_uri)
    config = zone(store)  # the default: 60 s unchanged, or _SUCCESS
    _tasks_write(store)
    _job_commits_parts(store)
    assert {s["reason"] for s in ingest_landing(store, config).skipped} == \
        {"unsettled: modified less than 60s ago"}
    write(store, f"{PARTITION}/_SUCCESS", b"")
    assert len(ingest_landing(store, config).taken) == 1
    assert ingested_edges(store) == 200


def test_a_late_file_written_after_the_marker_settles_like_any_other(store_uri):
    """`_SUCCESS` vouches for the files its job wrote, not for one added to the folder later
    (maybe still being written): that one waits to settle, then lands as a batch of its own."""
    store = Store(store_uri)
    config = zone(store)  # 60 s unchanged, or _SUCCESS
    _tasks_write(store)
    _job_commits_parts(store)
    write(store, f"{PARTITION}/_SUCCESS", b"")
    assert len(ingest_landing(store, config).taken) == 1
    time.sleep(1.1)  # S3 times are whole seconds: the late file is strictly newer
    write(store, f"{PARTITION}/late-part.parquet", encoded(rows(900, 50), ".parquet"))
    writing = ingest_landing(store, config)
    assert writing.taken == [] and ingested_edges(store) == 200
    assert {s["reason"] for s in writing.skipped} == {"unsettled: modified less than 60s ago"}
    settled = ingest_landing(store, config, now=time.time() + 120)
    assert [t["edges"] for t in settled.taken] == [50] and ingested_edges(store) == 250
