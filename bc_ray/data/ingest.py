"""A team's own interactions as one batch: columns mapped, values validated, ids made stable.

Pure polars (no store, no Ray). `read_batch` turns input files into canonical rows and counts what
it dropped; `assign_batch` maps external ids onto the store's append-only dictionary (existing
entities keep their index forever, new ones take the next free index in order of first
appearance in the batch's rows) and encodes features against vocabularies that only grow. Every rejection is a
`DataError` naming the file, the column and how many rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
import polars as pl

from bc_ray.data.features import FEATURE_DTYPE, encode_fields
from bc_ray.data.ids import IdOrigin, batch_id_type, read_ids, store_id_type
from bc_ray.ingest.sources import SourceFile, discover, input_format, read_source
from bc_ray.exceptions import DataError

TIME_UNITS = ("s", "ms")
ENTITY_ROLES = {"user": "users", "item": "items"}
RESERVED = ("idx", "id", "batch", "first_t", "first_ts")
# Seconds since the epoch a real interaction can have: 1970 .. 2100 (the public loaders' bound).
TIME_RANGE = (0, 4_102_444_800)
# An ingested batch's times: from 1990 (1970 with --allow-old-times) to a day after the clock at
# ingest. Times outside are nearly always a wrong --time-unit, refused before they are stored.
OLDEST_TIME = 631_152_000  # 1990-01-01
FUTURE_SLACK_SECONDS = 86_400
# Mapping fields that only decide whether a batch is accepted, never what its rows are: left out
# of the default batch id, so flipping one on a retry does not land the same rows twice.
ACCEPTANCE_ONLY = ("allow_old_times",)
# Largest id range mapped through a direct-address table (4 bytes per id in the range).
DENSE_ID_SPAN_LIMIT = 1 << 26


@dataclass(frozen=True)
class ColumnMapping:
    """Which input columns hold what (`--user-col`, `--item-col`, `--time-col`, ...), and how the
    batch is read (`--time-unit`, `--input-format`, `--allow-old-times`)."""

    user_col: str
    item_col: str
    time_col: str
    rating_col: str | None = None
    time_unit: str = "s"
    input_format: str | None = None
    allow_old_times: bool = False

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise DataError(f"--time-unit must be one of {TIME_UNITS}, got {self.time_unit!r}")
        for name in ("user_col", "item_col", "time_col"):
            if not getattr(self, name):
                raise DataError(f"--{name.replace('_', '-')} is required")
        if not isinstance(self.allow_old_times, bool):
            raise DataError("allow_old_times must be true or false, got "
                            f"{self.allow_old_times!r}")

    def key(self, entity: str) -> str:
        return self.user_col if entity == "user" else self.item_col


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
class BatchInput:
    """Where a batch's files are: edges (required) and optional user / item tables."""

    edges: str
    users: str | None = None
    items: str | None = None

    def paths(self) -> dict[str, str]:
        return {role: path for role, path in (("edges", self.edges), ("users", self.users),
                                              ("items", self.items)) if path}


@dataclass
class RawBatch:
    """Validated rows with external ids, before they meet the store."""

    edges: pl.DataFrame  # user_id, item_id, rating (f32), timestamp (i64 s), in input order
    entities: dict[str, pl.DataFrame | None]  # id + one List(Utf8) column per feature field
    sources: list[dict]
    content_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    # Each entity's id columns file by file: what the ids' type in the store is decided from.
    id_origins: dict[str, list[IdOrigin]] = field(default_factory=dict)
    default_id: str = ""  # the batch id when none is given: content and how it was read


@dataclass
class _Part:
    """One file's mapped rows, with where each entity's id column came from."""

    frame: pl.DataFrame
    ids: dict[str, tuple[str, IdOrigin]]  # entity -> (its id column in `frame`, origin)


def read_batch(request: BatchInput, mapping: ColumnMapping,
               files: dict[str, list[SourceFile]] | None = None) -> RawBatch:
    """Read, map and validate every input file of one batch."""
    files = files or {role: discover(path, mapping.input_format)
                      for role, path in request.paths().items()}
    hasher = hashlib.sha256()
    sources, frames, formats = [], {}, []
    for role in ("edges", "users", "items"):
        for source in files.get(role, []):
            hasher.update(f"\n{role}\n".encode())
            frame = read_source(source, mapping.input_format, hasher)
            sources.append({"role": role, **source.to_dict(), "rows": frame.height})
            formats.append(input_format(source.uri, mapping.input_format))
            frames.setdefault(role, []).append((source, frame))
    edge_parts = _edge_parts(frames.get("edges", []), mapping,
                             TimeWindow.at_ingest(mapping.allow_old_times))
    table_parts = {entity: _entity_parts(frames.get(role, []), mapping.key(entity), entity,
                                         mapping.input_format)
                   for entity, role in ENTITY_ROLES.items()}
    origins = _settle_ids(edge_parts, table_parts)
    edges = pl.concat([part.frame for part in edge_parts])
    counts = {"rows_read": edges.height}
    edges = drop_exact_duplicates(edges, ["user_id", "item_id", "timestamp"])
    counts["duplicates_dropped"] = counts["rows_read"] - edges.height
    entities = {}
    for entity, role in ENTITY_ROLES.items():
        entities[entity], counts[f"{role}_duplicates_dropped"] = _entity_table(table_parts[entity])
    content = hasher.hexdigest()
    return RawBatch(edges=edges, entities=entities, sources=sources, content_hash=content,
                    counts=counts, id_origins=origins,
                    default_id=default_batch_id(content, mapping, formats))


