"""External id -> row of a served table, in 12 bytes an id: the ids' keys sorted (8 bytes) and
the row each came from (4), searched per request.

A dict of Python objects took 95 bytes an id and 3.7 s to build (1 GB for the 11M
entities of the 100M-interaction store). Integer ids are their own keys; text ids are keyed by
a 64-bit hash (polars'), and a key's candidate rows are checked against the ids themselves, so a
collision can cost a comparison, never a wrong row. A table that holds an id twice answers with
its last row, as the dict did.

An id may be spelled in the other kind: a decimal string names an integer id (clients whose
JSON numbers stop at 2^53 send 64-bit ids as text, as protobuf's JSON mapping does), and an
integer names the text id that is its decimal spelling.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
DECIMAL = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only; int64 has at most 19


class IdIndex:
    """Rows of a table's ids (integer or text), looked up a request at a time."""

    def __init__(self, ids: pa.Array) -> None:
        self.ids = ids
        self.text = pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)
        if not self.text and not pa.types.is_integer(ids.type):
            raise TypeError(f"ids must be integers or text, not {ids.type}")
        if not self.text and ids.type != pa.int64():
            try:  # a store's ids are int64 or text; others are cast, never wrapped
                ids = ids.cast(pa.int64())
            except pa.ArrowInvalid as exc:
                raise TypeError(f"integer ids must fit int64: {exc}") from exc
            self.ids = ids
        keys = _text_keys(ids) if self.text else ids.to_numpy().astype(np.int64, copy=False)
        order = np.argsort(keys, kind="stable")  # equal keys keep their rows' order
        self.keys = keys[order]
        self.rows_in_order = order.astype(np.int32 if len(order) < 2 ** 31 else np.int64)

    def rows(self, wanted: list) -> np.ndarray:
        """The row of each wanted id, -1 for ids the table does not hold (text that spells no
        integer asked of integer ids, and text no UTF-8 table can hold, included)."""
        rows = np.full(len(wanted), -1, dtype=np.int64)
        wanted = self._in_kind(wanted)
        usable, values = self._usable(wanted)
        if not len(values):
            return rows
        keys = _text_keys(pa.array(values, pa.large_string())) if self.text \
            else np.asarray(values, dtype=np.int64)
        last = np.searchsorted(self.keys, keys, side="right") - 1
        hit = last >= 0
        hit[hit] = self.keys[last[hit]] == keys[hit]
        found = usable[hit]
        rows[found] = self.rows_in_order[last[hit]]
        if self.text:
            self._check_text(rows, found, last[hit], keys[hit], wanted)
        return rows

    def _in_kind(self, wanted: list) -> list:
        """Ids spelled in the other kind, as this table's kind (left as they are where they
        spell none of it)."""
        if self.text:
            if all(isinstance(value, str) for value in wanted):
                return wanted
            return [str(int(value)) if _integer(value) else value for value in wanted]
        if not any(isinstance(value, str) for value in wanted):
            return wanted
        return [int(value) if isinstance(value, str) and DECIMAL.fullmatch(value) else value
                for value in wanted]

    def _usable(self, wanted: list) -> tuple[np.ndarray, list | np.ndarray]:
        """(positions, values) of the wanted ids of this table's kind."""
        if self.text:
            kind_ok = [isinstance(value, str) and _encodable(value) for value in wanted]
        elif set(map(type, wanted)) == {int}:
            try:  # every id an integer within int64: the usual request, checked in C
                return np.arange(len(wanted)), np.array(wanted, dtype=np.int64)
            except OverflowError:
                kind_ok = [INT64_MIN <= value <= INT64_MAX for value in wanted]
        else:  # numpy's integers too, as the dict found them; never bools
            kind_ok = [_integer(value) and INT64_MIN <= int(value) <= INT64_MAX
                       for value in wanted]
        positions = np.flatnonzero(kind_ok)
        return positions, [wanted[i] for i in positions.tolist()]

    def _check_text(self, rows: np.ndarray, found: np.ndarray, last: np.ndarray,
                    keys: np.ndarray, wanted: list) -> None:
        """Text ids whose key matched: the row's id must be the one asked; on a mismatch (two
        ids of one key) the other rows of that key are tried, last first."""
        if not len(found):
            return
        stored = self.ids.take(pa.array(rows[found])).to_pylist()
        for j, (position, held) in enumerate(zip(found.tolist(), stored)):
            if held == wanted[position]:
                continue
            rows[position] = -1
            slot = int(last[j]) - 1
            while slot >= 0 and self.keys[slot] == keys[j]:
                row = int(self.rows_in_order[slot])
                if self.ids[row].as_py() == wanted[position]:
                    rows[position] = row
                    break
                slot -= 1


def _integer(value: object) -> bool:
    """Python's and numpy's integers; never bools (True == 1 in a dict, but no id)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _encodable(value: str) -> bool:
    """Whether a text id can be a stored one (UTF-8: a lone surrogate cannot)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text_keys(ids: pa.Array) -> np.ndarray:
    return pl.Series(values=ids, dtype=pl.String).hash().to_numpy()
