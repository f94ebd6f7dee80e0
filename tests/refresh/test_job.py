"""Refresh on a real local Ray cluster, to the local filesystem and to the S3 server."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from bc_ray import read_embeddings
from bc_ray.core.graph import build_graph
from bc_ray.models.graphsage.inference import layerwise_embed
from bc_ray.models.graphsage.serialization import model_from_bytes
from bc_ray.data.timeline import edges_until
from bc_ray.exceptions import NotFoundError
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.maintenance import collect_garbage
from bc_ray.store.snapshots import advance_snapshot, load_snapshot, publish_snapshot
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.versions import load_model_bytes
from tests.helpers import publish_model_version

pytestmark = pytest.mark.ray


def _store(uri: str, snapshot, cutoff: float) -> Store:
    store = Store(uri, retention=RetentionPolicy(staging_grace_seconds=0))
    publish_snapshot(store, snapshot.with_cutoff(cutoff))
    publish_model_version(store, snapshot.with_cutoff(cutoff))
    return store


def _matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame.sort("id")["embedding"].to_numpy())


def test_full_refresh_one_row_per_entity(ray_cluster, store_uri, small_snapshot):
    store = _store(store_uri, small_snapshot, 0.7)
    outcome = run_refresh(RefreshConfig(store=store_uri, mode="full", block_nodes=128))
    snapshot = load_snapshot(store)
    for entity in ("user", "item"):
        frame = read_embeddings(store_uri, entity)
        visible = snapshot.entities(entity).filter(pl.col("first_t") <= 0.7)
        assert frame.height == visible.height and frame["id"].n_unique() == frame.height
        assert set(frame["id"].to_list()) == set(visible["id"].to_list())
        assert frame.schema["embedding"] == pl.Array(pl.Float32, 16)
    # The job's numbers equal one in-process layer-wise pass of the same model.
    model = model_from_bytes(load_model_bytes(store))
    graph = build_graph(snapshot, edges_until(snapshot, 0.7), now=0.7)
    expected = layerwise_embed(model, graph)[0].numpy()[: graph.num_users]
    users = read_embeddings(store_uri, "user").join(
        snapshot.users.select("id", "idx"), on="id").sort("idx")
    assert np.allclose(np.stack(users["embedding"].to_numpy()), expected[users["idx"].to_numpy()],
                       atol=1e-5)
    state = store.state()
    assert state.table(0, "item").mode == "full" and outcome.stats["rows"]["item"] > 0
    assert "layer1" in state.table(0, "item").cache  # kept for the next incremental refresh


def test_incremental_equals_full_after_new_edges_and_nodes(ray_cluster, tmp_path, small_snapshot):
    uri = f"file://{tmp_path}/store"
    store = _store(uri, small_snapshot, 0.6)
    run_refresh(RefreshConfig(store=uri, mode="full", block_nodes=128))
    before = read_embeddings(uri, "user").height
    advance_snapshot(store, 0.75)  # new edges and new users/items arrive
    incremental = run_refresh(RefreshConfig(store=uri, mode="incremental", block_nodes=128))
    assert incremental.mode == "incremental" and incremental.stats["affected_fraction"] < 1.0
    after = {e: read_embeddings(uri, e) for e in ("user", "item")}
    assert after["user"].height > before
    full = run_refresh(RefreshConfig(store=uri, mode="full", block_nodes=128))
    assert full.mode == "full"
    for entity in ("user", "item"):
        again = read_embeddings(uri, entity)
        assert after[entity].sort("id")["id"].equals(again.sort("id")["id"])
        assert np.allclose(_matrix(after[entity]), _matrix(again), atol=1e-5)


def test_sampled_inference_is_available(ray_cluster, tmp_path, small_snapshot):
    uri = f"file://{tmp_path}/store"
    _store(uri, small_snapshot, 0.7)
    outcome = run_refresh(RefreshConfig(store=uri, inference="sampled", fanout=5))
    assert outcome.mode == "full" and outcome.stats["inference"] == "sampled"
    assert read_embeddings(uri, "item").height > 0


KILLED_REFRESH = """
import os, signal, sys, ray
ray.init(address=sys.argv[2], logging_level="ERROR")
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
run_refresh(RefreshConfig(store=sys.argv[1], mode="full"),
            before_commit=lambda: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_refresh_killed_mid_write_keeps_the_old_table(ray_cluster, tmp_path, small_snapshot):
    uri = f"file://{tmp_path}/store"
    store = _store(uri, small_snapshot, 0.6)
    with pytest.raises(NotFoundError, match="bc-ray refresh"):
        read_embeddings(uri, "item")
    run_refresh(RefreshConfig(store=uri, mode="full"))
    old = read_embeddings(uri, "item")
    advance_snapshot(store, 0.8)
    address = ray_cluster.get_runtime_context().gcs_address
    result = subprocess.run([sys.executable, "-c", KILLED_REFRESH, uri, address],
                            env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)
    assert result.returncode == -signal.SIGKILL
    state = store.state()
    live = state.table(0, "item").refresh_id
    assert sorted(store.io.list_dir("embeddings/v0/item")) != [live]  # orphan files exist
    current = read_embeddings(uri, "item")
    assert current.height == old.height and np.allclose(_matrix(current), _matrix(old))
    rerun = run_refresh(RefreshConfig(store=uri))
    assert read_embeddings(uri, "item").height > old.height and rerun.refresh_id != live
    orphans = collect_garbage(store, grace_seconds=0, force=True)
    assert len(orphans) == 2  # the killed run's user and item prefixes


def test_the_layer_builder_is_kept_between_refreshes_and_replaced_when_it_died(
        ray_cluster, tmp_path, small_snapshot):
    import ray

    from bc_ray.refresh import assemble

    uri = f"file://{tmp_path}/store"
    _store(uri, small_snapshot, 0.7)
    run_refresh(RefreshConfig(store=uri, mode="full"))
    kept = assemble.layer_builder()
    assert assemble.layer_builder() == kept  # one per job: the next refresh finds it started
    ray.kill(kept)  # as if its process had died; the kill lands asynchronously
    deadline = time.time() + 60
    while True:
        try:
            ray.get(kept.ping.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            break
        assert time.time() < deadline, "the killed builder still answers"
        time.sleep(0.2)
    run_refresh(RefreshConfig(store=uri, mode="full"))
    assert assemble.layer_builder() != kept
    assert Store(uri).state().table(0, "user").mode == "full"
