"""A Delta Lake view of the current embedding tables, for engines that cannot read bc_ray's log.

Spark, Trino, DuckDB, polars, Daft or a Feast offline store cannot tell committed Parquet files
under `embeddings/` from staged or replaced ones. After every change of the current tables (a
refresh that publishes, a rollback) the driver commits one Delta version naming exactly the
current user and item tables, partitioned by `entity`: the same workers-write, driver-commits
shape as Ray Data's Delta sink.

The table's root is `<store>/delta/` and holds nothing but the Delta table: its data files are
copies of the current tables' files (a hard link on a local disk, a server-side copy on S3),
because every Delta engine joins a file's path to the table's root (`deltalake` cannot read
absolute paths) and a VACUUM deletes whatever under the root the current version does not name.
So no VACUUM, in any mode and with any retention, can delete a file bc_ray needs (the
snapshots, models, layer caches and the tables kept for rollback); bc_ray vacuums the copies the
Delta table no longer names itself, after the store's grace period. Readers load
`spark.read.format("delta").load(STORE_URI + "/delta")`. Stores whose Delta table was at the
store root (before issue 25) move on their next mirror, which removes the old `_delta_log/`.

`sync` compares the actual Delta table (its files, schema and properties) with the current
tables, so `bc-ray store mirror` repairs a table that was removed, overwritten or left behind.
When the mirror runs, how it is recorded in bc_ray's log, and that a mirror that fails never fails
the commit it follows, is `maintenance.py`'s (a post-commit hook); this module is the Delta side.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

import bc_ray
from bc_ray.exceptions import StoreError, UnmirrorableError
from bc_ray.io import StorageOptions
from bc_ray.store.parquet import embedding_parquet_bytes, has_arrow_schema, read_footer
from bc_ray.store.state import FileRecord, StoreState, TableRecord
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.tables import ENTITIES

logger = logging.getLogger(__name__)

DELTA_ROOT = "delta"  # store-relative root of the Delta table: nothing else lives under it
LEGACY_LOG = "_delta_log"  # the table's log when its root was the store root (before issue 25)
CHECKPOINT_INTERVAL = 10  # commits between checkpoints (Delta's default, 100, is never reached)
TABLE_NAME = "bc_ray_embeddings"
DESCRIPTION = ("bc_ray's current user and item embeddings (partitioned by entity), one version "
               "per refresh or rollback; written by bc_ray, never by hand (`bc-ray store mirror` "
               "repairs it). Older versions are readable for the store's grace period.")


@dataclass(frozen=True)
class MirroredFile:
    """One file of a current table and its copy under the Delta table's root."""

    entity: str
    table: TableRecord
    source: FileRecord

    @property
    def path(self) -> str:
        """Relative to the Delta root: unique per table file, so a copy is never replaced."""
        name = posixpath.basename(self.source.path)
        return f"entity={self.entity}/v{self.table.version}-{self.table.refresh_id}-{name}"


def current_tables(state: StoreState) -> dict[str, TableRecord]:
    """Per entity, the table readers of the latest get: the newest on the current lineage."""
    tables = {}
    for entity in ENTITIES:
        for version in reversed(state.lineage()):
            if (table := state.table(version, entity)) is not None:
                tables[entity] = table
                break
    return tables


def sync(store: Store, state: StoreState, tables: dict[str, TableRecord]) -> int:
    """Make the Delta table show `tables` (the current ones), committing a Delta version only
    when it does not (missing, removed, overwritten, behind), and vacuum the copies no version
    within the grace period names; returns the Delta version now current. Raises `StoreError`
    when it cannot."""
    files = [MirroredFile(e, t, f) for e, t in tables.items() for f in t.files]
    try:
        id_type = _one_id_type(store, tables)
        version = _sync_table(store, state, files, id_type)
        _vacuum_copies(store, state)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - deltalake and the filesystems raise many types
        raise StoreError(f"the Delta table at {store.io.uri_of(DELTA_ROOT)} could not be "
                         f"brought up to date: {_first_line(exc)}") from exc
    return version


def _first_line(exc: Exception) -> str:
    """deltalake's errors carry a multi-line backtrace: the message is its first line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _sync_table(store: Store, state: StoreState, files: list[MirroredFile],
                id_type: pa.DataType | None) -> int:
    """Copy what is missing, then commit the current files unless the table already shows them
    with bc_ray's schema and properties."""
    from deltalake import DeltaTable

    root, options = _location(store)
    sizes = _copy_missing(store, files)
    config = table_properties(RetentionPolicy.of(state) or store.retention)
    table = _open(root, options)
    if table is not None and _shows(table, files, config):
        return table.version()
    actions = _add_actions(store, files, sizes)
    _commit(root, options, table, table_schema(id_type), actions, config,
            _commit_info(state, files))
    return DeltaTable(root, storage_options=options).version()


