"""The refresh partitioned by node range, on a real local Ray cluster: the same rows as the
unpartitioned refresh whatever the number of ranges."""

import numpy as np
import pytest

from bc_ray import read_embeddings
from bc_ray.exceptions import ConfigError
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from tests.helpers import publish_model_version

pytestmark = pytest.mark.ray


def _rows(uri: str, entity: str) -> tuple[list, np.ndarray]:
    frame = read_embeddings(uri, entity).sort("id")
    return frame["id"].to_list(), np.stack(frame["embedding"].to_numpy())


def test_every_partition_count_gives_the_unpartitioned_rows(ray_cluster, tmp_path,
                                                            small_snapshot):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7), layers=3)
    run_refresh(RefreshConfig(store=uri, mode="full", block_nodes=128))
    expected = {e: _rows(uri, e) for e in ("user", "item")}
    for parts in (1, 3, 8):
        outcome = run_refresh(RefreshConfig(store=uri, partitions=parts, block_nodes=64))
        assert outcome.mode == "full" and f"{parts} node ranges" in outcome.reason
        for entity in ("user", "item"):
            ids, matrix = _rows(uri, entity)
            assert ids == expected[entity][0]
            assert np.abs(matrix - expected[entity][1]).max() <= 1e-5
        state = store.state()
        assert state.table(0, "item").refresh_id == outcome.refresh_id
        assert state.table(0, "item").cache == {}  # nothing to resume from: the next is full
        assert outcome.stats["partitions"]["count"] == parts
        assert len(outcome.files) >= min(parts, 2)  # each range writes its own rows
    assert outcome.stats["partitions"]["hubs"] > 0  # sent once to all ranges


def test_partitions_need_the_layerwise_refresh(tmp_path):
    with pytest.raises(ConfigError, match="--partitions"):
        RefreshConfig(store=f"file://{tmp_path}", partitions=3, inference="sampled")
    with pytest.raises(ConfigError, match="--partitions must be >= 0"):
        RefreshConfig(store=f"file://{tmp_path}", partitions=-1)


def test_a_partitioned_refresh_on_s3_reads_the_model_through_the_object_store(
        ray_cluster, s3_uri, small_snapshot):
    store = Store(s3_uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7))
    run_refresh(RefreshConfig(store=s3_uri, mode="full"))
    expected = {e: _rows(s3_uri, e) for e in ("user", "item")}
    outcome = run_refresh(RefreshConfig(store=s3_uri, partitions=4))
    assert outcome.stats["partitions"]["count"] == 4
    for entity in ("user", "item"):
        ids, matrix = _rows(s3_uri, entity)
        assert ids == expected[entity][0]
        assert np.abs(matrix - expected[entity][1]).max() <= 1e-5
