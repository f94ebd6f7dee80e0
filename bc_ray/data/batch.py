"""A team's own interactions as one batch's rows: columns mapped, values validated, duplicates
dropped.

Pure polars: the files are read by `bc_ray.ingest` and handed over as frames (`FileFrame`); ids are
made stable against the store's dictionary by `bc_ray.data.assign`. Every rejection is a
`DataError` naming the file, the column and how many rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl

from bc_ray.data.ids import IdOrigin, batch_id_type, read_ids
from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import DataError

ENTITY_ROLES = {"user": "users", "item": "items"}
RESERVED = ("idx", "id", "batch", "first_t", "first_ts")
# Seconds since the epoch a real interaction can have: 1970 .. 2100 (the public loaders' bound).
TIME_RANGE = (0, 4_102_444_800)
# An ingested batch's times: from 1990 (1970 with --allow-old-times) to a day after the clock at
# ingest. Times outside are nearly always a wrong --time-unit, refused before they are stored.
OLDEST_TIME = 631_152_000  # 1990-01-01
FUTURE_SLACK_SECONDS = 86_400


@dataclass(frozen=True)
class TimeWindow:
    """The interaction times a batch may hold (Unix seconds, both ends included)."""

    low: int
    high: int

    @classmethod
    def at_ingest(cls, allow_old_times: bool, now: float | None = None) -> TimeWindow:
        """The window for a batch read now: the future bound follows the clock."""
        now = time.time() if now is None else now
        return cls(TIME_RANGE[0] if allow_old_times else OLDEST_TIME,
                   int(now) + FUTURE_SLACK_SECONDS)


@dataclass(frozen=True)
class FileFrame:
    """One input file's rows as read: its URI (named in every message) and whether its values
    carry their types (Parquet) or are all text (CSV)."""

    uri: str
    frame: pl.DataFrame
    typed: bool


@dataclass
class RawBatch:
    """Validated rows with external ids, before they meet the store; the reader adds where the
    rows came from (`sources`, `content_hash`, `default_id`)."""

    edges: pl.DataFrame  # user_id, item_id, rating (f32), timestamp (i64 s), in input order
    entities: dict[str, pl.DataFrame | None]  # id + one List(Utf8) column per feature field
    counts: dict[str, int] = field(default_factory=dict)
    # Each entity's id columns file by file: what the ids' type in the store is decided from.
    id_origins: dict[str, list[IdOrigin]] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)  # one record per file read
    content_hash: str = ""
    default_id: str = ""  # the batch id when none is given: content and how it was read


@dataclass
class _Part:
    """One file's mapped rows, with where each entity's id column came from."""

    frame: pl.DataFrame
    ids: dict[str, tuple[str, IdOrigin]]  # entity -> (its id column in `frame`, origin)


def validate_batch(frames: dict[str, list[FileFrame]], mapping: ColumnMapping) -> RawBatch:
    """Map and validate every file of one batch (`frames` by role: edges, users, items)."""
    edge_parts = _edge_parts(frames.get("edges", []), mapping,
                             TimeWindow.at_ingest(mapping.allow_old_times))
    table_parts = {entity: _entity_parts(frames.get(role, []), mapping.key(entity), entity)
                   for entity, role in ENTITY_ROLES.items()}
    origins = _settle_ids(edge_parts, table_parts)
    edges = pl.concat([part.frame for part in edge_parts])
    counts = {"rows_read": edges.height}
    edges = drop_exact_duplicates(edges, ["user_id", "item_id", "timestamp"])
    counts["duplicates_dropped"] = counts["rows_read"] - edges.height
    entities = {}
    for entity, role in ENTITY_ROLES.items():
        entities[entity], counts[f"{role}_duplicates_dropped"] = _entity_table(table_parts[entity])
    return RawBatch(edges=edges, entities=entities, counts=counts, id_origins=origins)


def _settle_ids(edge_parts: list[_Part], table_parts: dict[str, list[_Part]]
                ) -> dict[str, list[IdOrigin]]:
    """Give each entity's ids one type over every file of the batch (rule: bc_ray.data.ids)."""
    origins = {}
    for entity in ENTITY_ROLES:
        parts = edge_parts + table_parts[entity]
        origins[entity] = [part.ids[entity][1] for part in parts]
        dtype = batch_id_type(entity, origins[entity])
        for part in parts:  # only text ids that are all canonical integers change type here
            part.frame = part.frame.with_columns(pl.col(part.ids[entity][0]).cast(dtype))
    return origins


