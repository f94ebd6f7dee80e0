"""The landing zone: every landed file is ingested once, one batch per file or partition folder;
a late file in an old partition is picked up, a rewritten one is reported, a bad one is reported
while the others land (real files, real store)."""

from __future__ import annotations

import time

import polars as pl
import pytest

from bc_ray.cli.landing_options import load_landing
from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import ConfigError
from bc_ray.ingest.landing import LandingConfig, ingest_landing, pending
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import day, put

MAPPING = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")


def _landing(store: Store) -> LandingConfig:
    return LandingConfig(edges=store.io.uri_of("landing/events"), mapping=MAPPING,
                         items=store.io.uri_of("landing/items"), settle_seconds=0)


def test_each_partition_and_loose_file_is_one_batch_taken_once(store_uri):
    store = Store(store_uri)
    put(store, "landing/events/dt=2026-11-21/part-0.parquet",
        day(["a", "b"], ["x", "y"], [1_700_000_000] * 2, [1.0, 2.0]))
    put(store, "landing/events/dt=2026-11-21/part-1.parquet",
        day(["c"], ["x"], [1_700_000_100], [3.0]))
    put(store, "landing/events/dt=2026-11-22/part-0.csv",
        day(["a", "d"], ["z", "x"], [1_700_086_400] * 2, [4.0, 5.0]))
    put(store, "landing/events/dt=2026-11-22/_SUCCESS.parquet", day(["q"], ["q"], [1], [1.0]))
    put(store, "landing/items/catalogue.parquet",
        pl.DataFrame({"sku": ["x", "y", "z", "w"], "brand": ["b1", "b2", "b1", "b3"]}))
    config = _landing(store)
    plan = pending(config, store.state())
    assert [len(b.files["edges"]) for b in plan.batches] == [2, 1]
    assert plan.report.changed == [] and list(plan.catalogue) == ["items"]

    report = ingest_landing(store, config)
    assert [r["status"] for r in report.taken] == ["ingested", "ingested"]
    assert report.taken[0]["files"][-1].endswith("catalogue.parquet")
    snapshot = load_snapshot(store)
    assert (snapshot.num_users, snapshot.num_items, snapshot.num_edges) == (4, 4, 5)
    assert ingest_landing(store, config).taken == []  # nothing new

    # A late file in an old partition is a batch of its own; a rewritten file is reported.
    put(store, "landing/events/dt=2026-11-21/part-2.parquet",
        day(["e"], ["y"], [1_700_000_200], [1.0]))
    time.sleep(1.1)  # a new mtime locally, a new ETag on S3
    put(store, "landing/events/dt=2026-11-22/part-0.csv",
        day(["a", "d", "f"], ["z", "x", "y"], [1_700_086_400] * 3, [4.0, 5.0, 1.0]))
    late = ingest_landing(store, config)
    assert [r["batch"].rsplit("/", 1)[-1] for r in late.taken] == ["dt=2026-11-21"]
    assert [c["file"] for c in late.changed] == [store.io.uri_of(
        "landing/events/dt=2026-11-22/part-0.csv").removeprefix("file://")]
    assert load_snapshot(store).num_users == 5
    assert len(store.state().batches) == 3


def test_a_bad_landed_file_is_reported_and_the_others_land(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    put(store, "landing/events/a.parquet", day(["a"], ["x"], [1_700_000_000], [1.0]))
    put(store, "landing/events/b.parquet", day([None], ["x"], [1_700_000_000], [1.0]))
    put(store, "landing/events/c.parquet", day(["c"], ["y"], [1_700_000_100], [2.0]))
    report = ingest_landing(store, _landing(store))
    assert len(report.taken) == 2 and len(report.refused) == 1
    assert "null or empty id" in report.refused[0]["error"]
    assert report.refused[0]["batch"].endswith("b.parquet")
    assert len(store.state().batches) == 2


def test_landing_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "landing.yaml"
    path.write_text("edges: s3://bucket/events\nuser_col: uid\nitem_col: sku\ntime_col: ts\n"
                    "time_unit: ms\n")
    config = load_landing(None, str(path), time_col="event_time", rating_col=None)
    assert config.edges == "s3://bucket/events"
    assert (config.mapping.time_col, config.mapping.time_unit) == ("event_time", "ms")
    path.write_text("edges: here\nuser_column: uid\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_landing(None, str(path))
    with pytest.raises(ConfigError, match="needs"):
        load_landing("s3://bucket/events", None, user_col="u")
