"""Every Delta reader that installs here, reading the store's Delta view into one polars frame
(entity, id, embedding as float32 lists, version), for tests comparing them with bc_ray's own
readers. A reader that is not installed is reported by `missing_readers`, never faked."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable

from bc_ray import read_embeddings
from bc_ray.store.delta import _location, current_tables
from bc_ray.store.store import Store

COLUMNS = ["entity", "id", "embedding", "version"]


def _normal(frame: pl.DataFrame) -> pl.DataFrame:
    """The reader's frame with float32 lists, and `refreshed_at` as UTC epoch microseconds (a
    reader that lost the time zone fails here: Delta timestamps are µs in UTC)."""
    assert frame.schema["refreshed_at"].time_zone is not None, frame.schema["refreshed_at"]
    return frame.select(
        *COLUMNS, pl.col("refreshed_at").dt.convert_time_zone("UTC").dt.epoch("us")
    ).with_columns(pl.col("embedding").cast(pl.List(pl.Float32)))


def read_deltalake(store: Store, version: int | None) -> pl.DataFrame:
    root, options = _location(store)
    table = DeltaTable(root, version=version, storage_options=options)
    return _normal(pl.from_arrow(table.to_pyarrow_table()))


def read_polars(store: Store, version: int | None) -> pl.DataFrame:
    root, options = _location(store)
    return _normal(pl.read_delta(root, version=version, storage_options=options))


def scan_polars(store: Store, version: int | None) -> pl.DataFrame:
    root, options = _location(store)
    return _normal(pl.scan_delta(root, version=version, storage_options=options).collect())


def read_pyarrow(store: Store, version: int | None) -> pl.DataFrame:
    """pyarrow.dataset over exactly the files the Delta log names, one entity at a time."""
    root, options = _location(store)
    table = DeltaTable(root, version=version, storage_options=options)
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    frames = []
    for entity in ("user", "item"):
        paths = [store.io.path(f"delta/{p}") for p, e in
                 zip(actions["path"], actions["partition.entity"]) if e == entity]
        data = pads.dataset(paths, format="parquet", filesystem=store.io.arrow_fs()).to_table()
        frames.append(pl.from_arrow(data).with_columns(entity=pl.lit(entity)))
    return _normal(pl.concat(frames))


def duckdb_extension() -> str | None:
    """The Delta extension file of the `duckdb-extension-delta` wheel (loads offline)."""
    try:
        import duckdb_extension_delta
    except ImportError:
        return None
    found = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__),
                                   "extensions", "*", "delta.duckdb_extension"))
    return found[0] if found else None


def read_duckdb(store: Store, version: int | None) -> pl.DataFrame:
    import duckdb

    connection = duckdb.connect()
    try:
        connection.execute(f"LOAD '{duckdb_extension()}'")
        root, _ = _location(store)
        if version is None:
            frame = connection.execute("SELECT * FROM delta_scan(?)", [root]).pl()
        else:
            frame = connection.execute("SELECT * FROM delta_scan(?, version => ?)",
                                       [root, version]).pl()
    finally:
        connection.close()
    return _normal(frame)


def read_daft(store: Store, version: int | None) -> pl.DataFrame:
    import daft

    root, _ = _location(store)
    config = None
    if store.io.scheme == "s3":
        opts = store.io.options
        config = daft.io.IOConfig(s3=daft.io.S3Config(
            endpoint_url=opts.endpoint_url, region_name=opts.region or "us-east-1",
            key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
            use_ssl=not (opts.endpoint_url or "").startswith("http://")))
    frame = daft.read_deltalake(root, version=version, io_config=config)
    return _normal(pl.from_arrow(frame.to_arrow()))


READERS: dict[str, Callable[[Store, int | None], pl.DataFrame]] = {
    "deltalake": read_deltalake, "polars.read_delta": read_polars,
    "polars.scan_delta": scan_polars, "pyarrow.dataset": read_pyarrow,
    "duckdb.delta_scan": read_duckdb, "daft.read_deltalake": read_daft,
}


def missing_readers() -> list[str]:
    """Readers whose package is not installed here (each is then named in a skip reason)."""
    missing = []
    for name, module in (("duckdb.delta_scan", "duckdb"), ("daft.read_deltalake", "daft")):
        try:
            __import__(module)
        except ImportError:
            missing.append(name)
    if duckdb_extension() is None and "duckdb.delta_scan" not in missing:
        missing.append("duckdb.delta_scan")
    return missing


def expected_rows(uri: str, **options) -> dict[str, pl.DataFrame]:
    """What bc_ray's own reader returns now, per entity (the reference), with the refresh time
    bc_ray's log records for the table the rows come from."""
    tables = current_tables(Store(uri, options.get("options")).state())
    return {e: read_embeddings(uri, e, **options).sort("id").with_columns(
        refreshed_at=pl.lit(_epoch_us(tables[e].refreshed_at))) for e in ("user", "item")}


def _epoch_us(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def assert_same_rows(frame: pl.DataFrame, expected: dict[str, pl.DataFrame], reader: str) -> None:
    """Same rows and ids, bitwise the same embeddings, and the version column saying which
    version's table the rows come from."""
    assert sorted(set(frame["entity"].to_list())) == ["item", "user"], reader
    for entity, want in expected.items():
        got = frame.filter(pl.col("entity") == entity).sort("id")
        assert got["id"].to_list() == want["id"].to_list(), (reader, entity)
        ours = np.asarray(want["embedding"].to_numpy(), dtype=np.float32)
        theirs = np.array(got["embedding"].to_list(), dtype=np.float32)
        assert theirs.shape == ours.shape, (reader, entity, theirs.shape, ours.shape)
        assert np.array_equal(theirs.view(np.uint32), ours.view(np.uint32)), (reader, entity)
        assert got["version"].to_list() == want["source_version"].to_list(), (reader, entity)
        assert got["refreshed_at"].to_list() == want["refreshed_at"].to_list(), (reader, entity)