def _open(root: str, options: dict[str, str] | None):
    """The Delta table, or None where there is none (never created, its log removed, or only a
    staging file left by a commit that was killed)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(root, storage_options=options)
    except TableNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - never deleted here: the error may be transient
        raise StoreError(f"the Delta table at {root} cannot be read ({_first_line(exc)}); if "
                         "it is damaged, delete that folder and run `bc-ray store mirror` to "
                         "recreate it (bc_ray's own files are not in it)") from exc


def _shows(table, files: list[MirroredFile], config: dict[str, str]) -> bool:
    """Whether the table's current version is exactly these files with bc_ray's metadata."""
    schema = pa.schema(table.schema().to_arrow())
    if "id" not in schema.names or not _is_bc_ray_table(table, table_schema(
            schema.field("id").type), config):
        return False
    named = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
    return sorted(named) == sorted(f.path for f in files)


def _is_bc_ray_table(table, schema: pa.Schema, config: dict[str, str]) -> bool:
    """Whether the table's metadata is what bc_ray writes: schema, partitioning, properties."""
    return (_same_schema(table, schema) and table.metadata().partition_columns == ["entity"]
            and _has_properties(table, config))


def _same_schema(table, schema: pa.Schema) -> bool:
    from deltalake import Schema

    return table.schema().to_json() == Schema.from_arrow(schema).to_json()


def _has_properties(table, config: dict[str, str]) -> bool:
    configuration = table.metadata().configuration
    return all(configuration.get(k) == v for k, v in config.items())


def table_schema(id_type: pa.DataType) -> pa.Schema:
    """The Delta table's columns: those of bc_ray's embedding files (`embedding_table`), the
    vectors as variable-length lists (dimensions change with versions), and `entity`."""
    return pa.schema([("entity", pa.string()), ("id", id_type),
                      ("embedding", pa.list_(pa.float32())), ("version", pa.int32()),
                      ("refreshed_at", pa.timestamp("us", tz="UTC"))])


def _commit(root: str, options, table, schema: pa.Schema, actions: list, config: dict[str, str],
            info: dict) -> None:
    """One commit replacing the table's files: a plain overwrite when its metadata is already
    bc_ray's, else a replace that also rewrites schema, properties and description."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    properties = CommitProperties(custom_metadata=info)
    if table is not None and _is_bc_ray_table(table, schema, config):
        DeltaTable(root, storage_options=options).create_write_transaction(
            actions, mode="overwrite", schema=Schema.from_arrow(schema), partition_by=["entity"],
            commit_properties=properties)
        return
    create_table_with_add_actions(root, Schema.from_arrow(schema), actions, mode="overwrite",
                                  partition_by=["entity"], name=TABLE_NAME,
                                  description=DESCRIPTION, configuration=config,
                                  storage_options=options, commit_properties=properties)


def table_properties(policy: RetentionPolicy) -> dict[str, str]:
    """Delta properties matching the store's retention: an older Delta version stays readable
    (its copies and its log) for the grace period bc_ray keeps unreferenced files."""
    grace = f"interval {int(math.ceil(policy.staging_grace_seconds))} seconds"
    return {"delta.deletedFileRetentionDuration": grace, "delta.logRetentionDuration": grace,
            "delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}


def _commit_info(state: StoreState, files: list[MirroredFile]) -> dict[str, str]:
    """What the commit shows in `DESCRIBE HISTORY`: bc_ray's version and refresh per entity."""
    tables = {f.entity: f.table for f in files}
    return {"bc_ray.package_version": bc_ray.__version__, "bc_ray.log_seq": str(state.seq),
            **{f"bc_ray.{e}.version": str(t.version) for e, t in tables.items()},
            **{f"bc_ray.{e}.refresh_id": t.refresh_id for e, t in tables.items()}}


def _copy_missing(store: Store, files: list[MirroredFile]) -> dict[str, int]:
    """Copy each current file under the Delta root unless an intact copy is there; returns
    the copies' sizes."""
    sizes = {}
    for entity in {f.entity for f in files}:
        sizes.update(_listed_sizes(store, f"entity={entity}"))
    for file in files:
        size = sizes.get(file.path)
        if size == file.source.size or (size is not None
                                        and _legacy_encoding(store, file.source)):
            continue
        _copy(store, file)
        sizes[file.path] = store.io.size(f"{DELTA_ROOT}/{file.path}")
    return sizes


def _listed_sizes(store: Store, folder: str) -> dict[str, int]:
    """Sizes of the files in a folder of the Delta root, by path relative to that root."""
    try:
        entries = store.io.fs.ls(store.io.path(f"{DELTA_ROOT}/{folder}"), detail=True,
                                 refresh=True)
    except FileNotFoundError:
        return {}
    return {f"{folder}/{posixpath.basename(e['name'].rstrip('/'))}": int(e["size"])
            for e in entries if e.get("type") == "file"}