def drop_exact_duplicates(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Rows whose `key` repeats an earlier row's are dropped (input order kept).

    Sorting one 64-bit hash finds the few candidate rows; only those are compared exactly, so the
    common case (no duplicates) costs one hash and one sort instead of a multi-column group-by.
    """
    hashes = frame.select(pl.struct(key).hash()).to_series()
    ordered = hashes.sort()
    if not (ordered == ordered.shift(1)).any():
        return frame  # every hash distinct: no duplicates
    order = hashes.arg_sort()
    ordered = hashes[order]
    same = (ordered == ordered.shift(1)).fill_null(False)
    candidates = order.filter(same | same.shift(-1).fill_null(False)).sort()
    subset = frame[candidates].with_columns(row=candidates)
    repeated = subset.filter(~pl.struct(key).is_first_distinct())["row"]
    if repeated.len() == 0:
        return frame
    return frame.with_row_index("_row").filter(~pl.col("_row").is_in(repeated.implode())
                                               ).drop("_row")


# -- edges -------------------------------------------------------------------------------------

def _edge_parts(files: list[FileFrame], mapping: ColumnMapping, window: TimeWindow
                ) -> list[_Part]:
    parts = []
    for file in files:
        frame, uri = file.frame, file.uri
        wanted = [mapping.user_col, mapping.item_col, mapping.time_col]
        wanted += [mapping.rating_col] if mapping.rating_col else []
        _require_columns(frame, wanted, uri)
        user, user_origin = read_ids(frame[mapping.user_col], uri, file.typed)
        item, item_origin = read_ids(frame[mapping.item_col], uri, file.typed)
        parts.append(_Part(pl.DataFrame({
            "user_id": user, "item_id": item,
            "rating": _ratings(frame, mapping.rating_col, uri),
            "timestamp": _timestamps(frame[mapping.time_col], mapping.time_unit, uri, window),
        }), {"user": ("user_id", user_origin), "item": ("item_id", item_origin)}))
    if not parts or sum(p.frame.height for p in parts) == 0:
        where = ", ".join(f.uri for f in files) or "the edges input"
        raise DataError(f"empty batch: no interaction rows in {where}")
    return parts


def _require_columns(frame: pl.DataFrame, columns: list[str], path: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing mapped column(s) {missing}; the file has {frame.columns}",
                        path=path, column=missing[0])


def _ratings(frame: pl.DataFrame, column: str | None, path: str) -> pl.Series:
    """Ratings as float32, checked after the cast: a value float32 cannot hold is refused."""
    if column is None:
        return pl.Series("rating", np.ones(frame.height, dtype=np.float32))
    series = frame[column]
    if series.dtype == pl.Boolean or not (series.dtype.is_numeric()
                                          or series.dtype in (pl.String, pl.Null)):
        raise DataError(f"ratings must be numbers, not {series.dtype}", path=path, column=column)
    values = series.cast(pl.Float64, strict=False)
    bad = (values.is_null() & series.is_not_null()) | values.is_nan() | values.is_infinite()
    if bad.any():
        example = series.filter(bad)[0]
        raise DataError(f"{int(bad.sum())} ratings are not finite numbers (e.g. {example!r})",
                        path=path, column=column)
    if values.is_null().any():
        raise DataError(f"{int(values.is_null().sum())} rows have no rating", path=path,
                        column=column)
    stored = values.cast(pl.Float32)
    overflow = stored.is_infinite()
    if overflow.any():
        raise DataError(f"{int(overflow.sum())} ratings are too large for a 32-bit float "
                        f"(|rating| above {float(np.finfo(np.float32).max):.4g}; e.g. "
                        f"{series.filter(overflow)[0]!r})", path=path, column=column)
    return stored.alias("rating")


# A date that starts with its day and month as numbers (05/11/2026, 5.11.26): their order is a
# convention the text does not say, a parser guesses it from the first value, and a wrong guess
# reads every date with a day up to 12 without an error. A file of such dates may hold none past
# the 12th, so each is refused, even one that reads only one way round (31/12/2026).
NUMERIC_DATE = r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}(\D|$)"


def _zoned(text: str) -> bool:
    """A time written with its zone (`Z`, `+02:00`, `-0500`)."""
    return re.search(r"(Z|[+-]\d\d:?\d\d)$", text.strip()) is not None


def _refuse_numeric_dates(text: pl.Series, path: str, column: str) -> None:
    numeric = text.str.contains(NUMERIC_DATE)
    if numeric.any():
        example = text.filter(numeric)[0]
        raise DataError(f"{int(numeric.sum())} time values are dates that start with the day "
                        f"and month as numbers (e.g. {example!r}), whose order the text does "
                        "not say: write them as ISO 8601 (2026-11-05 or 2026-11-05T08:10:00Z; "
                        "UTC where no zone is given) or unix seconds", path=path, column=column)


def _timestamps(series: pl.Series, unit: str, path: str, window: TimeWindow) -> pl.Series:
    """Unix seconds from integers (s or ms), datetimes, dates or text holding either."""
    column = series.name
    if series.is_null().any():
        raise DataError(f"{int(series.is_null().sum())} rows have no time",
                        path=path, column=column)
    if series.dtype == pl.String:
        text = series.str.strip_chars()
        numbers = _epoch_numbers(text.cast(pl.Float64, strict=False), unit)
        dated = text.filter(numbers.is_null())  # the values that are no number
        _refuse_numeric_dates(dated, path, column)
        dates = text.str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s")
        seconds = numbers.fill_null(dates)
        if seconds.null_count():
            example = series.filter(seconds.is_null())[0]
            mixed = _zoned(example) != _zoned(dated[0])
            hint = ("; a file's text times share one format, its first date's: all with a zone "
                    "or all without" if mixed else "")
            raise DataError(f"{seconds.null_count()} time values cannot be parsed as a date-time "
                            f"or a number (e.g. {example!r}{hint})", path=path, column=column)
    elif isinstance(series.dtype, pl.Datetime):
        seconds = series.dt.epoch("s")
    elif series.dtype == pl.Date:
        seconds = series.cast(pl.Datetime("us")).dt.epoch("s")
    elif series.dtype.is_integer():  # UInt64 beyond Int64 is far outside the window anyway
        whole = series.clip(upper_bound=1 << 62) if series.dtype == pl.UInt64 else series
        seconds = whole.cast(pl.Int64) // (1000 if unit == "ms" else 1)
    elif series.dtype.is_float():
        seconds = _epoch_numbers(series.cast(pl.Float64), unit)
        if seconds.null_count():
            raise DataError(f"{seconds.null_count()} time values are not finite numbers",
                            path=path, column=column)
    else:
        raise DataError(f"time must be an integer, a date-time or text, not {series.dtype}",
                        path=path, column=column)
    _check_window(seconds, series, unit, window, path)
    return seconds.cast(pl.Int64).alias("timestamp")


def _check_window(seconds: pl.Series, series: pl.Series, unit: str, window: TimeWindow,
                  path: str) -> None:
    """Times before the window or after tomorrow are refused with the likely fix."""
    for outside, bound, fix in (
            (seconds > window.high, f"after {_date(window.high)} (a day from now)",
             " (milliseconds? pass --time-unit ms)" if unit == "s" else ""),
            (seconds < window.low, f"before {_date(window.low)}", _old_times_hint(unit, window))):
        if outside.any():
            first = int(outside.arg_true()[0])
            raise DataError(f"{int(outside.sum())} time values fall {bound} (e.g. "
                            f"{series[first]!r}, read as {_date(seconds[first])}){fix}",
                            path=path, column=series.name)


def _old_times_hint(unit: str, window: TimeWindow) -> str:
    if window.low < OLDEST_TIME:  # --allow-old-times is on already
        return " (seconds read as milliseconds? pass --time-unit s)" if unit == "ms" else ""
    wrong_unit = "seconds read as milliseconds? pass --time-unit s; " if unit == "ms" else ""
    return f" ({wrong_unit}if these times are right, pass --allow-old-times)"


def _date(seconds: int) -> str:
    """A Unix time as a calendar day, for messages (clamped to what datetime can show)."""
    clamped = min(max(int(seconds), -62_135_596_800), 253_402_300_799)
    return datetime.fromtimestamp(clamped, timezone.utc).strftime("%Y-%m-%d")


def _epoch_numbers(values: pl.Series, unit: str) -> pl.Series:
    """Seconds from numbers in `unit`; NaN and infinity become null (reported by the caller)."""
    finite = values.is_finite().fill_null(False)
    scaled = (values / (1000.0 if unit == "ms" else 1.0)).clip(-1e12, 1e12).floor()
    return pl.select(pl.when(finite).then(scaled)).to_series().cast(pl.Int64)


# -- entity tables -----------------------------------------------------------------------------

def _entity_parts(files: list[FileFrame], key: str, entity: str) -> list[_Part]:
    """Each table file as id plus one List(Utf8) column per feature."""
    parts = []
    for file in files:
        frame = file.frame
        _require_columns(frame, [key], file.uri)
        ids, origin = read_ids(frame[key], file.uri, file.typed)
        columns = {"id": ids}
        for name in frame.columns:
            if name == key:
                continue
            if name in RESERVED:
                raise DataError(f"feature column name {name!r} is reserved; rename it",
                                path=file.uri, column=name)
            columns[name] = _feature_values(frame[name], file.uri)
        parts.append(_Part(pl.DataFrame(columns), {entity: ("id", origin)}))
    return parts


def _entity_table(parts: list[_Part]) -> tuple[pl.DataFrame | None, int]:
    """The batch's table of one entity: a later row for the same id wins."""
    if not parts:
        return None, 0
    table = pl.concat([part.frame for part in parts], how="diagonal_relaxed")
    unique = table.unique(subset=["id"], keep="last", maintain_order=True)
    return unique, table.height - unique.height


def _feature_values(series: pl.Series, path: str) -> pl.Series:
    dtype = series.dtype
    if isinstance(dtype, pl.List):
        if not _feature_scalar(dtype.inner):
            raise DataError(f"feature lists must hold strings, not {dtype.inner}", path=path,
                            column=series.name)
        return series.cast(pl.List(pl.String))
    if dtype.is_float():
        raise DataError(f"feature column is numeric ({dtype}): bc_ray takes categorical features "
                        "(a string, or a list of strings); bucket it upstream or leave it out",
                        path=path, column=series.name)
    if _feature_scalar(dtype) and dtype != pl.Null:
        text = series.cast(pl.String).str.strip_chars()
        return text.to_frame().select(pl.concat_list(pl.col(series.name))).to_series()
    raise DataError(f"feature columns must be strings or lists of strings, not {dtype}",
                    path=path, column=series.name)


def _feature_scalar(dtype: pl.DataType) -> bool:
    """A type whose values read as one category each (never a nested list or a float)."""
    return dtype in (pl.String, pl.Categorical, pl.Boolean, pl.Null) or dtype.is_integer() or \
        isinstance(dtype, pl.Enum)
