"""`bc-ray data ingest` and `compact`: a team's own files into a real store (file:// and the local
S3 server), exactly once, with stable ids; every bad input refused with the store unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import DataError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.batches import compact
from bc_ray.store.maintenance import collect_garbage
from bc_ray.store.snapshots import advance_snapshot, load_snapshot, publish_snapshot
from bc_ray.store.store import RetentionPolicy, Store

MAPPING = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")
REPO = Path(__file__).resolve().parents[2]


def day(user, item, ts, stars=None) -> pl.DataFrame:
    frame = {"uid": user, "sku": item, "ts": ts}
    if stars is not None:
        frame["stars"] = stars
    return pl.DataFrame(frame)


def put(store: Store, rel: str, frame: pl.DataFrame) -> str:
    """Write a landing file into the store's bucket or folder (the way upstream jobs do)."""
    fmt = rel.rsplit(".", 1)[-1]
    local = store.io.path(rel)
    if store.io.scheme == "file":
        os.makedirs(os.path.dirname(local), exist_ok=True)
        frame.write_parquet(local) if fmt == "parquet" else frame.write_csv(local)
    else:
        with store.io.fs.open(local, "wb") as handle:
            frame.write_parquet(handle) if fmt == "parquet" else frame.write_csv(handle)
    return store.io.uri_of(rel)


def entity_ids(store: Store, entity: str) -> dict:
    table = load_snapshot(store).entities(entity)
    return dict(zip(table["id"].to_list(), table["idx"].to_list()))


def test_batches_grow_the_snapshot_with_stable_ids(store_uri):
    store = Store(store_uri)
    first = put(store, "in/d1.parquet", day(["ann", "bob", "ann"], ["x1", "x2", "x3"],
                                             [1_700_000_000, 1_700_000_100, 1_700_000_200],
                                             [5.0, 3.0, 4.0]))
    catalogue = put(store, "in/items1.parquet", pl.DataFrame({
        "sku": ["x1", "x2", "x3", "x9"], "brand": ["b1", "b2", "b1", "b3"],
        "tags": [["red", "big"], ["blue"], [], ["red"]]}))
    one = ingest(store, BatchInput(edges=first, items=catalogue), MAPPING)
    assert one.status == "ingested" and one.stats["new_items"] == 4  # x9 has no edge yet
    before_users, before_items = entity_ids(store, "user"), entity_ids(store, "item")
    vocab_before = load_snapshot(store).meta.features["item"]

    second = put(store, "in/d2.csv", day(["cat", "bob", "dan"], ["x9", "x4", "x1"],
                                          [1_700_000_300, 1_700_000_400, 1_600_000_000],
                                          [2.0, 1.0, 5.0]))
    update = put(store, "in/items2.csv", pl.DataFrame({"sku": ["x2", "x4"],
                                                        "brand": ["b9", "b4"]}))
    two = ingest(store, BatchInput(edges=second, items=update), MAPPING)
    assert two.stats["new_users"] == 2 and two.stats["new_items"] == 1
    assert two.stats["updated_items"] == 1 and two.stats["late_edges"] == 1

    snapshot = load_snapshot(store)
    users, items = entity_ids(store, "user"), entity_ids(store, "item")
    assert {k: users[k] for k in before_users} == before_users  # indices never move
    assert {k: items[k] for k in before_items} == before_items
    assert users["cat"] == 2 and users["dan"] == 3 and items["x4"] == 4  # first in the rows
    vocab = snapshot.meta.features["item"]
    for field, values in vocab_before.items():  # vocabularies only grow
        assert vocab[field][: len(values)] == values
    table = snapshot.items.sort("idx")
    brand = dict(zip(table["id"], table["brand"].to_list()))
    tags = dict(zip(table["id"], table["tags"].to_list()))
    assert vocab["brand"][brand["x2"][0]] == "b9"  # updated field replaced
    assert [vocab["tags"][c] for c in tags["x2"]] == ["blue"]  # other fields kept
    assert [vocab["tags"][c] for c in tags["x1"]] in (["red", "big"], ["big", "red"])
    assert snapshot.num_edges == 6 and snapshot.meta.cutoff == 1.0 and snapshot.grows
    assert snapshot.items.filter(pl.col("id") == "x9")["first_t"].item() is not None
    assert snapshot.present("item").all() and snapshot.present("user").all()


