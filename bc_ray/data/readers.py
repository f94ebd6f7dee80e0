"""Careful readers for raw input files: every failure names the file, the column and the row.

Values are read as text first and cast column by column, so a bad value is reported at its exact
line instead of as a parser traceback.
"""

from __future__ import annotations

import ast
import gzip
import os
from collections.abc import Iterator, Sequence

import orjson
import polars as pl

from bc_ray.exceptions import DataError


def require_file(path: str) -> str:
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise DataError("expected a file but found a directory", path=path)
        raise DataError("file not found", path=path)
    return path


def read_delimited(path: str, columns: Sequence[str], *, separator: str, has_header: bool,
                   encoding: str = "utf8", required: Sequence[str] | None = None) -> pl.DataFrame:
    """Read a delimited text file as all-string columns.

    With a header, `columns` are looked up by name (extra columns are ignored); without one,
    the file must have at least `len(columns)` fields and they are named in order.
    """
    require_file(path)
    try:
        frame = pl.read_csv(
            path, separator=separator, has_header=has_header, infer_schema=False,
            encoding="utf8-lossy" if encoding != "utf8" else "utf8", quote_char=None
            if separator in ("\t", "|") else '"', truncate_ragged_lines=True,
        )
    except pl.exceptions.NoDataError as exc:
        raise DataError("file is empty", path=path) from exc
    except pl.exceptions.ComputeError as exc:
        raise DataError(f"cannot parse as {separator!r}-separated text: {exc}", path=path) from exc
    if has_header:
        frame = frame.rename({c: c.strip() for c in frame.columns})
        missing = [c for c in (required or columns) if c not in frame.columns]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; found {frame.columns}", path=path, column=missing[0])
        return frame.select([c for c in columns if c in frame.columns])
    if frame.width < len(columns):
        raise DataError(
            f"expected at least {len(columns)} fields per line, found {frame.width}", path=path)
    frame = frame.select(frame.columns[: len(columns)])
    return frame.rename(dict(zip(frame.columns, columns)))


def cast_column(frame: pl.DataFrame, column: str, dtype: pl.DataType, *, path: str,
                first_row: int) -> pl.DataFrame:
    """Cast a text column; the first value that does not parse is reported with its line."""
    text = frame[column].str.strip_chars()
    cast = text.cast(dtype, strict=False)
    bad = cast.is_null() & text.is_not_null() & (text != "")
    empty = text.is_null() | (text == "")
    for mask, what in ((bad, "cannot parse"), (empty, "missing value in")):
        if mask.any():
            row = int(mask.arg_true()[0])
            value = text[row]
            raise DataError(f"{what} {value!r} as {dtype}" if what == "cannot parse"
                            else f"{what} required column", path=path, column=column,
                            row=row + first_row)
    return frame.with_columns(cast.alias(column))


def check_range(frame: pl.DataFrame, column: str, low: float, high: float, *, path: str,
                first_row: int) -> None:
    outside = (frame[column] < low) | (frame[column] > high)
    if outside.any():
        row = int(outside.arg_true()[0])
        raise DataError(
            f"value {frame[column][row]} outside the scale [{low}, {high}]",
            path=path, column=column, row=row + first_row)


def _open_text(path: str):
    require_file(path)
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_json_records(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) for JSON-lines files, gzipped or not.

    Accepts strict JSON (Amazon 2018) and Python-literal lines (Amazon 2014 metadata, written with
    single quotes); anything else is an error naming the line.
    """
    with _open_text(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                try:
                    record = ast.literal_eval(raw.decode("utf8", errors="replace"))
                except (ValueError, SyntaxError) as exc:
                    raise DataError(f"line is neither JSON nor a Python literal: {exc}",
                                    path=path, row=line_no) from exc
            if not isinstance(record, dict):
                raise DataError("line is not a JSON object", path=path, row=line_no)
            yield line_no, record
