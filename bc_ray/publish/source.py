"""Embedding tables a team computed in its own pipeline, read and checked before anything is
written: a Parquet file, a folder (searched recursively, markers such as `_SUCCESS` skipped) or a
glob, on local disk or S3 (`bc_ray.ingest.sources.discover`), with one id column and one
embedding column holding a list or fixed-size list of floats per row.

Every check names the table (`--users` / `--items`), the file and the column: ids that are not
integers or text, null or duplicate ids, null, ragged or non-float vectors, NaN or infinity, files
of one table with different dimensions, an empty table, a missing column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bc_ray.exceptions import DataError, NotFoundError
from bc_ray.ingest.sources import SourceFile, discover
from bc_ray.io import FileIO

FLAGS = {"user": "--users", "item": "--items"}
INTEGER, TEXT = "integer", "text"
_NOT_PARQUET = (".csv", ".csv.gz", ".tsv")


@dataclass(frozen=True)
class Columns:
    """The columns a table's rows are read from (`--id-col` or the entity's own, and
    `--embedding-col`), and the option that named the id's."""

    id: str = "id"
    embedding: str = "embedding"
    id_option: str = "--id-col"


@dataclass(frozen=True)
class ExternalTable:
    """One entity's embeddings as read: ids (int64 or string, unique) and their vectors."""

    entity: str
    uri: str  # canonical: file:///abs/path or s3://bucket/key (what the version records)
    ids: pa.Array
    matrix: np.ndarray  # (rows, dim) float32, finite
    files: int
    sha256: str  # of its files' bytes, in order: the same tables published again are a retry

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def id_kind(self) -> str:
        return id_kind(self.ids.type)


def id_kind(kind: pa.DataType) -> str | None:
    """integer or text for the id types bc_ray keeps, None for any other."""
    if pa.types.is_integer(kind):
        return INTEGER
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return TEXT
    return None


def read_external(uri: str, entity: str, columns: Columns) -> ExternalTable:
    """Every file of one table, checked and concatenated (raises `DataError`)."""
    flag = FLAGS[entity]
    try:
        sources = discover(uri)
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None
    read = [_read_file(source, flag, columns) for source in sources]
    parts = [part for part in read if len(part.ids)]
    if not parts:
        raise DataError(f"{flag}: the table is empty (no rows)", path=uri)
    _same(parts, flag)
    ids = pa.concat_arrays([p.ids for p in parts])
    matrix = np.concatenate([p.matrix for p in parts]) if len(parts) > 1 else parts[0].matrix
    _unique(ids, flag, uri, columns.id)
    digest = hashlib.sha256("\n".join(p.sha256 for p in read).encode()).hexdigest()
    return ExternalTable(entity, FileIO(uri).uri, ids, matrix, len(sources), digest)


class _Part(NamedTuple):
    """One file of a table as read."""

    uri: str
    ids: pa.Array
    matrix: np.ndarray
    sha256: str


def _same(parts: list[_Part], flag: str) -> None:
    """Files of one table share the id type and the dimension."""
    first = parts[0]
    for part in parts[1:]:
        if id_kind(part.ids.type) != id_kind(first.ids.type):
            raise DataError(f"{flag}: ids are {id_kind(part.ids.type)} here but "
                            f"{id_kind(first.ids.type)} in {first.uri}", path=part.uri)
        if part.matrix.shape[1] != first.matrix.shape[1]:
            raise DataError(f"{flag}: mixed dimensions: vectors of {part.matrix.shape[1]} "
                            f"values here but {first.matrix.shape[1]} in {first.uri}",
                            path=part.uri)


def _unique(ids: pa.Array, flag: str, uri: str, column: str) -> None:
    series = pl.Series("id", ids)
    duplicated = series.filter(series.is_duplicated())
    if duplicated.len():
        raise DataError(f"{flag}: {duplicated.n_unique()} ids occur more than once (e.g. "
                        f"{duplicated[0]!r}); each entity needs exactly one embedding",
                        path=uri, column=column)


def _read_file(source: SourceFile, flag: str, columns: Columns) -> _Part:
    """One Parquet file's ids and vectors, and the sha256 of its bytes."""
    uri = source.uri
    if uri.lower().endswith(_NOT_PARQUET):
        raise DataError(f"{flag}: embeddings are read from Parquet only (a CSV cannot hold a "
                        "list of floats per row)", path=uri)
    try:  # storage that fails is StorageAccessError (a retry may pass), not the file's fault
        data = FileIO(uri).read_bytes("")
    except NotFoundError:
        raise DataError(f"{flag}: file disappeared while reading", path=uri) from None
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a non-Parquet file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{flag}: cannot read as Parquet: {first}", path=uri) from None
    names = parquet.schema_arrow.names
    for column, option in ((columns.id, columns.id_option),
                           (columns.embedding, "--embedding-col")):
        if column not in names:
            raise DataError(f"{flag}: no column {column!r} (the file has {names}); name it with "
                            f"{option}", path=uri)
    table = parquet.read(columns=[columns.id, columns.embedding])
    ids = _ids(table.column(columns.id).combine_chunks(), flag, uri, columns.id)
    matrix = _matrix(table.column(columns.embedding), flag, uri, columns.embedding)
    return _Part(uri, ids, matrix, hashlib.sha256(data).hexdigest())


def _ids(column: pa.Array, flag: str, uri: str, name: str) -> pa.Array:
    """int64 or string ids without nulls."""
    kind = id_kind(column.type)
    if kind is None:
        raise DataError(f"{flag}: ids must be integers or text, not {column.type}", path=uri,
                        column=name)
    if column.null_count:
        raise DataError(f"{flag}: {column.null_count} rows have no id", path=uri, column=name)
    if kind == TEXT:
        return column.cast(pa.string())
    if pa.types.is_uint64(column.type) and len(column) and \
            int(pc.max(column).as_py()) > np.iinfo(np.int64).max:
        raise DataError(f"{flag}: ids above 2^63-1 do not fit a 64-bit integer; write them as "
                        "text", path=uri, column=name)
    return column.cast(pa.int64())


def _matrix(column: pa.ChunkedArray, flag: str, uri: str, name: str) -> np.ndarray:
    """A (rows, dim) float32 matrix from lists of floats, refused unless every row holds the
    same number of finite values."""
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)) or not pa.types.is_floating(kind.value_type):
        raise DataError(f"{flag}: the embedding column must hold a list of floats per row, "
                        f"not {kind}", path=uri, column=name)
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count:
        raise DataError(f"{flag}: {array.null_count} rows have no embedding", path=uri,
                        column=name)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if lengths.max() == 0:
        raise DataError(f"{flag}: every embedding is empty (no values)", path=uri, column=name)
    if lengths.min() != lengths.max():
        raise DataError(f"{flag}: ragged embeddings: rows hold between {lengths.min()} and "
                        f"{lengths.max()} values; every row needs the same dimension",
                        path=uri, column=name)
    values = array.flatten()
    if values.null_count:
        raise DataError(f"{flag}: {values.null_count} embedding values are null", path=uri,
                        column=name)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: inf, refused below
        matrix = values.to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = matrix.reshape(-1, int(lengths[0]))
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise DataError(f"{flag}: {int(bad.sum())} embeddings hold NaN or infinity (first at "
                        f"row {int(np.argmax(bad))}; a float64 beyond float32's range counts)",
                        path=uri, column=name)
    return matrix
