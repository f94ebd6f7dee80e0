"""External ids and their type: integers or text, decided once per entity for a whole batch.

The rule (README, "Bring your own data"): a typed column (Parquet) keeps its type. CSV text is
an integer id only when every text id of that entity in the batch (the interactions' column and
the user or item table's key, over all files) is a canonical integer: ``0`` or digits without a
leading zero, no sign, within Int64, and the store does not already hold text ids for the entity.
Otherwise the text is kept exactly as written, so ``007``, ``7`` and ``+7`` are three users, never
one. A batch whose ids do not have the store's type is refused, naming the file: converting would
merge distinct external ids or split one.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from bc_ray.exceptions import DataError

CANONICAL_INTEGER = r"^(?:0|[1-9][0-9]*)$"
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class IdOrigin:
    """One file's ids of one entity, as read: what decides, and explains, the batch's id type."""

    path: str
    column: str
    typed: bool  # a Parquet column keeps its type; CSV text's type is decided by the rule
    dtype: pl.DataType  # pl.Int64 or pl.String, as read
    not_integer: str | None = None  # a text id that is not a canonical integer (None: none is)


def read_ids(series: pl.Series, path: str, typed: bool) -> tuple[pl.Series, IdOrigin]:
    """Integer ids as Int64, text ids as String; null, empty or too large ids are refused."""
    dtype = series.dtype
    if dtype.is_integer():
        out = _as_int64(series, path)
    elif dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        out = series.cast(pl.String).str.strip_chars()
    else:
        raise DataError(f"ids must be integers or strings, not {dtype}", path=path,
                        column=series.name)
    bad = out.is_null()
    if out.dtype == pl.String:
        bad = (bad | (out == "")).fill_null(True)
    if bad.any():
        raise DataError(f"{int(bad.sum())} of {out.len()} rows have a null or empty id", path=path,
                        column=series.name)
    return out, IdOrigin(path, series.name, typed, out.dtype, _not_integer(out))


def _as_int64(series: pl.Series, path: str) -> pl.Series:
    """Unsigned ids above Int64's range cannot be stored as integers: refused, never wrapped."""
    if series.dtype == pl.UInt64:
        above = (series > INT64_MAX).fill_null(False)
        if above.any():
            raise DataError(f"{int(above.sum())} ids exceed the largest integer id "
                            f"{INT64_MAX} (e.g. {series.filter(above)[0]}); write them as text "
                            "ids upstream", path=path, column=series.name)
    return series.cast(pl.Int64)


def _not_integer(ids: pl.Series) -> str | None:
    """The first text id that is not a canonical integer fitting Int64, if any."""
    if ids.dtype != pl.String:
        return None
    fits = ids.cast(pl.Int64, strict=False).is_not_null()
    canonical = ids.str.contains(CANONICAL_INTEGER) & fits
    if canonical.all():
        return None
    return ids.filter(~canonical)[0]


def batch_id_type(entity: str, origins: list[IdOrigin]) -> pl.DataType:
    """The one type of an entity's ids over every file of the batch (before it meets a store)."""
    typed = {o.dtype for o in origins if o.typed}
    if len(typed) > 1:
        text = next(o for o in origins if o.typed and o.dtype == pl.String)
        numbers = next(o for o in origins if o.typed and o.dtype == pl.Int64)
        raise DataError(f"{entity} ids are text here but integers in {numbers.path}: external "
                        "ids keep their type", path=text.path, column=text.column)
    if typed == {pl.Int64}:
        for origin in origins:
            if origin.not_integer is not None:
                raise DataError(f"{entity} ids are integers in other files of the batch but "
                                f"text here that is not a canonical integer (e.g. "
                                f"{origin.not_integer!r}): external ids keep their type",
                                path=origin.path, column=origin.column)
        return pl.Int64
    return pl.String


def integer_text(origins: list[IdOrigin]) -> bool:
    """Every id came from CSV text and every one is a canonical integer."""
    return all(not o.typed and o.not_integer is None for o in origins)


def store_id_type(entity: str, origins: list[IdOrigin], batch: pl.DataType,
                  store: pl.DataType | None) -> pl.DataType:
    """The type the batch's ids take in a store whose ids have type `store` (None: no ids yet);
    a batch that does not fit is refused naming the first file that does not."""
    if batch == pl.String and integer_text(origins) and store in (None, pl.Int64):
        return pl.Int64
    if store is None or store == batch:
        return batch
    culprit = next((o for o in origins if o.typed and o.dtype != store), None) or \
        next(o for o in origins if o.not_integer is not None)
    kind = "integers" if store == pl.Int64 else "text"
    found = (f"text that is not a canonical integer (e.g. {culprit.not_integer!r})"
             if not culprit.typed else ("integers" if culprit.dtype == pl.Int64 else "text"))
    raise DataError(f"{entity} ids here are {found} but the store's {entity} ids are {kind}: "
                    "external ids keep their type", path=culprit.path, column=culprit.column)