def test_items_announced_before_edges_are_present_without_first_time(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/d1.parquet", day([1, 2], [10, 11], [1_700_000_000, 1_700_000_050]))
    items = put(store, "in/items.parquet", pl.DataFrame({"sku": [10, 11, 12],
                                                         "genre": ["a", "b", "c"]}))
    ingest(store, BatchInput(edges=edges, items=items),
           ColumnMapping(user_col="uid", item_col="sku", time_col="ts"))
    snapshot = load_snapshot(store)
    assert snapshot.items["id"].dtype == pl.Int64 and snapshot.users["id"].dtype == pl.Int64
    row = snapshot.items.filter(pl.col("id") == 12)
    assert row["first_t"].item() is None and bool(snapshot.present("item")[row["idx"].item()])
    assert snapshot.edges["rating"].to_list() == [1.0, 1.0]  # no rating column: weight 1


def test_same_batch_twice_changes_nothing(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/d1.parquet", day(["a", "b"], ["x", "y"], [1_700_000_000] * 2,
                                             [1.0, 2.0]))
    first = ingest(store, BatchInput(edges=edges), MAPPING)
    seq = store.state().seq
    again = ingest(store, BatchInput(edges=edges), MAPPING)
    assert again.status == "already ingested" and again.batch_id == first.batch_id
    assert store.state().seq == seq
    with pytest.raises(DataError, match=f"which batch {first.batch_id} took"):
        ingest(store, BatchInput(edges=edges), MAPPING, batch_id="2026-11-22")  # same rows
    assert store.state().seq == seq
    other = put(store, "in/d2.parquet", day(["a"], ["z"], [1_700_000_100], [3.0]))
    named = ingest(store, BatchInput(edges=other), MAPPING, batch_id="2026-11-22")
    assert named.status == "ingested"
    assert ingest(store, BatchInput(edges=other), MAPPING,
                  batch_id="2026-11-22").status == "already ingested"


def test_cli_ingest_info_and_retry_exit_zero(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/dt=2026-11-22/part-0.csv", day(["a", "b"], ["x", "y"],
                                                          [1_700_000_000_000] * 2, [1, 2]))
    command = [sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store", store.uri,
               "--edges", str(Path(store.io.path("in")) / "*" / "*.csv"), "--user-col", "uid",
               "--item-col", "sku", "--time-col", "ts", "--rating-col", "stars",
               "--time-unit", "ms", "--json"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "ingested"
    retry = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert retry.returncode == 0 and json.loads(retry.stdout)["status"] == "already ingested"
    said = subprocess.run(command[:-1], capture_output=True, text=True, cwd=REPO).stdout
    assert "already in the store: nothing changed" in said  # and its times as dates, as info
    [shown] = [line.split() for line in said.splitlines() if line.startswith("time_range")]
    assert shown == ["time_range", "2023-11-14T22:13:20+00:00,", "2023-11-14T22:13:20+00:00"]
    info = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "data", "info", "--store",
                           store.uri, "--json"], capture_output=True, text=True, cwd=REPO)
    summary = json.loads(info.stdout)
    assert (summary["users"], summary["items"], summary["edges"], summary["batches"]) == \
        (2, 2, 2, 1)
    assert summary["time_range"][0].startswith("2023-11-14")
    [batch] = store.state().batches.values()  # the glob's file is recorded as the source
    assert [s.uri for s in batch.sources] == [edges.removeprefix("file://")]


