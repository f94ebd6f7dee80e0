"""Materialise a ver-j compatible view (z~_j) for engines that cannot apply the transform chain:
one Parquet file, or a Delta table partitioned by entity (Spark, Trino, DuckDB, Feast)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from bc_ray.consumer.reader import read_embeddings_at, source_table
from bc_ray.consumer.target import ExportTarget
from bc_ray.exceptions import ConfigError
from bc_ray.io import FileIO, StorageOptions
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES

FORMATS = ("parquet", "delta")


def export_delta(store_uri: str, out: str, version: int | None = None,
                 entities: tuple[str, ...] = ENTITIES, *,
                 options: StorageOptions | None = None) -> dict[str, int]:
    """Write the ver-`version` compatible embeddings of `entities` as one Delta table at `out`
    (replacing what an earlier export left there, in one Delta commit); rows per entity.

    Every entity is read from one state of the store, so a bump or refresh that lands during
    the export never gives users of one version and items of another."""
    from deltalake import write_deltalake

    unknown = set(entities) - set(ENTITIES)
    if unknown or not entities:
        raise ConfigError(f"entities must be among {ENTITIES}, got {list(entities)}")
    target = ExportTarget.delta(store_uri, out, options)
    store = Store(store_uri, options)
    state = store.written_state()
    version = _common_version(state, entities) if version is None else version
    parts = {entity: _view(store, state, entity, version) for entity in entities}
    if len({str(part.schema.field("id").type) for part in parts.values()}) > 1:
        raise ConfigError("user and item ids have different types: export one entity per "
                          "Delta table (--entity)")
    write_deltalake(target.delta_location(), pa.concat_tables(parts.values()),
                    partition_by=["entity"], mode="overwrite", schema_mode="overwrite",
                    storage_options=_delta_options(target.io))
    return {entity: part.num_rows for entity, part in parts.items()}


def _view(store: Store, state: StoreState, entity: str, version: int | None) -> pa.Table:
    """One entity's ver-`version` view with the store's own Delta columns (`table_schema`):
    `version` is the version whose embedding space the rows are in, `refreshed_at` when the
    table they were computed from was refreshed."""
    from bc_ray.store.delta import table_schema

    record, target = source_table(state, entity, version, prefer_stored=True)
    frame = read_embeddings_at(store, state, entity, version).to_arrow()
    rows = frame.num_rows
    refreshed = datetime.fromisoformat(record.refreshed_at).astimezone(timezone.utc)
    columns = {"entity": pa.array([entity] * rows), "id": frame.column("id"),
               "embedding": frame.column("embedding"),
               "version": pa.array(np.full(rows, target, dtype=np.int32)),
               "refreshed_at": pa.array([refreshed] * rows, pa.timestamp("us", tz="UTC"))}
    return pa.table(columns).cast(table_schema(frame.schema.field("id").type))


def _common_version(state: StoreState, entities: tuple[str, ...]) -> int | None:
    """The latest version on the lineage refreshed for every entity (None: let the reader say
    what is missing), so the latest export is one version, never a mix."""
    refreshed = [v for v in state.lineage()
                 if all(state.table(v, entity) is not None for entity in entities)]
    return refreshed[-1] if refreshed else None


def _delta_options(io: FileIO) -> dict[str, str] | None:
    if io.scheme == "file":
        return None
    from bc_ray.store.delta import s3_options

    return s3_options(io.options)
