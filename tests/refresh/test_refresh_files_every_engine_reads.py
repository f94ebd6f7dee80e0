"""Issue 25, item 11, the refresh's side: the files a real refresh writes through its Ray Data
sink have the same encoding as the driver-side writer's (no embedded Arrow schema, so every
engine reads `list<float>`), and the Delta view over them reads, in every installed reader, what
`read_embeddings` returns; bc_ray's own readers still give fixed-size `Array(Float32, D)`."""

import polars as pl
import pyarrow.parquet as pq
import pytest

from bc_ray import read_embeddings, scan_embeddings
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.parquet import has_arrow_schema
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_model_version
from tests.store.delta_readers import READERS, assert_same_rows, expected_rows, missing_readers

pytestmark = pytest.mark.ray


def test_refreshed_files_read_alike_in_every_engine(ray_cluster, tmp_path, small_snapshot):
    uri = f"file://{tmp_path}/store"
    store = Store(uri, retention=RetentionPolicy(staging_grace_seconds=0))
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7))
    run_refresh(RefreshConfig(store=uri, mode="full", block_nodes=128))
    state = store.state()
    for entity in ("user", "item"):
        for file in state.table(0, entity).files:
            metadata = pq.read_metadata(store.io.path(file.path))
            assert not has_arrow_schema(metadata), file.path
        assert read_embeddings(uri, entity).schema["embedding"] == pl.Array(pl.Float32, 16)
        assert scan_embeddings(uri, entity).collect_schema()["embedding"] == \
            pl.Array(pl.Float32, 16)
    for name, read in READERS.items():
        if name not in missing_readers():
            assert_same_rows(read(store, None), expected_rows(uri), name)
