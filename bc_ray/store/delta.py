"""A Delta Lake view of the current embedding tables, for engines that cannot read bc_ray's log.

Spark, Trino, DuckDB or a Feast offline store cannot tell committed Parquet files under
`embeddings/` from staged or replaced ones. After every change of the current tables (a refresh
that publishes, a rollback) the driver commits one Delta version whose add actions point at the
Parquet files already written and committed (no copy), partitioned by `entity`: the same
workers-write, driver-commits shape as Ray Data's Delta sink. The Delta table's root is the store
root, so its `_delta_log/` sits beside bc_ray's `_log/` (`spark.read.format("delta")
.load(STORE_URI)`); file paths in it are relative, so the store can be moved or mirrored.

The Delta version and the files it references are recorded in bc_ray's log (`delta.mirrored`):
retention keeps every file the mirror still names, so a mirror that lags (a crash between the
two commits) never points at deleted files, and Delta's own vacuum is never needed.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq

from bc_ray.exceptions import StoreError
from bc_ray.store.io import StorageOptions
from bc_ray.store.state import StoreState, TableRecord
from bc_ray.store.store import Store, utc_now
from bc_ray.store.tables import ENTITIES

logger = logging.getLogger(__name__)


def current_tables(state: StoreState) -> dict[str, TableRecord]:
    """Per entity, the table readers of the latest get: the newest on the current lineage."""
    tables = {}
    for entity in ENTITIES:
        for version in reversed(state.lineage()):
            if (table := state.table(version, entity)) is not None:
                tables[entity] = table
                break
    return tables


def mirror_embeddings(store: Store) -> int | None:
    """Commit the current tables as the next Delta version (nothing when the mirror already
    shows them); returns the Delta version now current. Raises `StoreError` when it cannot."""
    try:
        from deltalake import DeltaTable, Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions
    except ImportError as exc:  # pragma: no cover - deltalake is a dependency
        raise StoreError("the Delta mirror needs the `deltalake` package") from exc
    state = store.state()
    tables = current_tables(state)
    if not tables:
        return None
    paths = sorted(f.path for table in tables.values() for f in table.files)
    if state.delta.get("paths") == paths:
        return state.delta["delta_version"]
    schema, actions = _schema_and_actions(store, tables, AddAction)
    root, options = _location(store)
    try:
        if _exists(store):
            DeltaTable(root, storage_options=options).create_write_transaction(
                actions, mode="overwrite", schema=Schema.from_arrow(schema),
                partition_by=["entity"])
        else:
            create_table_with_add_actions(root, Schema.from_arrow(schema), actions, mode="error",
                                          partition_by=["entity"], name="bc_ray_embeddings",
                                          storage_options=options)
        delta_version = DeltaTable(root, storage_options=options).version()
    except Exception as exc:  # noqa: BLE001 - deltalake raises several unrelated types
        raise StoreError(f"the Delta mirror at {store.io.uri} could not commit: {exc}") from exc

    def build(current: StoreState) -> list[dict]:
        return [{"type": "delta.mirrored", "delta_version": delta_version, "paths": paths,
                 "tables": {e: t.refresh_id for e, t in tables.items()},
                 "at": utc_now().isoformat()}]

    store.commit(build)
    return delta_version


def mirror_quietly(store: Store) -> None:
    """After a commit that changed the current tables: a mirror that fails is logged, never
    undoes that commit (the next change, or `bc-ray store mirror`, catches up)."""
    try:
        mirror_embeddings(store)
    except StoreError as exc:
        logger.warning("%s; readers of bc_ray's log are unaffected, run `bc-ray store mirror` "
                       "to retry", exc)


def _schema_and_actions(store: Store, tables: dict[str, TableRecord], add_action) -> tuple:
    fs = store.io.arrow_fs()
    schemas, actions = {}, []
    now_ms = int(time.time() * 1000)
    for entity, table in tables.items():
        for file in table.files:
            metadata = pq.read_metadata(store.io.path(file.path), filesystem=fs)
            schemas[entity] = metadata.schema.to_arrow_schema()
            actions.append(add_action(file.path, file.size, {"entity": entity}, now_ms, True,
                                      json.dumps({"numRecords": metadata.num_rows})))
    id_types = {str(schema.field("id").type) for schema in schemas.values()}
    if len(id_types) > 1:
        raise StoreError(f"user and item ids have different types ({sorted(id_types)}); one "
                         "Delta table partitioned by entity needs one id type")
    first = next(iter(schemas.values()))
    fields = [pa.field("entity", pa.string())]
    for field in first:  # dimensions change with versions: a variable-length list in Delta
        fields.append(pa.field("embedding", pa.list_(pa.float32())) if field.name == "embedding"
                      else field.remove_metadata())
    return pa.schema(fields), actions


def _location(store: Store) -> tuple[str, dict[str, str] | None]:
    """The Delta table's root (the store root) and its object_store options."""
    if store.io.scheme == "file":
        return store.io.path(), None
    return store.io.uri, s3_options(store.io.options)


def s3_options(opts: StorageOptions) -> dict[str, str]:
    """object_store options for S3: the endpoint and region only (credentials come from the
    default chain, as everywhere else), and put-if-absent commits, like bc_ray's own log."""
    options = {"conditional_put": "etag"}
    if opts.endpoint_url:
        options["AWS_ENDPOINT_URL"] = opts.endpoint_url
        if opts.endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if opts.region:
        options["AWS_REGION"] = opts.region
    if opts.key:
        options.update(AWS_ACCESS_KEY_ID=opts.key, AWS_SECRET_ACCESS_KEY=opts.secret)
        if opts.token:
            options["AWS_SESSION_TOKEN"] = opts.token
    return options


def _exists(store: Store) -> bool:
    return bool(store.io.list_dir("_delta_log"))
