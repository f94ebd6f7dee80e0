"""Serve's id index answers as the dict of Python objects it replaced (id -> last row holding
it), for integer and text ids, ids of the other kind, integers past int64, and text ids whose
hashes collide."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bc_ray.serve import id_index
from bc_ray.serve.id_index import IdIndex


def _as_dict(ids: list) -> dict:
    return {value: row for row, value in enumerate(ids)}


def _expected(ids: list, wanted: list) -> list[int]:
    """The dict's answers, with its one surprise removed: True == 1 in a dict, not an id."""
    index = _as_dict(ids)
    return [-1 if isinstance(w, bool) else index.get(w, -1) if type(w) is type(ids[0]) else -1
            for w in wanted]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=60),
       extra=st.lists(st.one_of(st.integers(-2 ** 70, 2 ** 70), st.text(max_size=3),
                                st.booleans()), max_size=20))
def test_integer_ids_answer_as_the_dict(ids, extra):
    wanted = ids[::2] + extra
    rows = IdIndex(pa.array(ids, pa.int64())).rows(wanted)
    assert rows.tolist() == _expected(ids, wanted)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.text(max_size=4), min_size=1, max_size=60),
       extra=st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=20))
def test_text_ids_answer_as_the_dict(ids, extra):
    wanted = ids[1::2] + extra
    rows = IdIndex(pa.array(ids, pa.string())).rows(wanted)
    assert rows.tolist() == _expected(ids, wanted)


def test_text_ids_whose_keys_collide_still_find_their_own_rows(monkeypatch):
    real = id_index._text_keys
    monkeypatch.setattr(id_index, "_text_keys", lambda ids: real(ids) % np.uint64(3))
    ids = [f"user-{i}" for i in range(40)] + ["user-7"]
    index = IdIndex(pa.array(ids))
    assert len(np.unique(index.keys)) == 3  # every key shared by a dozen ids
    wanted = ["user-0", "user-7", "user-39", "user-40", "", 7]
    assert index.rows(wanted).tolist() == [0, 40, 39, -1, -1, -1]


def test_an_empty_request_and_other_id_types():
    assert IdIndex(pa.array([5, 6])).rows([]).tolist() == []
    assert IdIndex(pa.array([5, 6], pa.int32())).rows([6, 5, 2 ** 40]).tolist() == [1, 0, -1]
    with pytest.raises(TypeError, match="integers or text"):
        IdIndex(pa.array([1.5]))


def test_numpy_integers_are_ids_and_wider_integer_tables_are_cast_or_refused():
    index = IdIndex(pa.array([5, 6], pa.int64()))
    assert index.rows([np.int64(6), np.int32(5), np.uint64(2 ** 64 - 1), np.bool_(True)]
                      ).tolist() == [1, 0, -1, -1]
    assert IdIndex(pa.array([7, 2 ** 40], pa.uint64())).rows([2 ** 40, -1]).tolist() == [1, -1]
    with pytest.raises(TypeError, match="fit int64"):
        IdIndex(pa.array([2 ** 64 - 1], pa.uint64()))


def test_a_text_id_no_table_can_hold_is_unknown_not_an_error():
    assert IdIndex(pa.array(["a", "b"])).rows(["b", "\ud800", "a"]).tolist() == [1, -1, 0]
