"""`bc-ray data ingest --corrects BATCH_ID`: the new content of files an earlier batch took lands
as a corrected batch holding only the interactions that batch does not (equal user, item, time
and rating), so each interaction is counted once; an unknown batch id is one clear error."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store

COLUMNS = ["--user-col", "uid", "--item-col", "sku", "--time-col", "ts", "--rating-col", "stars"]


def _interactions(count: int) -> pl.DataFrame:
    return pl.DataFrame({"uid": [f"u{i % 7}" for i in range(count)],
                         "sku": [f"i{i}" for i in range(count)],
                         "ts": [1_700_000_000 + i for i in range(count)],
                         "stars": [float(i % 5 + 1) for i in range(count)]})


def _ingest(store: str, path, *extra: str):
    return CliRunner().invoke(app, ["data", "ingest", "--store", store, "--edges", str(path),
                                    *COLUMNS, "--json", *extra])


def test_a_corrected_batch_counts_each_interaction_once(tmp_path):
    store = f"file://{tmp_path}/store"
    partial, full = tmp_path / "partial.parquet", tmp_path / "full.parquet"
    _interactions(10).write_parquet(partial)
    # The full content: the 10 rows again (one with a corrected rating) and 10 new ones.
    _interactions(20).with_columns(
        pl.when(pl.col("sku") == "i3").then(5.0).otherwise(pl.col("stars")).alias("stars")
    ).write_parquet(full)
    first = _ingest(store, partial, "--batch-id", "part-1")
    assert first.exit_code == 0, first.output

    corrected = _ingest(store, full, "--corrects", "part-1", "--batch-id", "part-1-fixed")
    assert corrected.exit_code == 0, corrected.output
    again = _ingest(store, full, "--corrects", "part-1", "--batch-id", "part-1-fixed")
    assert again.exit_code == 0 and "already ingested" in again.output

    batches = Store(store).state().batches
    assert batches["part-1-fixed"].stats["edges"] == 11
    assert batches["part-1-fixed"].stats["already_in_corrected_batch"] == 9
    edges = load_snapshot(Store(store)).edges
    assert sum(b.stats["edges"] for b in batches.values()) == 21
    assert edges.height == 20  # the corrected rating of i3 is a later edge of the same pair


def test_an_unknown_corrected_batch_is_one_clear_error(tmp_path):
    store = f"file://{tmp_path}/store"
    path = tmp_path / "events.parquet"
    _interactions(5).write_parquet(path)
    assert _ingest(store, path).exit_code == 0

    result = subprocess.run(
        [sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store", store, "--edges",
         str(path), *COLUMNS, "--corrects", "no-such-batch"], capture_output=True, text=True)
    assert result.returncode == 2
    [batch] = Store(store).state().batches  # the one there is, named among the newest
    assert result.stderr.strip().splitlines() == [
        f"error: --corrects no-such-batch: no batch with that id in the store (the newest: "
        f"{batch}; the landing report's `changed` command names the one to correct)"]


def test_the_same_interactions_file_under_another_batch_id_is_refused(tmp_path):
    """The same day again with an items table added (a new default id) or under an explicit
    --batch-id would count its interactions twice; nothing is written, and the error says what
    lands instead. The same bytes read another way (a corrected mapping) are other rows."""
    store = f"file://{tmp_path}/store"
    events, items = tmp_path / "events.parquet", tmp_path / "items.parquet"
    _interactions(6).write_parquet(events)
    pl.DataFrame({"sku": ["i0", "i1"], "genre": ["a", "b"]}).write_parquet(items)
    first = _ingest(store, events, "--batch-id", "day-1")
    assert first.exit_code == 0, first.output
    before = sorted(p.name for p in (tmp_path / "store").rglob("*"))

    for extra in (["--items", str(items)], ["--batch-id", "day-1-again"]):
        result = subprocess.run(
            [sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store", store,
             "--edges", str(events), *COLUMNS, *extra], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert "which batch day-1 took" in result.stderr, result.stderr
        assert "6 interaction rows twice" in result.stderr
        assert "--corrects" not in result.stderr  # it would drop every row: nothing to land
        assert str(events) in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "store").rglob("*")) == before
    assert list(Store(store).state().batches) == ["day-1"]

    unrated = CliRunner().invoke(app, ["data", "ingest", "--store", store, "--edges",
                                       str(events), *COLUMNS[:6], "--json"])
    assert unrated.exit_code == 0, unrated.output  # read without ratings: other rows
    assert len(Store(store).state().batches) == 2


def test_a_folder_with_a_file_already_taken_lands_the_rest_with_corrects(tmp_path):
    store = f"file://{tmp_path}/store"
    folder = tmp_path / "day"
    folder.mkdir()
    _interactions(8).write_parquet(folder / "part-0.parquet")
    assert _ingest(store, folder / "part-0.parquet", "--batch-id", "early").exit_code == 0
    _interactions(20).slice(8).write_parquet(folder / "part-1.parquet")  # the late part

    refused = _ingest(store, folder)
    assert "--corrects early" in str(refused.exception)  # `run()` makes it exit 2
    landed = _ingest(store, folder, "--corrects", "early", "--batch-id", "whole-day")
    assert landed.exit_code == 0, landed.output
    batches = Store(store).state().batches
    assert batches["whole-day"].stats["edges"] == 12
    assert sum(b.stats["edges"] for b in batches.values()) == 20
    assert {s.sha256 for s in batches["whole-day"].sources} >= \
        {s.sha256 for s in batches["early"].sources}
