"""Serve's id index answers as the dict of Python objects it replaced (id -> last row holding
it), for integer and text ids, ids of the other kind, integers past int64, and text ids whose
hashes collide; an id spelled in the other kind (a decimal string, an integer) names the id it
spells."""

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


def _spelled(w: object, kind: type) -> object:
    """`w` as an id of `kind` where it spells one: "42" names 42, 42 names "42"."""
    digits = w[1:] if isinstance(w, str) and w.startswith("-") else w
    if kind is int and isinstance(w, str) and 0 < len(digits) <= 19 and \
            all(c in "0123456789" for c in digits):
        return int(w)
    if kind is str and type(w) is int:
        return str(w)
    return w


def _expected(ids: list, wanted: list) -> list[int]:
    """The dict's answers, with its one surprise removed: True == 1 in a dict, not an id."""
    index, kind = _as_dict(ids), type(ids[0])
    return [-1 if isinstance(w, bool) else
            index.get(_spelled(w, kind), -1) if type(_spelled(w, kind)) is kind else -1
            for w in wanted]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=60),
       extra=st.lists(st.one_of(st.integers(-2 ** 70, 2 ** 70), st.text(max_size=3),
                                st.integers(-999, 999).map(str),
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


def test_an_id_spelled_in_the_other_kind_names_the_id_it_spells():
    integers = IdIndex(pa.array([5, -6, 2 ** 63 - 1]))
    asked = ["5", "-6", "9223372036854775807", "05", "5.0", " 5", "+5", "\u0665",
             "9223372036854775808", "1" * 400]
    assert integers.rows(asked).tolist() == [0, 1, 2, 0, -1, -1, -1, -1, -1, -1]
    texts = IdIndex(pa.array(["5", "a", "-6"]))
    assert texts.rows([5, np.int64(5), -6, True, "a", 6]).tolist() == [0, 0, 2, -1, 1, -1]
