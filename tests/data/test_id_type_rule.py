"""Issue 25, item 7: distinct external ids are never merged. CSV text is an integer id only when
every id of that entity in the batch is a canonical integer (no sign, no leading zero); a Parquet
column keeps its type; a batch whose id type does not match the store's is refused naming the
file."""

from __future__ import annotations

import polars as pl
import pytest

from bc_ray.exceptions import DataError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from tests.data.test_ingest import MAPPING, day, put

T = 1_700_000_000


def _users(store: Store) -> list:
    return load_snapshot(store).users.sort("idx")["id"].to_list()


def _refused(store: Store, request: BatchInput, *fragments: str) -> str:
    before = store.state()
    with pytest.raises(DataError) as raised:
        ingest(store, request, MAPPING)
    message = str(raised.value)
    assert all(f in message for f in fragments), message
    after = store.state()
    assert after.seq == before.seq and after.batches == before.batches
    return message


@pytest.mark.parametrize("ids, extra", [(["007", "7", "+7"], []), (["007", "7", "+7"], ["0x1"])])
def test_csv_ids_that_are_not_all_canonical_integers_stay_distinct_text(tmp_path, ids, extra):
    store = Store(f"file://{tmp_path}/store")
    users = ids + extra
    path = put(store, "in/d.csv", day(users, [f"i{k}" for k in range(len(users))],
                                      [T] * len(users), [1.0] * len(users)))
    ingest(store, BatchInput(edges=path), MAPPING)
    assert _users(store) == users  # one more row never changes what the others are


def test_csv_ids_that_are_all_canonical_integers_are_integers(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    path = put(store, "in/d.csv", day(["7", "0", "120"], ["a", "b", "c"], [T] * 3, [1.0] * 3))
    ingest(store, BatchInput(edges=path), MAPPING)
    assert _users(store) == [7, 0, 120]
    # Integer-like text joins the integer store; text that is not canonical is refused by name.
    more = put(store, "in/more.csv", day(["7", "8"], ["a", "d"], [T + 1] * 2, [1.0] * 2))
    assert ingest(store, BatchInput(edges=more), MAPPING).stats["new_users"] == 1
    for name, value in (("zero", "007"), ("plus", "+7"), ("hex", "0x1")):
        path = put(store, f"in/{name}.csv", day([value, "9"], ["a", "a"], [T + 2] * 2, [1.0] * 2))
        _refused(store, BatchInput(edges=path), f"{name}.csv", repr(value), "'uid'",
                 "store's user ids are integers")
    assert _users(store) == [7, 0, 120, 8]


def test_parquet_text_ids_keep_their_type_and_are_refused_by_an_integer_store(store_uri):
    store = Store(store_uri)
    ingest(store, BatchInput(edges=put(store, "in/a.parquet", day([7, 8], ["a", "b"], [T] * 2,
                                                                  [1.0] * 2))), MAPPING)
    for name, value in (("padded", "007"), ("plain", "7")):
        path = put(store, f"in/{name}.parquet", day([value], ["a"], [T + 1], [1.0]))
        _refused(store, BatchInput(edges=path), f"{name}.parquet", "'uid'",
                 "store's user ids are integers")
    assert _users(store) == [7, 8]


def test_csv_text_joins_a_text_store_as_text(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    ingest(store, BatchInput(edges=put(store, "in/a.parquet", day(["007", "u1"], ["a", "b"],
                                                                  [T] * 2, [1.0] * 2))), MAPPING)
    integer_like = put(store, "in/b.csv", day(["7", "12"], ["a", "a"], [T + 1] * 2, [1.0] * 2))
    assert ingest(store, BatchInput(edges=integer_like), MAPPING).stats["new_users"] == 2
    padded = put(store, "in/c.csv", day(["007"], ["b"], [T + 2], [1.0]))
    assert ingest(store, BatchInput(edges=padded), MAPPING).stats["new_users"] == 0
    assert _users(store) == ["007", "u1", "7", "12"]
    numbers = put(store, "in/d.parquet", day([7], ["a"], [T + 3], [1.0]))
    _refused(store, BatchInput(edges=numbers), "d.parquet", "store's user ids are text")


def test_the_rule_covers_every_file_of_the_batch(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    edges = put(store, "in/edges.csv", day(["7", "8"], ["1", "2"], [T] * 2, [1.0] * 2))
    items = put(store, "in/items.csv", pl.DataFrame({"sku": ["1", "02"], "brand": ["b", "c"]}))
    ingest(store, BatchInput(edges=edges, items=items), MAPPING)
    snapshot = load_snapshot(store)
    assert snapshot.users["id"].dtype == pl.Int64  # users: every id canonical
    assert snapshot.items.sort("idx")["id"].to_list() == ["1", "2", "02"]  # "02" keeps all text


def test_a_batch_mixing_typed_integers_and_non_canonical_text_is_refused(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    folder = str(tmp_path / "store" / "in")
    put(store, "in/typed.parquet", day([7], ["a"], [T], [1.0]))
    put(store, "in/padded.csv", day(["007"], ["b"], [T], [1.0]))
    _refused(store, BatchInput(edges=folder), "padded.csv", "'007'", "integers in other files")
    assert store.state().seq == -1
    put(store, "in/padded.csv", day(["9"], ["b"], [T], [1.0]))
    ingest(store, BatchInput(edges=folder), MAPPING)
    assert sorted(_users(store)) == [7, 9]
    put(store, "in/more/text.parquet", day(["u1"], ["b"], [T], [1.0]))
    numbers = put(store, "in/more/x.parquet", day([3], ["b"], [T], [1.0]))
    _refused(store, BatchInput(edges=f"{folder}/more"), "text.parquet", "integers in",
             numbers.removeprefix("file://"))
