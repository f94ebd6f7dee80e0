"""Small builders shared by tests (real stores, real files; no mocks of bc_ray)."""

from __future__ import annotations

import glob
import os
import tempfile
from datetime import datetime, timezone

import numpy as np

from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix, write_table
from bc_ray.store.versions import Candidate, publish_version, register_candidate


def random_transform(rng: np.random.Generator, out_dim: int, in_dim: int):
    return (rng.normal(size=(out_dim, in_dim)).astype(np.float32) / np.sqrt(in_dim),
            rng.normal(size=out_dim).astype(np.float32) * 0.01)


def publish_fake_version(store: Store, dim: int, rng: np.random.Generator, snapshot_id: str = "s",
                         transform=None) -> int:
    state = store.state()
    parent = state.current_version
    if parent is not None and transform is None:
        transform = random_transform(rng, state.version(parent).dim, dim)
    record = register_candidate(store, Candidate(
        parent=parent, dim=dim, method="bc-aligner", spec={"hidden_dim": dim},
        snapshot_id=snapshot_id, cutoff=1.0, model=rng.bytes(64), transform=transform,
        metrics={"recall": 0.1}))
    publish_version(store, record.version)
    return record.version


def refresh_fake_tables(store: Store, version: int, rows: int, rng: np.random.Generator,
                        rows_per_file: int = 1_000_000,
                        over: dict[str, str | None] | None = None) -> dict[str, np.ndarray]:
    """A refresh of `version` with random tables (`over`: the tables it was planned from)."""
    dim = store.state().version(version).dim
    now = datetime.now(timezone.utc)
    refresh_id = store.new_prefix("r").split("/")[1]
    matrices, tables = {}, []
    for entity in ("user", "item"):
        matrix = rng.normal(size=(rows, dim)).astype(np.float32)
        ids = np.arange(rows, dtype=np.int64) + (10_000 if entity == "item" else 0)
        files = write_table(store, table_prefix(store, version, entity, refresh_id), ids, matrix,
                            version, now, rows_per_file)
        tables.append(TableFiles(entity, files, rows, dim))
        matrices[entity] = matrix
    publish_refresh(store, version, refresh_id, tables, "s", 1.0, "full", now, over=over)
    return matrices


def store_with_chain(uri: str, dims: list[int], rows: int = 50, seed: int = 0,
                     keep_versions: int = 1) -> tuple[Store, dict]:
    """Versions 0..len(dims)-1 published with random transforms, the latest one refreshed."""
    rng = np.random.default_rng(seed)
    store = Store(uri, retention=RetentionPolicy(keep_versions=keep_versions,
                                                 staging_grace_seconds=0))
    for dim in dims:
        version = publish_fake_version(store, dim, rng)
    matrices = refresh_fake_tables(store, version, rows, rng)
    return store, matrices


__all__ = ["publish_snapshot", "store_with_chain", "publish_fake_version", "refresh_fake_tables"]


def publish_model_version(store: Store, snapshot, hidden: int = 16, layers: int = 2,
                          seed: int = 0, mixing: bool = False) -> int:
    """Version 0 with an untrained model (refresh and serving do not care about the weights;
    `mixing`: age-aware, whose inputs read each entity's first interaction)."""
    from bc_ray.core.graph import build_graph
    from bc_ray.data.timeline import edges_until

    cutoff = snapshot.meta.cutoff
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    return publish_untrained_model(store, graph, hidden, cutoff, layers, seed, mixing)[0]


def publish_untrained_model(store: Store, graph, hidden: int, cutoff: float, layers: int = 2,
                            seed: int = 0, mixing: bool = False):
    """(version, model) of a published model with initial weights: version 0, or on a store
    with a current version the next, B_k the identity on their shared width. The benchmarks use
    it too (inference speed does not depend on the weights)."""
    import numpy as np
    import torch

    from bc_ray.models.graphsage.model import build_model
    from bc_ray.models.graphsage.serialization import model_to_bytes
    from bc_ray.models.graphsage.spec import VersionSpec

    torch.manual_seed(seed)
    spec = VersionSpec(num_layers=layers, hidden_dim=hidden, cold_start_mixing=mixing)
    model = build_model(spec, graph).eval()
    state = store.state()
    parent = state.version() if state.current_version is not None else None
    transform = None if parent is None else (
        np.eye(parent.dim, spec.output_dim, dtype=np.float32),
        np.zeros(parent.dim, dtype=np.float32))
    record = register_candidate(store, Candidate(
        parent=None if parent is None else parent.version, dim=spec.output_dim,
        method="bc-aligner", spec=model.spec.to_dict(), snapshot_id=state.current_snapshot,
        cutoff=cutoff, model=model_to_bytes(model), transform=transform))
    publish_version(store, record.version)
    return record.version, model


def gloo_ranks(fn, world: int, *args) -> dict:
    """Run `fn(rank, port, *args, results)` in `world` fresh processes (each joins a gloo group
    on 127.0.0.1 at `port`); returns what they put in `results`. The shared dict's server is
    spawned, not forked: a fork of a process connected to Ray leaves the driver's connection
    hung at shutdown."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(fn, args=(free_port(), *args, results), nprocs=world, join=True)
    return dict(results)


def checkpoint_folders() -> set[str]:
    """The training checkpoints' temporary folders now in this machine's temp dir."""
    from bc_ray.train.loop import CHECKPOINT_PREFIX  # imports Ray: only for the tests that train

    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"{CHECKPOINT_PREFIX}*")))
