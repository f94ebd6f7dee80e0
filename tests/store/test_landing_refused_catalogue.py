"""A users/items catalogue refused while its interactions landed without it is never recorded
as taken: not in the report's taken files, not noted as already ingested. Once fixed, the same
catalogue file rides with the next batch of interactions (nothing is lost)."""

from __future__ import annotations

import polars as pl

from bc_ray.ingest.landing import LandingConfig, ingest_landing
from bc_ray.store.store import Store
from tests.store.landing_helpers import MAPPING, ZONE, encoded, rows, write

ITEMS = "landing/items/catalogue.parquet"


def _catalogue(tags: list) -> bytes:
    return encoded(pl.DataFrame({"sku": ["i0", "i1"], "tags": tags}), ".parquet")


def test_a_refused_catalogue_is_not_taken_and_lands_once_fixed(store_uri):
    store = Store(store_uri)
    config = LandingConfig(edges=store.io.uri_of(ZONE), mapping=MAPPING,
                           items=store.io.uri_of("landing/items"), settle_seconds=0)
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 10), ".parquet"))
    write(store, ITEMS, _catalogue([[["a", "b"]], [["c"]]]))  # a catalogue no store reads
    report = ingest_landing(store, config)
    catalogue_uri = store.io.uri_of(ITEMS).removeprefix("file://")
    assert [t["status"] for t in report.taken] == ["ingested"]
    assert catalogue_uri not in report.taken[0]["files"]
    assert [r["file"] for r in report.refused] == [catalogue_uri]
    assert all(n.role == "edges" for n in store.state().landing.values())

    write(store, ITEMS, _catalogue([["a", "b"], ["c"]]))  # fixed upstream
    write(store, f"{ZONE}/dt=2026-11-23/part-0.parquet", encoded(rows(10, 10), ".parquet"))
    fixed = ingest_landing(store, config)
    assert fixed.refused == [] and fixed.changed == []
    assert [t["status"] for t in fixed.taken] == ["ingested"]
    assert catalogue_uri in fixed.taken[0]["files"]


def test_a_bad_catalogue_file_is_refused_alone_and_its_good_neighbour_rides(store_uri):
    """Two users tables land beside a batch; one has a float feature: it alone is refused,
    under its own name, and the other rides with the batch."""
    store = Store(store_uri)
    config = LandingConfig(edges=store.io.uri_of(ZONE), mapping=MAPPING,
                           items=store.io.uri_of("landing/items"), settle_seconds=0)
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 10), ".parquet"))
    write(store, "landing/items/a.parquet", _catalogue([["a"], ["b"]]))
    write(store, "landing/items/b.parquet",
          encoded(pl.DataFrame({"sku": ["i2"], "price": [9.5]}), ".parquet"))
    report = ingest_landing(store, config)
    good, bad = (store.io.uri_of(f"landing/items/{n}.parquet").removeprefix("file://")
                 for n in "ab")
    assert [r["file"] for r in report.refused] == [bad]
    assert "numeric" in report.refused[0]["error"] and bad in report.refused[0]["error"]
    assert [t["status"] for t in report.taken] == ["ingested"]
    assert good in report.taken[0]["files"] and bad not in report.taken[0]["files"]
