"""Parquet encoding used by every table bc_ray writes, and the embedding-table schema.

Pages carry CRC checksums (verified on every read), so a flipped byte is reported with the file's
name instead of silently returning wrong embeddings; the log's size and sha256 catch truncation.
"""

from __future__ import annotations

import hashlib
import io as _io
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bc_ray.exceptions import CorruptFileError, ShapeError
from bc_ray.io import FileIO

ROW_GROUP_ROWS = 131_072
EMBEDDING_COLUMNS = ("id", "embedding", "version", "refreshed_at")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_parquet_bytes(table: pa.Table, row_group_size: int = ROW_GROUP_ROWS) -> bytes:
    sink = _io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size, write_page_checksum=True,
                   compression="snappy")
    return sink.getvalue()


def embedding_parquet_bytes(table: pa.Table) -> bytes:
    """An embedding table (`embedding_table`): float vectors neither compress (snappy saved 4 %)
    nor repeat, so they skip both compression and the dictionary attempt, which took a third of
    the encoding time (measured at 860k rows x 64). Snappy stays on the other columns.

    Written without pyarrow's embedded Arrow schema: Parquet has no fixed-size list, and only
    pyarrow would restore `fixed_size_list<float>[D]` from that metadata, so polars, DuckDB,
    Spark and Daft would disagree with the Delta view's `array<float>` (issue 25). Every engine
    reads `list<float>`; bc_ray's readers restore the fixed size (`embedding_matrix`)."""
    sink = _io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, write_page_checksum=True,
                   compression={"id": "snappy", "embedding": "none", "version": "snappy",
                                "refreshed_at": "snappy"},
                   use_dictionary=["version", "refreshed_at"], store_schema=False)
    return sink.getvalue()


def has_arrow_schema(metadata: pq.FileMetaData) -> bool:
    """Whether a Parquet file embeds pyarrow's schema (embedding files bc_ray wrote before
    issue 25 do: their vectors then read as fixed-size lists in pyarrow only)."""
    return b"ARROW:schema" in (metadata.metadata or {})


def frame_to_parquet_bytes(frame) -> bytes:
    """A polars frame through polars' multi-threaded writer (no page checksums): for row tables
    whose every read verifies the sha256 the log recorded (ingested batches)."""
    sink = _io.BytesIO()
    frame.write_parquet(sink, compression="lz4", row_group_size=ROW_GROUP_ROWS)
    return sink.getvalue()


def from_parquet_bytes(data: bytes, name: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns,
                             page_checksum_verification=True)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes the reader raise
        raise CorruptFileError(f"cannot read Parquet file {name}: {exc}") from exc


def parquet_row_groups(data: bytes, name: str, columns: list[str] | None = None
                       ) -> Iterator[pa.Table]:
    """`from_parquet_bytes` a row group at a time (a file of no group: one empty part): a
    reader that copies each group out holds the file's bytes and one group's decoding (a whole
    file decoded at once peaked at twice the table's size beside its bytes)."""
    try:
        file = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        groups, schema = file.metadata.num_row_groups, file.schema_arrow
    except Exception as exc:  # noqa: BLE001 - as in from_parquet_bytes
        raise CorruptFileError(f"cannot read Parquet file {name}: {exc}") from exc
    missing = [c for c in columns or [] if c not in schema.names]
    if missing:  # pq.read_table refuses them; a row group read would silently leave them out
        raise CorruptFileError(f"Parquet file {name} has no column {', '.join(missing)}")
    if not groups:
        yield (schema if columns is None else pa.schema([schema.field(c) for c in columns])
               ).empty_table()
    for group in range(groups):
        try:
            part = file.read_row_group(group, columns=columns)
        except Exception as exc:  # noqa: BLE001
            raise CorruptFileError(f"cannot read Parquet file {name}: {exc}") from exc
        yield part


def embedding_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, dim) float32 matrix as a fixed-size-list column, without copying."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ShapeError(f"embeddings must be a 2-D matrix, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embedding_table(ids: pa.Array | np.ndarray | list, matrix: np.ndarray, version: int,
                    refreshed_at: datetime) -> pa.Table:
    ids = ids if isinstance(ids, pa.Array) else pa.array(ids)
    if len(ids) != matrix.shape[0]:
        raise ShapeError(f"{len(ids)} ids but {matrix.shape[0]} embedding rows")
    rows = len(ids)
    return pa.table({
        "id": ids,
        "embedding": embedding_array(matrix),
        "version": pa.array(np.full(rows, version, dtype=np.int32)),
        "refreshed_at": pa.repeat(pa.scalar(refreshed_at, type=pa.timestamp("us", tz="UTC")),
                                  rows),
    })


def embedding_matrix(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """The embedding column back as a (rows, dim) float32 matrix (zero-copy per chunk).

    Fixed-size lists (refresh blocks, files written before issue 25) or lists that all hold
    `dim` values (the files written since, see `embedding_parquet_bytes`); `dim` defaults to the
    first row's length. A ragged or null row is damage, never a silently reshaped matrix."""
    chunks = [c for c in (column.chunks if isinstance(column, pa.ChunkedArray) else [column])
              if len(c)]
    if not chunks:
        return np.zeros((0, dim or 0), dtype=np.float32)
    kind = chunks[0].type
    if pa.types.is_fixed_size_list(kind) and pa.types.is_float32(kind.value_type):
        if dim is not None and kind.list_size != dim:
            raise CorruptFileError(f"the embedding column holds vectors of {kind.list_size} "
                                   f"values, not the table's dimension {dim}")
        dim = kind.list_size
        parts = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) for c in chunks]
    elif pa.types.is_list(kind) and pa.types.is_float32(kind.value_type):
        dim = len(chunks[0][0]) if dim is None else dim
        parts = [_uniform_rows(c, dim) for c in chunks]
    else:
        raise CorruptFileError(f"the embedding column is {kind}, not lists of float32")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _uniform_rows(chunk: pa.ListArray, dim: int) -> np.ndarray:
    """A list<float> chunk whose every row holds `dim` values, as a (rows, dim) matrix."""
    offsets = chunk.offsets.to_numpy()
    if chunk.null_count or not np.all(np.diff(offsets) == dim):
        raise CorruptFileError(f"the embedding column has null rows or rows whose length is "
                               f"not the table's dimension {dim}")
    values = chunk.values.slice(offsets[0], offsets[-1] - offsets[0])
    return values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def read_footer(io: FileIO, rel: str) -> pq.FileMetaData:
    """A Parquet file's footer, read through the store's own fsspec handle: a pyarrow S3
    filesystem would start the AWS C++ SDK and its event-loop thread in the process, and a
    traceback that keeps its client alive past pyarrow's S3 finalization can abort the
    interpreter at exit (apache/arrow#41087)."""
    with io.fs.open(io.path(rel), "rb") as handle:
        return pq.read_metadata(handle)
