"""Files still being written never land: a landed file is taken when it is settled (unchanged for
`settle_seconds`, or its folder holds `_SUCCESS`) and, for a CSV, when its last line is
terminated; a file rewritten after it was taken is reported once, with a command that ingests
its new content as a corrected batch exactly once (file and S3)."""

from __future__ import annotations

import shlex
import time

from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.ingest.landing import ingest_landing
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.store.landing_helpers import ZONE, encoded, ingested_edges, rows, write, zone

CSV = f"{ZONE}/dt=2026-11-22/part-0.csv"


def _later() -> float:
    """A pass two minutes from now: whatever was written before it has settled."""
    return time.time() + 120


def test_a_csv_being_written_lands_whole_once_it_settles(store_uri):
    store = Store(store_uri)
    config = zone(store)
    full = encoded(rows(0, 1000), CSV)
    first_500_lines = b"".join(full.splitlines(keepends=True)[:500])
    write(store, CSV, first_500_lines)
    writing = ingest_landing(store, config)
    assert writing.taken == [] and ingested_edges(store) == 0
    assert writing.skipped[0]["reason"].startswith("unsettled")

    write(store, CSV, full)
    done = ingest_landing(store, config, now=_later())
    assert [t["edges"] for t in done.taken] == [1000] and done.changed == []
    assert ingest_landing(store, config, now=_later()).taken == []
    assert ingested_edges(store) == 1000


def test_a_csv_cut_mid_line_is_incomplete_never_read(store_uri):
    store = Store(store_uri)
    config = zone(store)
    full = encoded(rows(0, 20), CSV)
    write(store, CSV, full[:-7])  # the last row's time is cut: "1700000" + no newline
    cut = ingest_landing(store, config, now=_later())
    assert cut.taken == [] and cut.refused == [] and ingested_edges(store) == 0
    assert cut.skipped == [{"file": store.io.uri_of(CSV).removeprefix("file://"),
                            "reason": "incomplete: its last line is not terminated"}]

    write(store, CSV, full)
    assert len(ingest_landing(store, config, now=_later()).taken) == 1
    edges = load_snapshot(store).edges
    assert edges.height == 20 and edges["timestamp"].min() == 1_700_000_000


def test_a_file_changed_after_it_was_taken_is_reported_once_with_a_corrected_batch(store_uri):
    store = Store(store_uri)
    config = zone(store)
    write(store, CSV, encoded(rows(0, 500), CSV))
    (partial,) = ingest_landing(store, config, now=_later()).taken
    time.sleep(1.1)  # a new mtime on a local disk (S3: a new ETag anyway)
    write(store, CSV, encoded(rows(0, 1000), CSV))

    report = ingest_landing(store, config, now=_later())
    assert report.taken == [] and len(report.changed) == 1
    command = report.changed[0]["command"]
    assert command.startswith("bc-ray data ingest --store ") and "--batch-id landing-" in command
    assert f"--corrects {partial['batch_id']} " in command
    again = ingest_landing(store, config, now=_later())
    assert again.changed == [] and again.taken == []  # reported exactly once

    runner = CliRunner()
    first = runner.invoke(app, shlex.split(command)[1:])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, shlex.split(command)[1:])
    assert second.exit_code == 0 and "already in the store" in second.output
    batches = sorted(store.state().batches.values(), key=lambda b: b.ordinal)
    assert [b.stats["edges"] for b in batches] == [500, 500]  # each interaction once
    assert batches[1].stats["already_in_corrected_batch"] == 500
    assert ingested_edges(store) == 1000
    edges = load_snapshot(store).edges
    assert edges.height == 1000 and edges["timestamp"].n_unique() == 1000
    assert ingest_landing(store, config, now=_later()).changed == []
