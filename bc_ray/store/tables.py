"""Embedding tables in the store: Parquet files under a fresh prefix, published for both entities
by one log entry (readers see the new user and item tables together, or neither)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from bc_ray import chain
from bc_ray.exceptions import CorruptFileError, StoreError
from bc_ray.io import damaged_or_unreachable
from bc_ray.memory import return_freed_memory
from bc_ray.store.actions import RefreshPublished
from bc_ray.store.parquet import (
    embedding_matrix,
    embedding_parquet_bytes,
    embedding_table,
    from_parquet_bytes,
    parquet_row_groups,
    read_footer,
)
from bc_ray.store.state import FileRecord, StoreState, TableRecord
from bc_ray.store.store import Store

ENTITIES = ("user", "item")
ROWS_PER_FILE = 1_000_000


@dataclass
class TableFiles:
    """What a writer produced for one entity, ready to be published."""

    entity: str
    files: list[FileRecord]
    rows: int
    dim: int
    stats: dict = field(default_factory=dict)
    cache: dict[str, FileRecord] = field(default_factory=dict)


def table_prefix(store: Store, version: int, entity: str, refresh_id: str) -> str:
    return f"embeddings/v{version}/{entity}/{refresh_id}"


def write_table(store: Store, prefix: str, ids, matrix: np.ndarray, version: int,
                refreshed_at: datetime, rows_per_file: int = ROWS_PER_FILE) -> list[FileRecord]:
    """Driver-side write (small tables, tests, exports); Ray Data writes large ones."""
    ids = ids if isinstance(ids, pa.Array) else pa.array(ids)
    files = []
    for part, start in enumerate(range(0, max(len(ids), 1), rows_per_file)):
        table = embedding_table(ids[start:start + rows_per_file],
                                matrix[start:start + rows_per_file], version, refreshed_at)
        files.append(store.put(f"{prefix}/part-{part:05d}.parquet", embedding_parquet_bytes(table)))
    return files


def table_refreshes(state: StoreState, version: int) -> dict[str, str | None]:
    """The refresh of each entity's table of `version` in `state` (None: none yet)."""
    return {e: t.refresh_id if (t := state.table(version, e)) is not None else None
            for e in ENTITIES}


def publish_refresh(store: Store, version: int, refresh_id: str, tables: list[TableFiles],
                    snapshot_id: str, cutoff: float, mode: str, refreshed_at: datetime,
                    over: dict[str, str | None] | None = None) -> StoreState:
    """One commit publishing both tables; the Delta mirror and retention follow it (its
    post-commit hooks). `over`: the tables the refresh was planned from (`table_refreshes`):
    the commit is refused when another refresh replaced them meanwhile, which the slower of
    two overlapping refreshes would otherwise undo (with an older snapshot, or its increment
    computed against tables no longer current)."""
    def build(state: StoreState) -> list[RefreshPublished]:
        record = state.version(version)
        if record.status != "published":
            raise StoreError(f"cannot publish embeddings of version {version}: it is "
                             f"{record.status}")
        if over is not None and (now := table_refreshes(state, version)) != over:
            raise StoreError(f"another refresh of version {version} was published while this "
                             f"one ran (tables {now}, this one was planned from {over}): "
                             "nothing published; run it again to refresh from there")
        return refresh_actions(version, refresh_id, tables, snapshot_id, cutoff, mode,
                               refreshed_at)

    return store.commit(build)


def refresh_actions(version: int, refresh_id: str, tables: list[TableFiles], snapshot_id: str,
                    cutoff: float, mode: str, refreshed_at: datetime) -> list[RefreshPublished]:
    """The log actions that make `tables` version `version`'s current user and item tables (a
    refresh, or a version published with its tables: `versions.publish_with_tables`)."""
    if {t.entity for t in tables} != set(ENTITIES):
        raise StoreError("a refresh publishes the user and the item table together")
    return [RefreshPublished(version=version, entity=t.entity, refresh_id=refresh_id,
                             files=t.files, rows=t.rows, dim=t.dim,
                             refreshed_at=refreshed_at.isoformat(), snapshot_id=snapshot_id,
                             cutoff=cutoff, mode=mode, stats=t.stats, cache=t.cache)
            for t in tables]


