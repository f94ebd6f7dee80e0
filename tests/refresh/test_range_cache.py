"""Layer caches by node range (no Ray): rows cached by one cut of the nodes read back by
another, new entities zero, and the log's keys telling range caches from whole-entity ones."""

import numpy as np
import pytest

from bc_ray.refresh.range_cache import (
    CacheTarget,
    RangeCache,
    keeps_range_caches,
    merge_caches,
)
from bc_ray.exceptions import CorruptFileError
from bc_ray.store.state import TableRecord
from bc_ray.store.store import Store


def _table(entity: str, cache: dict) -> TableRecord:
    return TableRecord(version=0, entity=entity, refresh_id="r", files=[], rows=0, dim=4,
                       refreshed_at="", snapshot_id="s", cutoff=1.0, mode="full", cache=cache)


def test_rows_cached_by_one_cut_read_back_by_another(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    users, items = 7, 5
    layer = np.arange((users + items) * 4, dtype=np.float32).reshape(-1, 4)
    target = CacheTarget(store.uri, None, {"user": "t/user", "item": "t/item"}, users)
    written = merge_caches([target.write(2, layer[a:b], a, b)
                            for a, b in ((0, 3), (3, 9), (9, 12))])  # (3, 9) spans both
    assert sorted(written["user"]) == ["layer2@0", "layer2@3"]
    assert sorted(written["item"]) == ["layer2@0", "layer2@2"]
    tables = {e: _table(e, written[e]) for e in ("user", "item")}
    assert all(keeps_range_caches(t, 2) is False for t in tables.values())  # no layer 1
    assert keeps_range_caches(_table("user", {"layer1@0": None, **written["user"]}), 2)
    assert not keeps_range_caches(_table("user", {"layer1": None, "layer2": None}), 2)

    grown_users = users + 2  # two users arrived since: their rows are zeros
    cache = RangeCache.of(store, tables, 2, grown_users)
    grown = np.concatenate([layer[:users], np.zeros((2, 4), np.float32), layer[users:]])
    for start, stop in ((0, 14), (0, 5), (5, 11), (8, 9), (11, 14), (4, 4)):
        assert np.array_equal(cache.read(start, stop, 4), grown[start:stop])

    # A cache of another width, or changed since it was logged, is refused by name.
    with pytest.raises(CorruptFileError, match="not rows of 6 float32"):
        cache.read(0, 3, 6)
    path = tmp_path / "store" / written["item"]["layer2@2"].path
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CorruptFileError, match="sha256"):
        cache.read(10, 12, 4)
