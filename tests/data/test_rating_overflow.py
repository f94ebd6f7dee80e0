"""Issue 25, item 2: a rating that float32 cannot hold (1e300 passes a float64 finite check and
becomes inf after the cast) is refused naming the file and column; the snapshot meta never gets a
null or infinite rating range, and the store keeps taking batches."""

from __future__ import annotations

import math

import orjson
import polars as pl
import pytest

from bc_ray.exceptions import DataError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import MAPPING, day, put


def _meta(store: Store) -> dict:
    record = store.state().snapshot()
    return orjson.loads(store.get(record.files["meta"]))


@pytest.mark.parametrize("rating, fmt", [
    ("1e300", "csv"), ("-1e300", "csv"), (1e300, "parquet"), (3.5e38, "parquet")])
def test_a_rating_beyond_float32_is_refused_and_the_store_keeps_working(store_uri, rating, fmt):
    store = Store(store_uri)
    ingest(store, BatchInput(edges=put(store, "in/good.parquet",
                                       day(["a"], ["x"], [1_700_000_000], [4.0]))), MAPPING)
    before = store.state()
    stars = ["2", rating] if fmt == "csv" else [2.0, rating]
    bad = put(store, f"in/huge.{fmt}", day(["b", "c"], ["x", "y"], [1_700_000_100] * 2, stars))
    with pytest.raises(DataError) as raised:
        ingest(store, BatchInput(edges=bad), MAPPING)
    message = str(raised.value)
    assert "32-bit float" in message and "huge." in message and "'stars'" in message, message
    after = store.state()
    assert after.seq == before.seq and after.batches == before.batches

    meta = _meta(store)
    assert math.isfinite(meta["rating_low"]) and math.isfinite(meta["rating_high"])
    later = put(store, "in/later.parquet", day(["d"], ["z"], [1_700_000_200], [1.0]))
    assert ingest(store, BatchInput(edges=later), MAPPING).status == "ingested"
    assert (_meta(store)["rating_low"], _meta(store)["rating_high"]) == (1.0, 4.0)
    assert load_snapshot(store).edges["rating"].is_finite().all()


def test_the_largest_float32_rating_is_kept(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    largest = float(pl.Series([3.4028234e38], dtype=pl.Float32)[0])
    path = put(store, "in/big.parquet", day(["a"], ["x"], [1_700_000_000], [largest]))
    ingest(store, BatchInput(edges=path), MAPPING)
    assert _meta(store)["rating_high"] == largest
