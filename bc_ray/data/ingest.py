"""A team's own interactions as one batch: columns mapped, values validated, ids made stable.

Pure polars (no store, no Ray). `read_batch` turns input files into canonical rows and counts what
it dropped; `assign_batch` maps external ids onto the store's append-only dictionary (existing
entities keep their index forever, new ones take the next free index in order of first
appearance in the batch's rows) and encodes features against vocabularies that only grow. Every rejection is a
`DataError` naming the file, the column and how many rows.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bc_ray.data.features import FEATURE_DTYPE, encode_fields
from bc_ray.data.sources import SourceFile, discover, input_format, read_source
from bc_ray.exceptions import DataError

TIME_UNITS = ("s", "ms")
ENTITY_ROLES = {"user": "users", "item": "items"}
RESERVED = ("idx", "id", "batch", "first_t", "first_ts")
# Seconds since the epoch a real interaction can have: 1970 .. 2100.
TIME_RANGE = (0, 4_102_444_800)
# Largest id range mapped through a direct-address table (4 bytes per id in the range).
DENSE_ID_SPAN_LIMIT = 1 << 26


@dataclass(frozen=True)
class ColumnMapping:
    """Which input columns hold what (`--user-col`, `--item-col`, `--time-col`, ...)."""

    user_col: str
    item_col: str
    time_col: str
    rating_col: str | None = None
    time_unit: str = "s"
    input_format: str | None = None

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise DataError(f"--time-unit must be one of {TIME_UNITS}, got {self.time_unit!r}")
        for name in ("user_col", "item_col", "time_col"):
            if not getattr(self, name):
                raise DataError(f"--{name.replace('_', '-')} is required")

    def key(self, entity: str) -> str:
        return self.user_col if entity == "user" else self.item_col


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
    ids_from_text: dict[str, bool] = field(default_factory=dict)


def read_batch(request: BatchInput, mapping: ColumnMapping,
               files: dict[str, list[SourceFile]] | None = None) -> RawBatch:
    """Read, map and validate every input file of one batch."""
    files = files or {role: discover(path, mapping.input_format)
                      for role, path in request.paths().items()}
    hasher = hashlib.sha256()
    sources, frames = [], {}
    for role in ("edges", "users", "items"):
        for source in files.get(role, []):
            hasher.update(f"\n{role}\n".encode())
            frame = read_source(source, mapping.input_format, hasher)
            sources.append({"role": role, **source.to_dict(), "rows": frame.height})
            frames.setdefault(role, []).append((source, frame))
    edges, from_text = _edges(frames.get("edges", []), mapping)
    counts = {"rows_read": edges.height}
    edges = drop_exact_duplicates(edges, ["user_id", "item_id", "timestamp"])
    counts["duplicates_dropped"] = counts["rows_read"] - edges.height
    entities = {}
    for entity, role in ENTITY_ROLES.items():
        table, dropped = _entity_table(frames.get(role, []), mapping.key(entity), entity)
        entities[entity] = table
        counts[f"{role}_duplicates_dropped"] = dropped
    return RawBatch(edges=edges, entities=entities, sources=sources,
                    content_hash=hasher.hexdigest(), counts=counts, ids_from_text=from_text)


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

def _edges(frames: list[tuple[SourceFile, pl.DataFrame]], mapping: ColumnMapping
           ) -> tuple[pl.DataFrame, dict[str, bool]]:
    parts, from_text = [], {"user": False, "item": False}
    for source, frame in frames:
        wanted = [mapping.user_col, mapping.item_col, mapping.time_col]
        wanted += [mapping.rating_col] if mapping.rating_col else []
        _require_columns(frame, wanted, source.uri)
        user = _ids(frame[mapping.user_col], source.uri)
        item = _ids(frame[mapping.item_col], source.uri)
        csv = input_format(source.uri, mapping.input_format) == "csv"
        from_text["user"] |= csv
        from_text["item"] |= csv
        parts.append(pl.DataFrame({
            "user_id": user, "item_id": item,
            "rating": _ratings(frame, mapping.rating_col, source.uri),
            "timestamp": _timestamps(frame[mapping.time_col], mapping.time_unit, source.uri),
        }))
    if not parts or sum(p.height for p in parts) == 0:
        where = ", ".join(s.uri for s, _ in frames) or "the edges input"
        raise DataError(f"empty batch: no interaction rows in {where}")
    try:
        return pl.concat(_unify_ids(parts, frames)), from_text
    except pl.exceptions.SchemaError as exc:
        raise DataError(f"input files disagree on column types: {exc}") from exc


def _unify_ids(parts: list[pl.DataFrame], frames, columns=("user_id", "item_id")
               ) -> list[pl.DataFrame]:
    """Integer ids in one file and text ids in another (CSV) become one type when they can."""
    for column in columns:
        types = {p[column].dtype for p in parts}
        if len(types) > 1:
            for index, part in enumerate(parts):
                if part[column].dtype == pl.String:
                    cast = part[column].cast(pl.Int64, strict=False)
                    if cast.null_count():
                        raise DataError("ids are text here but integers in other files of the "
                                        "batch", path=frames[index][0].uri, column=column)
                    parts[index] = part.with_columns(cast.alias(column))
    return parts


def _require_columns(frame: pl.DataFrame, columns: list[str], path: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing mapped column(s) {missing}; the file has {frame.columns}",
                        path=path, column=missing[0])


def _ids(series: pl.Series, path: str) -> pl.Series:
    """Integer ids as Int64, text ids as String; null or empty ids are refused, counted."""
    dtype = series.dtype
    if dtype.is_integer():
        out, text = series.cast(pl.Int64), False
    elif dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        out, text = series.cast(pl.String).str.strip_chars(), True
    else:
        raise DataError(f"ids must be integers or strings, not {dtype}", path=path,
                        column=series.name)
    bad = out.is_null()
    if text:
        bad = (bad | (out == "")).fill_null(True)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {out.len()} rows have a null or empty id", path=path,
                        column=series.name)
    return out


def _ratings(frame: pl.DataFrame, column: str | None, path: str) -> pl.Series:
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
    return values.cast(pl.Float32).alias("rating")


def _timestamps(series: pl.Series, unit: str, path: str) -> pl.Series:
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
    elif series.dtype.is_integer():
        seconds = series.cast(pl.Int64) // (1000 if unit == "ms" else 1)
    elif series.dtype.is_float():
        seconds = _epoch_numbers(series.cast(pl.Float64), unit)
        if seconds.null_count():
            raise DataError(f"{seconds.null_count()} time values are not finite numbers",
                            path=path, column=column)
    else:
        raise DataError(f"time must be an integer, a date-time or text, not {series.dtype}",
                        path=path, column=column)
    outside = (seconds < TIME_RANGE[0]) | (seconds >= TIME_RANGE[1])
    if outside.any():
        hint = " (milliseconds? pass --time-unit ms)" if unit == "s" else ""
        raise DataError(f"{int(outside.sum())} time values fall outside 1970-2100 "
                        f"(e.g. {series.filter(outside)[0]!r}){hint}", path=path, column=column)
    return seconds.cast(pl.Int64).alias("timestamp")


def _epoch_numbers(values: pl.Series, unit: str) -> pl.Series:
    """Seconds from numbers in `unit`; NaN and infinity become null (reported by the caller)."""
    finite = values.is_finite().fill_null(False)
    scaled = (values / (1000.0 if unit == "ms" else 1.0)).clip(-1e12, 1e12).floor()
    return pl.select(pl.when(finite).then(scaled)).to_series().cast(pl.Int64)


# -- entity tables -----------------------------------------------------------------------------

def _entity_table(frames: list[tuple[SourceFile, pl.DataFrame]], key: str, entity: str
                  ) -> tuple[pl.DataFrame | None, int]:
    """id plus one List(Utf8) column per feature; a later row for the same id wins."""
    parts = []
    for source, frame in frames:
        _require_columns(frame, [key], source.uri)
        ids = _ids(frame[key], source.uri)
        columns = {"id": ids}
        for name in frame.columns:
            if name == key:
                continue
            if name in RESERVED:
                raise DataError(f"feature column name {name!r} is reserved; rename it",
                                path=source.uri, column=name)
            columns[name] = _feature_values(frame[name], source.uri)
        parts.append(pl.DataFrame(columns))
    if not parts:
        return None, 0
    table = pl.concat(_unify_ids(parts, frames, ("id",)), how="diagonal_relaxed")
    unique = table.unique(subset=["id"], keep="last", maintain_order=True)
    return unique, table.height - unique.height


def _feature_values(series: pl.Series, path: str) -> pl.Series:
    dtype = series.dtype
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        if inner.is_float():
            raise DataError(f"feature lists must hold strings, not {inner}", path=path,
                            column=series.name)
        return series.cast(pl.List(pl.String))
    if dtype.is_float():
        raise DataError(f"feature column is numeric ({dtype}): bc_ray takes categorical features "
                        "(a string, or a list of strings); bucket it upstream or leave it out",
                        path=path, column=series.name)
    if dtype in (pl.String, pl.Categorical, pl.Boolean) or dtype.is_integer() or \
            isinstance(dtype, pl.Enum):
        text = series.cast(pl.String).str.strip_chars()
        return text.to_frame().select(pl.concat_list(pl.col(series.name))).to_series()
    raise DataError(f"feature columns must be strings or lists of strings, not {dtype}",
                    path=path, column=series.name)


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
    """Give the batch's ids the store's id type (CSV text ids may be integers)."""
    edges, entities = raw.edges, dict(raw.entities)
    for entity in ("user", "item"):
        column = f"{entity}_id"
        target = current[entity].table["id"].dtype if current[entity].table.height else None
        if target is None:  # a new store: text ids read from CSV are integers when all parse
            ids = edges[column]
            numeric = ids.dtype == pl.String and raw.ids_from_text.get(entity) and \
                ids.cast(pl.Int64, strict=False).null_count() == 0
            target = pl.Int64 if numeric else ids.dtype
        edges = edges.with_columns(_cast_ids(edges[column], target, entity, "the interactions"))
        if entities[entity] is not None:
            entities[entity] = entities[entity].with_columns(_cast_ids(
                entities[entity]["id"], target, entity, f"the {ENTITY_ROLES[entity]} table"))
    return RawBatch(edges=edges, entities=entities, sources=raw.sources,
                    content_hash=raw.content_hash, counts=raw.counts,
                    ids_from_text=raw.ids_from_text)


def _cast_ids(series: pl.Series, target: pl.DataType, entity: str, where: str) -> pl.Series:
    if series.dtype == target:
        return series
    if target == pl.Int64 and series.dtype == pl.String:
        cast = series.cast(pl.Int64, strict=False)
        if cast.null_count() == 0:
            return cast
    raise DataError(f"{entity} ids in {where} are {series.dtype} but the store's {entity} ids are "
                    f"{target}: external ids keep their type")


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
