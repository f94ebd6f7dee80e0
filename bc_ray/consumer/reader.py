"""Reading embeddings as a consumer: the latest ones, or a ver-j compatible view of them.

`read_embeddings(uri, entity, version=j)` returns z~_j = W_k^j z_k + b_k^j computed from the newest
stored table through the pre-computed composed transform (one matmul), unless a real ver-j table is
still kept and holds what the newest does (`_as_fresh`), in which case that one is returned. The
``source_version`` column always says which table the rows come from (j: the real ver-j table;
k > j: transformed from ver-k).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from bc_ray import chain as chain_math
from bc_ray.consumer.target import ExportTarget
from bc_ray.exceptions import ConfigError, NotFoundError
from bc_ray.io import StorageOptions
from bc_ray.store.parquet import embedding_array
from bc_ray.store.state import StoreState, TableRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, read_embedding_rows, verify_files


def source_table(state: StoreState, entity: str, version: int | None,
            prefer_stored: bool) -> tuple[TableRecord, int]:
    """(table to read, target version): the real ver-j table if kept, preferred and as fresh as
    the newest, otherwise the newest table on the current lineage at or after the target."""
    if entity not in ENTITIES:
        raise ConfigError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
    lineage = state.lineage()
    if not lineage:
        raise NotFoundError("the store has no published version yet")
    if version is None:  # the newest table: after a bump, the previous version's until the
        # new version's first refresh lands (source_version says which)
        refreshed = [v for v in lineage if state.table(v, entity) is not None]
        target = refreshed[-1] if refreshed else lineage[-1]
    elif isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise ConfigError(f"version must be an integer (or None: the newest), got {version!r}")
    else:
        target = int(version)
    if target not in lineage:
        record = state.versions.get(target)
        why = (f" (it was {record.status.replace('_', ' ')})" if record is not None
               and record.status in ("rejected", "rolled_back") else "")
        raise NotFoundError(f"version {target} is not a published version on the current lineage "
                            f"{lineage}{why}")
    newest = None
    for candidate in reversed(lineage):
        if candidate < target:
            break
        if (newest := state.table(candidate, entity)) is not None:
            break
    real = state.table(target, entity) if prefer_stored else None
    if real is not None and (newest is None or _as_fresh(state, real, newest)):
        return real, target
    if newest is not None:
        return newest, target
    raise NotFoundError(f"no refreshed {entity} embeddings at or after version {target}; run "
                        "`bc-ray refresh`")


def _as_fresh(state: StoreState, real: TableRecord, newest: TableRecord) -> bool:
    """Whether the stored ver-j table holds what the newest one does: once version j is no
    longer current its table stops being refreshed, and the chain applied to the newest table
    also covers the users and items that arrived since. Tables refreshed on one snapshot hold
    its entities; a published one (`bc-ray publish`) holds whichever its team gave, so only
    the newest table itself is as fresh as the newest."""
    if real.refresh_id == newest.refresh_id and real.version == newest.version:
        return True
    published = state.version(real.version).external or state.version(newest.version).external
    return not published and real.snapshot_id == newest.snapshot_id


def _open(store_uri: str, entity: str, version: int | None, options: StorageOptions | None,
          prefer_stored: bool) -> tuple[Store, StoreState, TableRecord, int]:
    store = Store(store_uri, options)
    state = store.written_state()
    record, target = source_table(state, entity, version, prefer_stored)
    return store, state, record, target



def _frame(ids: pa.Array, matrix: np.ndarray, source_version: int) -> pl.DataFrame:
    table = pa.table({"id": ids, "embedding": embedding_array(matrix),
                      "source_version": pa.array(np.full(len(ids), source_version, np.int32))})
    return pl.from_arrow(table)


def read_embeddings(store_uri: str, entity: str = "item", version: int | None = None, *,
                    options: StorageOptions | None = None, prefer_stored: bool = True,
                    verify: bool = True) -> pl.DataFrame:
    """Columns ``id``, ``embedding`` (Array(Float32, D_j)) and ``source_version``.

    Every file is checked against the log (size, row count, and sha256 unless `verify=False`):
    damage is a `CorruptFileError`, never wrong rows."""
    store = Store(store_uri, options)
    return read_embeddings_at(store, store.written_state(), entity, version,
                              prefer_stored=prefer_stored, verify=verify)


def read_embeddings_at(store: Store, state: StoreState, entity: str, version: int | None, *,
                       prefer_stored: bool = True, verify: bool = True) -> pl.DataFrame:
    """`read_embeddings` as of one given state: a reader of several tables (an export of users
    and items) takes the state once, so a bump or refresh landing meanwhile never mixes in."""
    return _view_at(store, state, entity, version, prefer_stored, verify)[0]


def _view_at(store: Store, state: StoreState, entity: str, version: int | None,
             prefer_stored: bool = True, verify: bool = True) -> tuple[pl.DataFrame, int]:
    """(the rows, the version whose space they are in)."""
    record, target = source_table(state, entity, version, prefer_stored)
    transform = (store.transform_to(target, record.version, state)
                 if record.version != target else None)
    ids, matrix = read_embedding_rows(store, record, transform, verify=verify)
    return _frame(ids, matrix, record.version), target


def scan_embeddings(store_uri: str, entity: str = "item", version: int | None = None, *,
                    options: StorageOptions | None = None, prefer_stored: bool = True,
                    verify: bool = True) -> pl.LazyFrame:
    """A LazyFrame over the same rows, streamed file by file (tables larger than memory).

    The files are verified (streamed sha256, row counts from their footers) before polars sees
    them: polars trusts every byte and a damaged one can abort the process. `verify=False` skips
    the sha256 and so trusts the files."""
    store, state, record, target = _open(store_uri, entity, version, options, prefer_stored)
    verify_files(store, record, verify)
    sources = [_polars_path(store, f.path) for f in record.files]
    frame = pl.scan_parquet(sources, storage_options=_polars_options(store),
                           glob=False)  # a store under "br[a]/" is a path, not a pattern
    # files written since issue 25 hold plain lists (see `embedding_parquet_bytes`)
    frame = frame.select("id", pl.col("embedding").cast(pl.Array(pl.Float32, record.dim)))
    if record.version != target:
        transform = store.transform_to(target, record.version, state)
        dim = transform[0].shape[0]

        def apply(series: pl.Series) -> pl.Series:
            out = chain_math.apply(series.to_numpy().astype(np.float32, copy=False), transform)
            return pl.Series(series.name, out, dtype=pl.Array(pl.Float32, dim))

        frame = frame.with_columns(pl.col("embedding").map_batches(
            apply, return_dtype=pl.Array(pl.Float32, dim)))
    return frame.with_columns(source_version=pl.lit(record.version, dtype=pl.Int32))


def export_embeddings(store_uri: str, out: str, entity: str = "item", version: int | None = None,
                      *, options: StorageOptions | None = None) -> int:
    """Write the ver-j compatible table to one Parquet file, a local path (renamed into place)
    or an s3:// URI (one PUT): readers never see part of it. `out` must lie outside the store
    and must not be a folder. The file's metadata names the version whose space the rows are
    in (``bc_ray.version``; ``source_version`` is the table they were computed from) and the
    entity (``bc_ray.entity``)."""
    target = ExportTarget.parquet(store_uri, out, options, entity)
    store = Store(store_uri, options)
    frame, wanted = _view_at(store, store.written_state(), entity, version)
    target.write_parquet(frame.to_arrow().replace_schema_metadata(
        {"bc_ray.version": str(wanted), "bc_ray.entity": entity}))
    return frame.height


def _polars_path(store: Store, rel: str) -> str:
    return store.io.uri_of(rel) if store.io.scheme == "s3" else store.io.path(rel)


def _polars_options(store: Store) -> dict | None:
    if store.io.scheme != "s3":
        return None
    opts = store.io.options
    options = {}  # credentials: polars' own default chain, unless given explicitly
    if opts.region:
        options["aws_region"] = opts.region
    if opts.endpoint_url:
        options["aws_endpoint_url"] = opts.endpoint_url
        options["aws_allow_http"] = "true" if opts.endpoint_url.startswith("http://") else "false"
    if opts.key:
        options["aws_access_key_id"] = opts.key
        options["aws_secret_access_key"] = opts.secret
        if opts.token:
            options["aws_session_token"] = opts.token
    return options