def table_parts(store: Store, record: TableRecord, columns: list[str] | None = None,
                verify: bool = True) -> Iterator[pa.Table]:
    """A table's files a file at a time (at most `ROWS_PER_FILE` rows each), for readers that
    keep a part of each (`named_parts(by_row_group=True)` reads a row group at a time). Every
    file is checked against what the log recorded: its size, its sha256 (unless `verify` is
    False, which trusts the bytes for speed and leaves only the Parquet page checksums) and the
    table's row count, so a damaged file is a `CorruptFileError`, never fewer or different
    rows. The count is checked as the parts come (a part past it stops the read, before a
    reader copies it) and once the last file is read, so a caller must read them all."""
    for _, part in named_parts(store, record, columns, verify):
        yield part


def named_parts(store: Store, record: TableRecord, columns: list[str] | None = None,
                verify: bool = True, by_row_group: bool = False
                ) -> Iterator[tuple[str, pa.Table]]:
    """`table_parts`, each with the URI of its file (for errors that name it)."""
    if not record.files:
        raise StoreError(f"table v{record.version}/{record.entity} lists no files")
    rows = 0
    for file in record.files:
        data, name = store.get(file, verify=verify), store.io.uri_of(file.path)
        parts = (parquet_row_groups(data, name, columns) if by_row_group
                 else [from_parquet_bytes(data, name, columns)])
        for part in parts:
            rows += part.num_rows
            if rows > record.rows:  # before a reader writes past what it allocated
                raise CorruptFileError(f"table v{record.version}/{record.entity} holds more "
                                       f"rows than the log's {record.rows} by {name}: a "
                                       "damaged or replaced file")
            yield name, part
    check_rows(store, record, rows)


def read_embedding_rows(store: Store, record: TableRecord, transform: chain.Affine | None = None,
                        verify: bool = True) -> tuple[pa.Array, np.ndarray]:
    """A table's ids and its embeddings (through `transform` when given), a row group at a time
    into one matrix allocated up front: a reader holds its result, one file's bytes and one
    group's decoding, never the whole table twice (joining the files' rows and then
    transforming them held it three times)."""
    dim = record.dim if transform is None else transform[0].shape[0]
    matrix = np.empty((record.rows, dim), dtype=np.float32)
    ids: list[pa.Array] = []
    start = 0
    for name, part in named_parts(store, record, ["id", "embedding"], verify, by_row_group=True):
        try:
            rows = embedding_matrix(part.column("embedding"), record.dim)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{name}: {exc}") from exc
        part_ids = part.column("id").combine_chunks()
        if ids and part_ids.type != ids[0].type:
            raise CorruptFileError(f"{name} holds ids of type {part_ids.type}, the table's "
                                   f"other files {ids[0].type}: a damaged or replaced file")
        end = start + rows.shape[0]
        if transform is None:
            matrix[start:end] = rows
        else:
            chain.apply(rows, transform, out=matrix[start:end])
        ids.append(part_ids)
        start = end
        del part, rows  # this group's pages go before the next group's are decoded
    return_freed_memory()  # the groups' pages the allocators kept
    return pa.concat_arrays(ids), matrix


def check_rows(store: Store, record: TableRecord, rows: int) -> None:
    if rows != record.rows:
        where = ", ".join(store.io.uri_of(f.path) for f in record.files)
        raise CorruptFileError(f"table v{record.version}/{record.entity} holds {rows} rows, the "
                               f"log says {record.rows}: damaged or replaced files ({where})")


def verify_files(store: Store, record: TableRecord, verify: bool = True) -> None:
    """What `table_parts` checks, without loading the table: for readers that hand the files to
    another engine (polars' lazy scan), which must never see a damaged byte."""
    rows = 0
    for file in record.files:
        if verify:
            store.verify(file)
        else:
            store.check_size(file)
        rows += _footer_rows(store, file)
    check_rows(store, record, rows)


def _footer_rows(store: Store, file: FileRecord) -> int:
    """The row count in a file's footer (`read_footer`: no AWS C++ SDK in consumers)."""
    try:
        return read_footer(store.io, file.path).num_rows
    except Exception as exc:  # noqa: BLE001 - any failure to parse a footer is damage
        raise damaged_or_unreachable(exc, f"cannot read the Parquet footer of "
                                          f"{store.io.uri_of(file.path)}: {exc}") from exc
