"""The refresh partitioned by node range, on a real local Ray cluster: the same rows as the
unpartitioned refresh whatever the number of ranges."""

import numpy as np
import pytest

from bc_ray import read_embeddings
from bc_ray.exceptions import ConfigError
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import advance_snapshot, publish_snapshot
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
    holds = []
    for parts in (1, 3, 8):
        outcome = run_refresh(RefreshConfig(store=uri, partitions=parts, block_nodes=64,
                                            mode="full"))
        assert outcome.mode == "full" and f"{parts} node ranges" in outcome.reason
        for entity in ("user", "item"):
            ids, matrix = _rows(uri, entity)
            assert ids == expected[entity][0]
            assert np.abs(matrix - expected[entity][1]).max() <= 1e-5
        state = store.state()
        assert state.table(0, "item").refresh_id == outcome.refresh_id
        caches = state.table(0, "item").cache  # every layer, a file per range with items
        assert {k.split("@")[0] for k in caches} == {"layer1", "layer2", "layer3"}
        assert len(caches) == 3 * len({k.split("@")[1] for k in caches}) <= 3 * parts
        assert outcome.stats["partitions"]["count"] == parts
        holds.append((outcome.stats["partitions"]["task_must_hold_mb_max"],
                      outcome.stats["partitions"]["build_must_hold_mb_max"]))
        assert len(outcome.files) >= min(parts, 2)  # each range writes its own rows
    assert outcome.stats["partitions"]["hubs"] > 0  # sent once to all ranges
    # What a layer task and a build task must hold fall as ranges are added (a task reads its
    # halo's rows in place: they are not its own).
    for kind in (0, 1):
        assert holds[0][kind] > holds[1][kind] > holds[2][kind] > 0
    # Over 8 ranges of this small graph some read another's whole block, some a piece of it.
    assert 0 < outcome.stats["partitions"]["whole_blocks"] < 8 * 8


def test_an_incremental_partitioned_refresh_equals_a_full_one(ray_cluster, tmp_path,
                                                              small_snapshot):
    """The caches of 3 ranges read by 4 ranges cut elsewhere; only the rows new edges and new
    entities reach are recomputed, and the tables equal a full unpartitioned refresh's."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7))
    first = run_refresh(RefreshConfig(store=uri, partitions=3, block_nodes=64))
    assert first.mode == "full" and first.reason.startswith("no earlier refresh")
    advance_snapshot(store, 0.705)  # a few new edges, new users and items among them
    grown = run_refresh(RefreshConfig(store=uri, partitions=4, block_nodes=64,
                                      mode="incremental"))
    assert grown.mode == "incremental" and "new edges" in grown.reason
    assert 0 < grown.affected_nodes < grown.nodes
    assert grown.stats["layer1"]["nodes"] < grown.stats["layer2+write"]["nodes"]  # a hop more
    rows = {e: _rows(uri, e) for e in ("user", "item")}

    unpartitioned = run_refresh(RefreshConfig(store=uri, partitions=0, mode="auto"))
    assert unpartitioned.mode == "full" and "caches are by range" in unpartitioned.reason
    for entity in ("user", "item"):
        ids, matrix = _rows(uri, entity)
        assert ids == rows[entity][0] and len(ids) > 0
        assert np.abs(matrix - rows[entity][1]).max() <= 1e-5
    after = run_refresh(RefreshConfig(store=uri, partitions=2, block_nodes=64))
    assert after.mode == "full" and "by node range" in after.reason


def test_partitions_need_the_layerwise_refresh(tmp_path):
    with pytest.raises(ConfigError, match="--partitions"):
        RefreshConfig(store=f"file://{tmp_path}", partitions=3, inference="sampled")
    with pytest.raises(ConfigError, match="--partitions must be >= 0"):
        RefreshConfig(store=f"file://{tmp_path}", partitions=-1)


def test_a_partitioned_refresh_on_s3_reads_each_ranges_model_rows_where_they_lie(
        ray_cluster, s3_uri, small_snapshot):
    """Each input task reads the model file on S3 in parts (`ModelFile`): its dense weights and
    its range's ID rows; the tables equal the unpartitioned refresh's."""
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