BAD_INPUTS = {
    "missing column": (day(["a"], ["x"], [1_700_000_000]), "parquet",
                       "missing mapped column(s) ['stars']"),
    "null id": (day(["a", None], ["x", "y"], [1_700_000_000] * 2, [1.0, 2.0]), "parquet",
                "1 of 2 rows have a null or empty id"),
    "empty id": (day(["a", " "], ["x", "y"], [1_700_000_000] * 2, ["1", "2"]), "csv",
                 "1 of 2 rows have a null or empty id"),
    "bad time": (day(["a", "b"], ["x", "y"], ["2026-11-22", "yesterday"], ["1", "2"]), "csv",
                 "1 time values cannot be parsed as a date-time or a number (e.g. 'yesterday') "
                 "(file"),
    "zone and no zone": (day(["a", "b"], ["x", "y"], ["2026-01-05T12:00:00Z",
                                                      "2026-01-05T10:00:00"], ["1", "2"]),
                         "csv", "a file's text times share one format, its first date's"),
    "day or month first": (day(["a", "b"], ["x", "y"], ["2026-11-22", "05/11/2026 08:10"],
                                ["1", "2"]), "csv",
                           "1 time values are dates that start with the day and month as "
                           "numbers (e.g. '05/11/2026 08:10')"),
    "millis as seconds": (day(["a"], ["x"], [1_700_000_000_000], [1.0]), "parquet",
                          "milliseconds? pass --time-unit ms"),
    "text rating": (day(["a", "b"], ["x", "y"], ["1700000000"] * 2, ["4", "good"]), "csv",
                    "1 ratings are not finite numbers (e.g. 'good')"),
    "empty batch": (day([], [], [], []).cast({"uid": pl.String, "sku": pl.String,
                                             "ts": pl.Int64, "stars": pl.Float64}), "parquet",
                    "empty batch"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_and_nothing_is_committed(tmp_path, case):
    frame, fmt, message = BAD_INPUTS[case]
    store = Store(f"file://{tmp_path}/store")
    good = put(store, "in/good.parquet", day(["a"], ["x"], [1_700_000_000], [1.0]))
    ingest(store, BatchInput(edges=good), MAPPING)
    before = store.state()
    path = put(store, f"in/bad.{fmt}", frame)
    with pytest.raises(DataError) as raised:
        ingest(store, BatchInput(edges=path), MAPPING)
    text = str(raised.value)
    assert message in text and "bad." in text, text
    after = store.state()
    assert after.seq == before.seq and after.batches == before.batches
    assert store.io.list_dir("batches") == [before.segments[0].files["edges"].path.split("/")[1]]


def test_text_times_that_say_their_order_are_read(tmp_path):
    """Dates that start with the year, with or without a zone, and numbers written as text:
    only dates led by day and month numbers are refused."""
    store = Store(f"file://{tmp_path}/store")
    times = ["2026/11/05", "2026-11-05T08:10:00Z", "1700000000", "1700000000.5"]
    for user, when in zip("abcd", times):  # a column's dates share one format: one a file
        path = put(store, f"in/{user}.csv", day([user], ["x"], [when], [1]))
        ingest(store, BatchInput(edges=path), MAPPING)
    edges = load_snapshot(store).edges.sort("user_idx")
    assert edges["timestamp"].to_list() == [1_793_836_800, 1_793_866_200, 1_700_000_000,
                                            1_700_000_000]


def test_files_that_are_not_parquet_or_csv_are_refused(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    json_file = tmp_path / "events.json"
    json_file.write_text("{}")
    fake = tmp_path / "events.parquet"
    fake.write_text("not parquet at all")
    for path, message in ((json_file, "not a Parquet or CSV file"),
                          (fake, "cannot read as parquet"),
                          (tmp_path / "missing.csv", "no such file or folder")):
        with pytest.raises(DataError, match=message) as raised:
            ingest(store, BatchInput(edges=str(path)), MAPPING)
        assert str(path) in str(raised.value)
    assert store.state().seq == -1


def test_duplicates_within_a_batch_are_dropped_and_counted(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    path = put(store, "in/d.parquet", day(["a", "a", "a"], ["x", "x", "x"],
                                          [1_700_000_000, 1_700_000_000, 1_700_000_500],
                                          [1.0, 1.0, 2.0]))
    outcome = ingest(store, BatchInput(edges=path), MAPPING)
    assert outcome.stats["rows_read"] == 3 and outcome.stats["duplicates_dropped"] == 1
    assert outcome.stats["edges"] == 2


def test_id_type_mismatch_with_the_store_is_refused(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    ingest(store, BatchInput(edges=put(store, "in/a.parquet", day([1], [2], [1_700_000_000],
                                                                  [1.0]))), MAPPING)
    with pytest.raises(DataError, match="external ids keep their type"):
        ingest(store, BatchInput(edges=put(store, "in/b.parquet",
                                           day(["u1"], [2], [1_700_000_000], [1.0]))), MAPPING)
    # CSV text that parses as integers joins integer ids.
    csv = put(store, "in/c.csv", day([1, 7], [2, 3], [1_700_000_100] * 2, [1.0, 1.0]))
    assert ingest(store, BatchInput(edges=csv), MAPPING).stats["new_users"] == 1


def test_replayed_snapshots_do_not_take_batches_and_grown_ones_do_not_advance(tmp_path,
                                                                              small_snapshot):
    replay = Store(f"file://{tmp_path}/replay")
    publish_snapshot(replay, small_snapshot.with_cutoff(0.5))
    edges = put(replay, "in/a.parquet", day(["a"], ["x"], [1_700_000_000], [1.0]))
    with pytest.raises(DataError, match="does not grow by ingestion"):
        ingest(replay, BatchInput(edges=edges), MAPPING)
    grown = Store(f"file://{tmp_path}/grown")
    ingest(grown, BatchInput(edges=edges), MAPPING)
    with pytest.raises(DataError, match="grows by ingestion"):
        advance_snapshot(grown, 0.9)


def test_two_processes_ingesting_at_once_both_land_once(store_uri):
    store = Store(store_uri)
    paths = [put(store, f"in/p{k}.parquet",
                 day([f"u{k}-{i}" for i in range(50)], [f"i{k}-{i % 7}" for i in range(50)],
                     [1_700_000_000 + i for i in range(50)], [1.0] * 50)) for k in range(2)]
    script = ("import sys; from bc_ray.store.store import Store; "
              "from bc_ray.ingest.batch import ingest; "
              "from bc_ray.ingest.read import BatchInput; "
              "from bc_ray.data.mapping import ColumnMapping; "
              "print(ingest(Store(sys.argv[1]), BatchInput(edges=sys.argv[2]), "
              "ColumnMapping('uid', 'sku', 'ts', 'stars')).status)")
    outputs = []

    def run(path: str) -> None:
        outputs.append(subprocess.run([sys.executable, "-c", script, store_uri, path],
                                      capture_output=True, text=True, cwd=REPO, env=os.environ))

    threads = [threading.Thread(target=run, args=(p,)) for p in paths]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(o.returncode == 0 for o in outputs), [o.stderr[-2000:] for o in outputs]
    state = store.state()
    assert sorted(b.ordinal for b in state.batches.values()) == [0, 1]
    snapshot = load_snapshot(store)
    assert snapshot.num_users == 100 and snapshot.num_items == 14 and snapshot.num_edges == 100
    assert snapshot.users["id"].n_unique() == 100  # no index handed out twice


# The same batch as `bc-ray data ingest` below, killed once every file is written.
KILLED_INGEST = """
import os, signal, sys
from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.store import Store
ingest(Store(sys.argv[1]), BatchInput(edges=sys.argv[2]),
       ColumnMapping("uid", "sku", "ts", "stars"),
       before_commit=lambda: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_killed_ingest_leaves_the_store_unchanged_and_the_retry_lands_once(tmp_path):
    store = Store(f"file://{tmp_path}/store", retention=RetentionPolicy(staging_grace_seconds=0))
    edges = put(store, "in/d.parquet", day(["a", "b"], ["x", "y"], [1_700_000_000] * 2,
                                           [1.0, 2.0]))
    command = [sys.executable, "-m", "bc_ray.cli.main", "data", "ingest", "--store", store.uri,
               "--edges", edges, "--user-col", "uid", "--item-col", "sku", "--time-col", "ts",
               "--rating-col", "stars"]
    killed = subprocess.run([sys.executable, "-c", KILLED_INGEST, store.uri, edges],
                            capture_output=True, cwd=REPO)
    assert killed.returncode == -9
    assert store.state().seq == -1 and store.io.list_dir("batches")  # files, no commit
    retry = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert retry.returncode == 0, retry.stderr
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert "already in the store" in again.stdout
    state = store.state()
    assert len(state.batches) == 1 and load_snapshot(store).num_edges == 2
    assert len(collect_garbage(store, grace_seconds=0, force=True)) == 1  # the killed writer


def test_compact_merges_files_and_keeps_every_snapshot_readable(store_uri):
    store = Store(store_uri, retention=RetentionPolicy(staging_grace_seconds=0))
    for k in range(6):
        users = [f"u{k}", f"u{k + 1}"]
        path = put(store, f"in/d{k}.parquet", day(users, [f"i{k % 3}", f"i{k}"],
                                                  [1_700_000_000 + 10 * k] * 2, [1.0, 2.0]))
        items = put(store, f"in/items{k}.parquet", pl.DataFrame(
            {"sku": [f"i{k}"], "brand": [f"b{k % 2}"]}))
        ingest(store, BatchInput(edges=path, items=items), MAPPING)
    state = store.state()
    third = load_snapshot(store, "ingested-000003")
    latest = load_snapshot(store)
    summary = compact(store, target_rows=8)
    assert summary["segments_before"] == 6 and summary["segments_after"] == 2
    assert load_snapshot(store).edges.equals(latest.edges)
    assert load_snapshot(store).items.equals(latest.items)
    assert load_snapshot(store, "ingested-000003").users.equals(third.users)
    # The replaced files are garbage now and go at the next retention pass (grace 0 here).
    old = {f.path for s in state.segments for f in s.files.values()}
    assert not any(store.io.exists(p) for p in old)
    assert compact(store, target_rows=8)["merged"] == 0  # nothing left to merge


def test_exact_duplicates_match_a_plain_first_keeping_unique():
    import numpy as np

    from bc_ray.data.batch import drop_exact_duplicates

    rng = np.random.default_rng(3)
    for rows in (0, 1, 50, 2_000):
        frame = pl.DataFrame({"u": rng.integers(0, 20, rows), "i": rng.integers(0, 5, rows),
                              "t": rng.integers(0, 3, rows), "r": rng.random(rows)})
        expected = frame.unique(subset=["u", "i", "t"], keep="first", maintain_order=True)
        assert drop_exact_duplicates(frame, ["u", "i", "t"]).equals(expected)
    for seed in range(40):  # one repeated row among distinct ones: whatever its hash value
        rng = np.random.default_rng(seed)
        frame = pl.DataFrame({"u": rng.permutation(30), "i": rng.integers(0, 9, 30),
                              "t": rng.integers(0, 10**9, 30), "r": rng.random(30)})
        repeated = pl.concat([frame, frame[int(rng.integers(0, 30))]])
        assert drop_exact_duplicates(repeated, ["u", "i", "t"]).equals(frame)


@pytest.mark.parametrize("ids", [
    [7, 9, 7, 8, 12, 9],  # a compact range: the direct-address table
    [5, 10**15, 5, -3, 10**15],  # a sparse range: the hash lookup
    ["b", "a", "b", "c"],  # text ids
])
def test_map_ids_gives_every_id_its_index_whatever_the_path(ids):
    from bc_ray.data.assign import map_ids

    distinct = list(dict.fromkeys(ids))
    # the index also holds ids outside the batch's range, which must not disturb the lookup
    known = distinct + ([10**6, -10**6] if isinstance(ids[0], int) else ["zz"])
    index = pl.DataFrame({"idx": list(range(100, 100 + len(known)))[::-1], "id": known})
    expected = dict(zip(index["id"], index["idx"]))
    mapped = map_ids(pl.Series("user_id", ids), index)
    assert mapped.to_list() == [expected[i] for i in ids]
    assert mapped.dtype == pl.Int32