def _copy(store: Store, file: MirroredFile) -> None:
    """A hard link locally (no bytes copied), a server-side copy on S3. Files written before
    issue 25 embed pyarrow's schema (fixed-size lists other engines refuse): re-encoded, and
    put in place atomically (a re-encoded copy that exists is whole)."""
    rel = f"{DELTA_ROOT}/{file.path}"
    if _legacy_encoding(store, file.source):
        table = pq.read_table(pa.BufferReader(store.get(file.source)))
        store.io.replace(rel, embedding_parquet_bytes(table))
        return
    source, target = store.io.path(file.source.path), store.io.path(rel)
    if store.io.scheme == "file":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            os.remove(target)
        try:
            os.link(source, target)
        except OSError:  # another filesystem, or one without hard links
            store.io.fs.copy(source, target)
        # A link keeps the source's (maybe days-old) mtime: a VACUUM running before this
        # mirror commits would take the copy for an old untracked file and delete it.
        os.utime(target)
        return
    store.io.fs.copy(source, target)


def _legacy_encoding(store: Store, file: FileRecord) -> bool:
    return has_arrow_schema(read_footer(store.io, file.path))


def _add_actions(store: Store, files: list[MirroredFile], sizes: dict[str, int]) -> list:
    """One add action per copy, with its row count and the ids' min/max (engines skip files
    by them)."""
    from deltalake.transaction import AddAction

    now_ms = int(time.time() * 1000)
    return [AddAction(file.path, sizes[file.path], {"entity": file.entity}, now_ms, True,
                      json.dumps(_stats(read_footer(store.io, f"{DELTA_ROOT}/{file.path}"))))
            for file in files]


def _one_id_type(store: Store, tables: dict[str, TableRecord]) -> pa.DataType | None:
    """The ids' type, read before anything is copied (one footer per table: a table's files
    share its schema). One Delta table partitioned by entity needs one: a store whose entities'
    ids differ in type has no Delta view, and what earlier syncs copied for it goes."""
    id_types = {read_footer(store.io, t.files[0].path).schema.to_arrow_schema()
                .field("id").type for t in tables.values() if t.files}
    if len(id_types) > 1:
        _remove_unnamed_copies(store)
        raise UnmirrorableError(
            f"user and item ids have different types ({sorted(map(str, id_types))}): one Delta "
            "table partitioned by entity needs one id type; read the tables through bc_ray "
            "(read_embeddings, Serve) or export one entity at a time (bc-ray export --entity)")
    return id_types.pop() if id_types else None


def _remove_unnamed_copies(store: Store) -> None:
    """Copies under a root with no Delta table are named by no reader."""
    root, options = _location(store)
    if _open(root, options) is None:
        for entity in ENTITIES:
            store.io.delete(f"{DELTA_ROOT}/entity={entity}", recursive=True)


def _stats(metadata: pq.FileMetaData) -> dict:
    """Delta file statistics for `id` from the Parquet footer's row-group statistics."""
    column = metadata.schema.names.index("id")
    stats: dict = {"numRecords": metadata.num_rows}
    groups = [metadata.row_group(g).column(column).statistics
              for g in range(metadata.num_row_groups)]
    if groups and all(s is not None and s.has_null_count for s in groups):
        stats["nullCount"] = {"id": sum(s.null_count for s in groups)}
    if groups and all(s is not None and s.has_min_max for s in groups):
        stats["minValues"] = {"id": min(s.min for s in groups)}
        stats["maxValues"] = {"id": max(s.max for s in groups)}
    return stats


def _vacuum_copies(store: Store, state: StoreState) -> None:
    """Delete the copies that no Delta version within the grace period names, so they do not
    pile up. Delta's own full vacuum lists them (a dry run: no VACUUM commits, so Delta versions
    stay one per change of the current tables); only data files under the root are deleted."""
    from deltalake import DeltaTable

    root, options = _location(store)
    policy = RetentionPolicy.of(state) or store.retention
    hours = int(math.ceil(policy.staging_grace_seconds / 3600))
    expired = DeltaTable(root, storage_options=options).vacuum(
        retention_hours=hours, dry_run=True, enforce_retention_duration=False, full=True)
    for path in expired:
        if path.startswith("entity=") and ".." not in path.split("/"):
            store.io.delete(f"{DELTA_ROOT}/{path}")


def remove_legacy_log(store: Store) -> None:
    """The Delta table of a store written before issue 25 had the store root as its root: its
    log goes once the table at `delta/` exists (a VACUUM there would delete bc_ray's files)."""
    if store.io.list_dir(LEGACY_LOG):
        logger.warning("the Delta table of %s moved to %s; removing its old log at the store "
                       "root", store.io.uri, store.io.uri_of(DELTA_ROOT))
        store.io.delete(LEGACY_LOG, recursive=True)


def _location(store: Store) -> tuple[str, dict[str, str] | None]:
    """The Delta table's root and its object_store options."""
    if store.io.scheme == "file":
        return store.io.path(DELTA_ROOT), None
    return store.io.uri_of(DELTA_ROOT), s3_options(store.io.options)


def delta_uri(store: Store) -> str:
    """Where engines load the Delta table from."""
    return store.io.uri_of(DELTA_ROOT)


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
