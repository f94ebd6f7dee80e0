"""Issue 25, item 3 (the ingest part): a UInt64 id beyond Int64, a UInt64 time, or a feature
column of lists of lists was a polars traceback; `bc-ray data ingest` now refuses each with one
line naming the file and the column (exit 2), and the store is unchanged."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import MAPPING, REPO, day, put

HUGE = 2**64 - 1
EDGES = {"uid": ["a"], "sku": ["x"], "ts": [1_700_000_000], "stars": [1.0]}
CASES = {
    "uint64 user id": ({**EDGES, "uid": pl.Series([HUGE], dtype=pl.UInt64)}, None, "edges",
                       "uid", "9223372036854775807"),
    "uint64 item id": ({**EDGES, "sku": pl.Series([HUGE], dtype=pl.UInt64)}, None, "edges",
                       "sku", "9223372036854775807"),
    "uint64 time": ({**EDGES, "ts": pl.Series([HUGE], dtype=pl.UInt64)}, None, "edges", "ts",
                    "time values fall after"),
    "list of lists": (EDGES, {"sku": ["x"], "tags": [[["red"], ["big"]]]}, "items", "tags",
                      "feature lists must hold strings"),
    "uint64 item table id": (EDGES, {"sku": pl.Series([HUGE], dtype=pl.UInt64),
                                     "brand": ["b"]}, "items", "sku", "9223372036854775807"),
}


def _ingest_cli(store: Store, edges: str, items: str | None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store", store.uri,
               "--edges", edges, "--user-col", "uid", "--item-col", "sku", "--time-col", "ts",
               "--rating-col", "stars"] + (["--items", items] if items else [])
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("case", sorted(CASES))
def test_unrepresentable_values_are_one_line_naming_file_and_column(tmp_path, case):
    edges_frame, items_frame, role, column, fragment = CASES[case]
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/edges.parquet", pl.DataFrame(edges_frame))
    items = put(store, "in/items.parquet", pl.DataFrame(items_frame)) if items_frame else None
    result = _ingest_cli(store, edges, items)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{role}.parquet" in lines[0] and f"column '{column}'" in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert store.state().seq == -1


def test_unsigned_ids_within_int64_are_integer_ids(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    largest = 2**63 - 1
    path = put(store, "in/edges.parquet", day(pl.Series([largest, 5], dtype=pl.UInt64),
                                              pl.Series([1, 2], dtype=pl.UInt32),
                                              [1_700_000_000] * 2, [1.0, 2.0]))
    ingest(store, BatchInput(edges=path), MAPPING)
    users = load_snapshot(store).users
    assert users["id"].dtype == pl.Int64 and sorted(users["id"].to_list()) == [5, largest]
