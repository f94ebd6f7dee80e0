"""A landed file is its path under the landing root plus its content hash: the same folder
reached through a symlink or a copy (a remount) is not read again, the same bytes are never a
second batch, and a 0-row file is recorded once as empty instead of failing every pass."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from bc_ray.ingest.landing import LandingConfig, ingest_landing
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store
from tests.store.landing_helpers import MAPPING, ZONE, encoded, ingested_edges, rows, write, zone


def _land_two_days_and_a_late_file(store: Store, config: LandingConfig) -> None:
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 50), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", encoded(rows(50, 50), ".parquet"))
    assert len(ingest_landing(store, config).taken) == 2
    write(store, f"{ZONE}/dt=2026-11-21/part-1.parquet", encoded(rows(100, 30), ".parquet"))
    assert len(ingest_landing(store, config).taken) == 1  # the late file: a batch of its own
    assert ingested_edges(store) == 130


def test_the_same_folder_through_a_symlink_is_not_read_again(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    _land_two_days_and_a_late_file(store, zone(store, settle_seconds=0))
    os.symlink(store.io.path("landing"), tmp_path / "mounted")
    through_link = LandingConfig(edges=str(tmp_path / "mounted" / "events"), mapping=MAPPING,
                                 settle_seconds=0)
    report = ingest_landing(store, through_link)
    assert report.taken == [] and report.refused == [] and report.changed == []
    assert ingested_edges(store) == 130


def test_a_copy_of_the_zone_elsewhere_is_the_same_bytes(store_uri):
    """A remount or a copy to another prefix: new mtimes (and paths), the same content."""
    store = Store(store_uri)
    _land_two_days_and_a_late_file(store, zone(store, settle_seconds=0))
    time.sleep(1.1)  # the copies get a newer mtime on a local disk
    for name in store.io.fs.find(store.io.path(ZONE)):
        rel = name[len(store.io.path(ZONE)):].lstrip("/")
        write(store, f"remounted/events/{rel}", store.io.fs.cat_file(name))
    copy = LandingConfig(edges=store.io.uri_of("remounted/events"), mapping=MAPPING,
                         settle_seconds=0)
    report = ingest_landing(store, copy)
    assert report.taken == [] and report.refused == [] and report.changed == []
    assert ingested_edges(store) == 130
    assert ingest_landing(store, copy).skipped == []  # noted: not even read again


def test_an_identical_partition_and_an_empty_file_are_recorded_once(store_uri):
    store = Store(store_uri)
    config = zone(store, settle_seconds=0)
    day = encoded(rows(0, 40), ".parquet")
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", day)
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", day)  # redelivered under a new date
    write(store, f"{ZONE}/dt=2026-11-23/part-0.parquet", encoded(rows(0, 0), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-24/part-0.csv", b"uid,sku,ts,stars\n")
    write(store, f"{ZONE}/dt=2026-11-24/part-1.csv", encoded(rows(40, 5), ".csv"))

    first = ingest_landing(store, config)
    assert first.refused == []
    assert [t["status"] for t in first.taken] == ["ingested", "ingested"]
    empty = [s["file"].rsplit("/", 2)[-2] for s in first.skipped if s["reason"].startswith("empty")]
    assert empty == ["dt=2026-11-23", "dt=2026-11-24"]
    [copy] = [s for s in first.skipped if s["reason"].startswith("same bytes")]
    assert copy["file"].endswith("dt=2026-11-22/part-0.parquet")
    assert copy["reason"] == ("same bytes as dt=2026-11-21/part-0.parquet, taken in this pass: "
                              "its interactions are counted once")
    assert ingested_edges(store) == 45

    second = ingest_landing(store, config)
    assert (second.taken, second.skipped, second.refused) == ([], [], [])
    state = store.state()  # the notes survive the log's checkpoints
    assert len(state.landing) == 3 and StoreState.from_dict(state.to_dict()).landing == \
        state.landing
    write(store, f"{ZONE}/dt=2026-11-23/part-0.parquet", encoded(rows(60, 3), ".parquet"))
    assert [t["edges"] for t in ingest_landing(store, config).taken] == [3]  # rows now: taken



def test_a_taken_file_copied_under_another_path_is_not_counted_again(store_uri):
    """A day redelivered under a new date, or a file renamed, after its bytes landed: skipped
    as the same bytes, noted, and not read at the next pass; only the new part lands."""
    store = Store(store_uri)
    config = zone(store, settle_seconds=0)
    day = encoded(rows(0, 40), ".parquet")
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", day)
    [taken] = ingest_landing(store, config).taken
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", day)
    write(store, f"{ZONE}/dt=2026-11-22/part-1.parquet", encoded(rows(40, 5), ".parquet"))

    report = ingest_landing(store, config)
    assert report.refused == [] and [t["edges"] for t in report.taken] == [5]
    [skipped] = report.skipped
    assert skipped["file"].endswith("dt=2026-11-22/part-0.parquet")
    assert skipped["reason"] == (f"same bytes as dt=2026-11-21/part-0.parquet, which batch "
                                 f"{taken['batch_id']} took: its interactions are counted once")
    assert ingested_edges(store) == 45
    again = ingest_landing(store, config)
    assert (again.taken, again.skipped, again.refused) == ([], [], [])
    write(store, f"{ZONE}/dt=2026-11-23/part-0.parquet", day)  # the zone's mapping corrected:
    unrated = replace(config, mapping=replace(MAPPING, rating_col=None))  # other rows
    assert [t["edges"] for t in ingest_landing(store, unrated).taken] == [40]
