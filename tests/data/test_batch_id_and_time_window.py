"""Issue 25, item 8: the default batch id covers the content and how it is read (mapping, time
unit), so a corrected re-run lands instead of "already in the store"; times before 1990 or after
a day from now are refused with the hint, unless `--allow-old-times` (for old times)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import typer
import yaml

from bc_ray.cli import config_file
from bc_ray.cli.landing_options import load_landing
from bc_ray.cli.main import app
from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import ConfigError, DataError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import MAPPING, REPO, day, put

SECONDS = [1_700_000_000, 1_700_000_100]  # 2023-11-14, in seconds


def _ingest_cli(store: Store, edges: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store",
                           store.uri, "--edges", edges, "--user-col", "uid", "--item-col", "sku",
                           "--time-col", "ts", "--json", *options],
                          capture_output=True, text=True, cwd=REPO)


def test_milliseconds_on_seconds_data_is_refused_and_the_corrected_run_lands(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/d.csv", day(["a", "b"], ["x", "y"], SECONDS))
    wrong = _ingest_cli(store, edges, "--time-unit", "ms")
    assert wrong.returncode == 2, wrong.stdout
    assert "1970-01-20" in wrong.stderr and "--time-unit s" in wrong.stderr, wrong.stderr
    assert "--allow-old-times" in wrong.stderr and "'ts'" in wrong.stderr
    assert "d.csv" in wrong.stderr and store.state().seq == -1
    right = _ingest_cli(store, edges, "--time-unit", "s")
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["status"] == "ingested"
    assert load_snapshot(store).edges["timestamp"].to_list() == SECONDS


def test_a_corrected_mapping_of_the_same_files_is_a_new_batch(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/d.parquet", day(["a", "b"], ["x", "y"], SECONDS, [1.0, 2.0]))
    old = replace(MAPPING, time_unit="ms", allow_old_times=True)  # lands 1970-01-20
    first = ingest(store, BatchInput(edges=edges), old)
    assert first.status == "ingested" and first.stats["time_range"][1] < 86_400 * 30
    assert ingest(store, BatchInput(edges=edges), old).status == "already ingested"
    fixed = ingest(store, BatchInput(edges=edges), MAPPING)
    assert fixed.status == "ingested" and fixed.batch_id != first.batch_id
    swapped = replace(MAPPING, user_col="sku", item_col="uid")
    flipped = ingest(store, BatchInput(edges=edges), swapped)
    assert flipped.status == "ingested" and flipped.batch_id not in (first.batch_id,
                                                                      fixed.batch_id)
    unrated = ingest(store, BatchInput(edges=edges), replace(MAPPING, rating_col=None))
    assert unrated.status == "ingested"
    # A retry of the same content with the same mapping stays the same batch, and so does one
    # that only spells out the format the file is read as anyway, or allows old times.
    for same in (MAPPING, replace(MAPPING, input_format="parquet"),
                 replace(MAPPING, allow_old_times=True)):
        again = ingest(store, BatchInput(edges=edges), same)
        assert again.status == "already ingested" and again.batch_id == fixed.batch_id
    assert len(store.state().batches) == 4


@pytest.mark.parametrize("when, fragment", [
    (486_432_000, "before 1990-01-01"),  # 1985-06-01
    (0, "before 1990-01-01"),
])
def test_times_before_1990_need_allow_old_times(tmp_path, when, fragment):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/old.parquet", day(["a", "b"], ["x", "y"], [when, 1_700_000_000],
                                             [1.0, 2.0]))
    with pytest.raises(DataError, match="--allow-old-times") as raised:
        ingest(store, BatchInput(edges=edges), MAPPING)
    assert fragment in str(raised.value) and "old.parquet" in str(raised.value)
    assert store.state().seq == -1
    landed = ingest(store, BatchInput(edges=edges), replace(MAPPING, allow_old_times=True))
    assert landed.stats["time_range"] == [when, 1_700_000_000]


def test_times_after_a_day_from_now_are_refused_whatever_the_option(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    now = int(time.time())
    soon = put(store, "in/soon.parquet", day(["a"], ["x"], [now + 3_600], [1.0]))
    ingest(store, BatchInput(edges=soon), MAPPING)  # within a day of the clock: clock skew
    later = put(store, "in/later.parquet", day(["b"], ["y"], [now + 3 * 86_400], [1.0]))
    for mapping in (MAPPING, replace(MAPPING, allow_old_times=True)):
        with pytest.raises(DataError, match="a day from now") as raised:
            ingest(store, BatchInput(edges=later), mapping)
        assert "later.parquet" in str(raised.value) and "'ts'" in str(raised.value)
    assert len(store.state().batches) == 1


def test_allow_old_times_reaches_the_landing_zone_and_bc_ray_yaml(tmp_path):
    landing_yaml = tmp_path / "landing.yaml"
    landing_yaml.write_text("edges: /data/events\nuser_col: uid\nitem_col: sku\ntime_col: ts\n"
                            "allow_old_times: true\n")
    assert load_landing(None, str(landing_yaml)).mapping.allow_old_times is True
    landing_yaml.write_text("edges: /data/events\nuser_col: uid\nitem_col: sku\ntime_col: ts\n"
                            "allow_old_times: sometimes\n")
    with pytest.raises(ConfigError, match="allow_old_times: Input should be a valid boolean"):
        load_landing(None, str(landing_yaml))

    project = tmp_path / "bc_ray.yaml"
    project.write_text(yaml.safe_dump({"scheduler": {"landing": {
        "edges": "/data/events", "user_col": "uid", "item_col": "sku", "time_col": "ts",
        "allow_old_times": True}}}))
    loaded = config_file.apply(str(project), typer.main.get_command(app), environ={})
    assert loaded.defaults[("scheduler", "once")]["allow_old_times"] is True
    assert loaded.defaults[("scheduler", "run")]["allow_old_times"] is True


def test_the_time_window_follows_the_clock():
    from bc_ray.data.batch import OLDEST_TIME, TimeWindow

    window = TimeWindow.at_ingest(False, now=2_000_000_000)
    assert (window.low, window.high) == (OLDEST_TIME, 2_000_086_400)
    assert TimeWindow.at_ingest(True, now=2_000_000_000).low == 0
    assert abs(TimeWindow.at_ingest(False).high - (time.time() + 86_400)) < 60
    assert ColumnMapping("u", "i", "t").allow_old_times is False