def default_batch_id(content_hash: str, mapping: ColumnMapping, formats: list[str]) -> str:
    """`b-` and a hash of the inputs' content and of how they are read (columns, time unit, the
    format each file is read as): the same files read another way are another batch, so a
    corrected re-run lands; a retry of the same is the same batch. `--allow-old-times` only
    decides whether a batch is accepted (its rows are the same either way), so it is left out,
    and so is `--input-format` beyond the format it makes each file be read as."""
    reading = {name: value for name, value in asdict(mapping).items()
               if name not in ACCEPTANCE_ONLY}
    reading.update(input_format=formats, content=content_hash)
    digest = hashlib.sha256(json.dumps(reading, sort_keys=True).encode()).hexdigest()
    return f"b-{digest[:24]}"


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

def _edge_parts(frames: list[tuple[SourceFile, pl.DataFrame]], mapping: ColumnMapping,
                window: TimeWindow) -> list[_Part]:
    parts = []
    for source, frame in frames:
        wanted = [mapping.user_col, mapping.item_col, mapping.time_col]
        wanted += [mapping.rating_col] if mapping.rating_col else []
        _require_columns(frame, wanted, source.uri)
        typed = input_format(source.uri, mapping.input_format) != "csv"
        user, user_origin = read_ids(frame[mapping.user_col], source.uri, typed)
        item, item_origin = read_ids(frame[mapping.item_col], source.uri, typed)
        parts.append(_Part(pl.DataFrame({
            "user_id": user, "item_id": item,
            "rating": _ratings(frame, mapping.rating_col, source.uri),
            "timestamp": _timestamps(frame[mapping.time_col], mapping.time_unit, source.uri,
                                     window),
        }), {"user": ("user_id", user_origin), "item": ("item_id", item_origin)}))
    if not parts or sum(p.frame.height for p in parts) == 0:
        where = ", ".join(s.uri for s, _ in frames) or "the edges input"
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


def _timestamps(series: pl.Series, unit: str, path: str, window: TimeWindow) -> pl.Series:
    """Unix seconds from integers (s or ms), datetimes, dates or text holding either."""
    column = series.name
    if series.is_null().any():
        raise DataError(f"{int(series.is_null().sum())} rows have no time", path=path, column=column)
    if series.dtype == pl.String:
        text = series.str.strip_chars()
        numbers = _epoch_numbers(text.cast(pl.Float64, strict=False), unit)
        dates = text.str.to_datetime(strict=False, time_zone="UTC").dt.epoch("s")
        seconds = numbers.fill_null(dates)
        if seconds.null_count():
            example = series.filter(seconds.is_null())[0]
            raise DataError(f"{seconds.null_count()} time values cannot be parsed as a date-time "
                            f"or a number (e.g. {example!r})", path=path, column=column)
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

def _entity_parts(frames: list[tuple[SourceFile, pl.DataFrame]], key: str, entity: str,
                  declared_format: str | None) -> list[_Part]:
    """Each table file as id plus one List(Utf8) column per feature."""
    parts = []
    for source, frame in frames:
        _require_columns(frame, [key], source.uri)
        typed = input_format(source.uri, declared_format) != "csv"
        ids, origin = read_ids(frame[key], source.uri, typed)
        columns = {"id": ids}
        for name in frame.columns:
            if name == key:
                continue
            if name in RESERVED:
                raise DataError(f"feature column name {name!r} is reserved; rename it",
                                path=source.uri, column=name)
            columns[name] = _feature_values(frame[name], source.uri)
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


# -- ids and features against the store's dictionary ---------------------------------------------

@dataclass(frozen=True)
class CurrentEntities:
    """The store's entities before this batch: idx, id and current feature codes."""

    table: pl.DataFrame  # idx, id, batch, feature columns (List(Int32))
    vocab: dict[str, list[str]]


@dataclass
class AssignedBatch:
    edges: pl.DataFrame  # user_idx, item_idx (Int32: fewer bytes written), rating, timestamp, batch
    deltas: dict[str, pl.DataFrame]  # entity rows added or changed: idx, id, batch, features
    vocab: dict[str, dict[str, list[str]]]
    counts: dict[str, int]


def resolve_ids(raw: RawBatch, current: dict[str, CurrentEntities]) -> RawBatch:
    """Give the batch's ids the store's id type, or refuse the file whose ids do not have it
    (the rule: bc_ray.data.ids)."""
    edges, entities = raw.edges, dict(raw.entities)
    for entity in ENTITY_ROLES:
        column = f"{entity}_id"
        store = current[entity].table["id"].dtype if current[entity].table.height else None
        target = store_id_type(entity, raw.id_origins[entity], edges[column].dtype, store)
        edges = edges.with_columns(pl.col(column).cast(target))
        if entities[entity] is not None:
            entities[entity] = entities[entity].with_columns(pl.col("id").cast(target))
    return replace(raw, edges=edges, entities=entities)


