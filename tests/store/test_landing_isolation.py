"""One bad landed file is that file's reported failure, whatever goes wrong reading or
validating it: the good partitions after it land, and a bad catalogue does not hold back the
interactions it would have ridden with."""

from __future__ import annotations

import polars as pl

from bc_ray.ingest.landing import LandingConfig, ingest_landing
from bc_ray.store.store import Store
from tests.store.landing_helpers import MAPPING, ZONE, encoded, ingested_edges, rows, write

ITEMS = "landing/items/catalogue.parquet"


def _huge_ids() -> pl.DataFrame:
    """A UInt64 id no Int64 holds."""
    return rows(0, 3).with_columns(pl.Series("uid", [2**64 - 1, 1, 2], dtype=pl.UInt64))


def test_bad_partitions_and_a_bad_catalogue_are_reported_and_the_rest_lands(store_uri):
    store = Store(store_uri)
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 10), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", encoded(_huge_ids(), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-23/part-0.parquet", encoded(rows(10, 10), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-24/part-0.parquet", b"PAR1 not really parquet PAR1")
    write(store, f"{ZONE}/dt=2026-11-25/part-0.parquet", encoded(rows(20, 10), ".parquet"))
    write(store, ITEMS, encoded(pl.DataFrame({"sku": ["i0", "i1"],
                                              "tags": [[["a", "b"]], [["c"]]]}), ".parquet"))
    config = LandingConfig(edges=store.io.uri_of(ZONE), mapping=MAPPING,
                           items=store.io.uri_of("landing/items"), settle_seconds=0)

    report = ingest_landing(store, config)
    assert [t["batch"].rsplit("/", 1)[-1] for t in report.taken] == \
        ["dt=2026-11-21", "dt=2026-11-23", "dt=2026-11-25"]
    refused = {r["batch"].rsplit("/", 1)[-1]: r["error"] for r in report.refused}
    assert set(refused) == {"catalogue.parquet", "dt=2026-11-22", "dt=2026-11-24"}
    assert all(error and "\n" not in error for error in refused.values())
    assert ingested_edges(store) == 30

    again = ingest_landing(store, config)  # still reported, still nothing else disturbed
    assert again.taken == [] and len(again.refused) == 2
    assert {s["reason"] for s in again.skipped} == {"waiting for new interactions to ride with"}