def assign_batch(raw: RawBatch, current: dict[str, CurrentEntities], ordinal: int,
                 last_timestamp: int | None) -> AssignedBatch:
    """Map ids to stable indices and encode features; `ordinal` tags every row written."""
    raw = resolve_ids(raw, current)
    order = raw.edges
    counts = dict(raw.counts)
    counts["edges"] = order.height
    counts["late_edges"] = 0 if last_timestamp is None else int(
        (order["timestamp"] < last_timestamp).sum())
    with ThreadPoolExecutor(max_workers=2) as pool:  # polars and numpy release the GIL
        done = dict(zip(ENTITY_ROLES, pool.map(
            lambda entity: _assign_entity(entity, raw, current[entity], ordinal),
            ENTITY_ROLES)))
    deltas = {entity: result.delta for entity, result in done.items()}
    vocab = {entity: result.vocab for entity, result in done.items()}
    for entity, result in done.items():
        counts[f"new_{entity}s"] = result.new
        counts[f"updated_{entity}s"] = result.updated
    edges = pl.DataFrame({f"{entity}_idx": done[entity].idx for entity in ENTITY_ROLES}
                         ).with_columns(order["rating"], order["timestamp"],
                                        batch=pl.lit(ordinal, dtype=pl.Int32))
    return AssignedBatch(edges=edges, deltas=deltas, vocab=vocab, counts=counts)


@dataclass
class _EntityAssignment:
    idx: pl.Series  # the batch's rows' indices of this entity
    delta: pl.DataFrame
    vocab: dict[str, list[str]]
    new: int
    updated: int


def _assign_entity(entity: str, raw: RawBatch, prior: CurrentEntities, ordinal: int
                   ) -> _EntityAssignment:
    ids = raw.edges[f"{entity}_id"]
    seen = ids.gather(ids.arg_unique())  # first appearance order, one hash pass
    if prior.table.height == 0:  # an empty dictionary takes the batch's id type
        prior = CurrentEntities(prior.table.with_columns(pl.col("id").cast(seen.dtype)),
                                prior.vocab)
    features = raw.entities[entity]
    if features is not None:
        seen = pl.concat([seen, features["id"]]).unique(maintain_order=True)
    fresh = seen.to_frame("id").join(prior.table.select("id"), on="id", how="anti",
                                     maintain_order="left")
    fresh = fresh.with_columns(idx=pl.int_range(prior.table.height,
                                                prior.table.height + fresh.height,
                                                dtype=pl.Int64))
    changed = fresh.select("idx", "id")
    if features is not None:
        updated = prior.table.select("idx", "id").join(features.select("id"), on="id",
                                                       how="semi")
        changed = pl.concat([changed, updated]).sort("idx")
    delta, vocab = _encode(changed, features, prior)
    index = pl.concat([prior.table.select("idx", "id"), fresh.select("idx", "id")])
    return _EntityAssignment(idx=map_ids(ids, index),
                             delta=delta.with_columns(batch=pl.lit(ordinal, dtype=pl.Int32)),
                             vocab=vocab, new=fresh.height,
                             updated=changed.height - fresh.height)


def map_ids(ids: pl.Series, index: pl.DataFrame) -> pl.Series:
    """Each id's index in `index` (idx, id), which holds every id of `ids`.

    Integer ids in a compact range (database keys usually are) are looked up in a direct-address
    table, several times faster than hashing 10M values; other ids go through a hash lookup.
    """
    if ids.dtype.is_integer() and ids.len():
        low, high = ids.min(), ids.max()
        span = high - low + 1
        if span <= min(DENSE_ID_SPAN_LIMIT, 4 * (ids.len() + index.height)):
            inside = index.filter(pl.col("id").is_between(low, high))
            table = np.full(span, -1, dtype=np.int32)
            table[inside["id"].to_numpy() - low] = inside["idx"].to_numpy()
            return pl.Series(ids.name, table[ids.to_numpy() - low])
    return ids.replace_strict(index["id"], index["idx"], return_dtype=pl.Int32)


def _encode(changed: pl.DataFrame, features: pl.DataFrame | None, prior: CurrentEntities
            ) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Feature codes of the changed entities: fields this batch names are replaced, the others
    keep the entity's current codes (new entities start with none)."""
    if features is None:
        return changed, dict(prior.vocab)
    encoded, vocab, _ = encode_fields(changed, features, prior.vocab, 1, "entity")
    kept = [f for f in prior.vocab if f not in features.columns]
    if kept and prior.table.height:
        encoded = (encoded.drop(kept)
                   .join(prior.table.select("idx", *kept), on="idx", how="left")
                   .with_columns([pl.col(f).fill_null(pl.lit([], dtype=FEATURE_DTYPE))
                                  for f in kept]))
    return encoded.sort("idx"), vocab
