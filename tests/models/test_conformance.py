"""Every model family, through bc_ray's real path (issue 27): two versions trained with
BC-Aligner on Ray Train, a full refresh, an incremental refresh that equals a full one, Serve
answering ver-0 embeddings over HTTP, `read_embeddings(version=0)` equal to the chain of B_k's
applied to the current tables, rollback to version 0, and the Delta view.

Parametrised over every family this installation knows (`family_names()`: the built-ins and
every `bc_ray.models` entry point, the test-only `tiny` family of tests/models/plugin included),
so a new family is checked by being registered."""

from __future__ import annotations

import importlib.util

import httpx
import numpy as np
import polars as pl
import pytest
import torch

from bc_ray import read_embeddings
from bc_ray.core.graph import build_graph
from bc_ray.core.registry import BUILT_IN
from bc_ray.core.train_config import TrainConfig
from bc_ray.data.timeline import edges_until
from bc_ray.models import family_names, get_family
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh import assemble
from bc_ray.refresh.job import run_refresh
from bc_ray.serve.app import build_app
from bc_ray.serve.config import ServeConfig, ServeSettings
from bc_ray.store.snapshots import advance_snapshot, load_snapshot, publish_snapshot
from bc_ray.store.store import Store
from bc_ray.store.versions import load_model_bytes, rollback_version
from bc_ray.train.config import GateConfig, TrainJobConfig
from bc_ray.train.job import run_training
from tests.store.delta_readers import read_deltalake

pytestmark = pytest.mark.ray

ENTITIES = ("user", "item")
TRAIN = TrainConfig(epochs=3, batch_size=1024, lr=5e-3, eval_every=3, warmup_epochs=1)
# Tiny specs (field names, which every family's parser takes); others train their default.
SPECS = {"graphsage": "num_layers=2,hidden_dim=16",
         "sequence": "dim=16,num_layers=1,num_heads=1,max_len=10,negatives=16",
         "tiny": "dim=8"}
# Version 1 of this family trains on real Ray Train workers (DDP over two processes, which
# find the plug-in by its entry point); the others train in the driver (num_workers=0).
ON_WORKERS = "tiny"
FAMILIES = sorted(set(family_names()) | {"tiny"})


def _absent(name: str) -> str | None:
    """The module of a built-in family that this checkout does not have (yet), else None: the
    one reason to skip. A family whose module is here but fails to import fails the test."""
    module = BUILT_IN.get(name, "").partition(":")[0]
    if not module:
        return None
    try:
        return module if importlib.util.find_spec(module) is None else None
    except ModuleNotFoundError:
        return module


@pytest.fixture(params=FAMILIES)
def family_name(request) -> str:
    if (module := _absent(request.param)) is not None:
        pytest.skip(f"built-in family {request.param!r}: {module} is not in this checkout")
    return request.param


def _job(uri: str, name: str, spec, workers: int) -> TrainJobConfig:
    return TrainJobConfig(store=uri, model=name, spec=spec, num_workers=workers, train=TRAIN,
                          holdout=0.1, checkpoint_every=TRAIN.epochs,
                          gate=GateConfig(max_align_error_rel=5.0, min_recall_vs_parent=0.0))


def _refresh(uri: str, mode: str):
    return run_refresh(RefreshConfig(store=uri, mode=mode, num_tasks=2, block_nodes=128))


def _tables(uri: str, version: int | None = None) -> dict[str, pl.DataFrame]:
    return {e: read_embeddings(uri, e, version=version).sort("id") for e in ENTITIES}


def _matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.stack(frame["embedding"].to_numpy())


def _assert_same(got: dict[str, pl.DataFrame], expected: dict[str, pl.DataFrame]) -> None:
    """Equal tables: the same ids, each row within 1e-5."""
    for entity in ENTITIES:
        assert got[entity]["id"].to_list() == expected[entity]["id"].to_list(), entity
        np.testing.assert_allclose(_matrix(got[entity]), _matrix(expected[entity]), atol=1e-5,
                                   err_msg=entity)


def _train_two_versions(uri: str, name: str):
    """Version 0, then version 1 (grown where the family grows) aligned to it by BC-Aligner."""
    family = get_family(name)
    spec = family.parse_spec(SPECS[name]) if name in SPECS else family.default_spec()
    first = run_training(_job(uri, name, spec, workers=0))
    assert (first.status, first.version) == ("published", 0), first.reasons
    zero = _refresh(uri, "full")
    assert zero.mode == "full"
    spec1 = family.grown(spec, 1, 8)
    second = run_training(_job(uri, name, spec1, workers=2 if name == ON_WORKERS else 0))
    assert (second.status, second.version) == ("published", 1), second.reasons
    if name == ON_WORKERS:
        checksums = second.metrics["param_checksums"]
        assert len(checksums) == 2 and checksums[0] == checksums[1]  # DDP kept ranks identical
    record = Store(uri).state().version(1)
    assert (record.family, record.parent, record.method) == (name, 0, "bc-aligner")
    assert record.dim == spec1.output_dim and family.spec_from_dict(record.spec) == spec1
    assert np.isfinite(second.metrics["align_error_rel"])
    return family, spec1


def _assert_refresh_is_the_family_embed(store: Store, family, spec, tables) -> None:
    """Refresh's Ray Data pass wrote what the family's own embed step computes in-process."""
    snapshot = load_snapshot(store)
    cutoff = snapshot.meta.cutoff
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    model = family.from_bytes(load_model_bytes(store))
    # The protocol: embed is read as constants (targets, scores, refresh), without gradients.
    assert not any(z.requires_grad for z in model.embed(graph)), "embed tracks gradients"
    for entity, shift in (("user", 0), ("item", graph.num_users)):
        rows = tables[entity].join(snapshot.entities(entity).select("id", "idx"), on="id")
        nodes = rows["idx"].to_numpy().astype(np.int64) + shift
        with torch.no_grad():
            expected = family.embed(model, family.embed_inputs(spec, graph), nodes)
        np.testing.assert_allclose(_matrix(rows), expected, atol=1e-5, err_msg=entity)


def _incremental_equals_full(store: Store, family, spec) -> None:
    uri = store.uri
    layerwise = family.refresh_strategy == "layerwise"
    if not layerwise:
        assemble._builder = None  # one kept from an earlier refresh would hide one started now
    _refresh(uri, "full")
    assert layerwise or assemble._builder is None, "a full refresh started a layer builder"
    before = _tables(uri)
    advance_snapshot(store, 0.8)  # new interactions, users and items arrive
    incremental = _refresh(uri, "auto")
    blocker = family.incremental_blocker(spec)
    expected_mode = "full" if blocker else "incremental"
    assert incremental.mode == expected_mode, incremental.stats["reason"]
    # Only layer-wise refresh builds layers in the builder; a task reads the tables to carry.
    assert layerwise or assemble._builder is None, "an incremental refresh started a builder"
    after = _tables(uri)
    assert after["user"].height > before["user"].height
    full = _refresh(uri, "full")
    assert full.mode == "full"
    again = _tables(uri)
    _assert_same(after, again)
    _assert_refresh_is_the_family_embed(store, family, spec, again)


def _assert_version_zero_is_the_chain(store: Store) -> dict[str, pl.DataFrame]:
    """Ver-0 rows are B_1 applied to the current (version 1) tables, users and items added
    since version 0 included."""
    weight, bias = store.transform_to(0, 1)
    current, ver0 = _tables(store.uri), _tables(store.uri, version=0)
    for entity in ENTITIES:
        assert current[entity]["source_version"].unique().to_list() == [1]
        assert ver0[entity]["source_version"].unique().to_list() == [1]  # through the chain
        assert ver0[entity]["id"].to_list() == current[entity]["id"].to_list()
        np.testing.assert_allclose(_matrix(ver0[entity]),
                                   _matrix(current[entity]) @ weight.T + bias, atol=1e-4)
    return ver0


def _assert_serve_answers(serve_port: int, name: str, uri: str,
                          ver0: dict[str, pl.DataFrame]) -> None:
    from ray import serve

    app = f"conformance-{name}"
    config = ServeConfig(store=uri, name=app, route_prefix=f"/{app}",
                         settings=ServeSettings(poll_interval_s=0.5))
    serve.run(build_app(config), name=app, route_prefix=config.route_prefix)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}/{app}", timeout=30) as client:
            assert client.get("/readyz").json() == {"ready": True, "version": 1}
            for entity in ENTITIES:
                ids = ver0[entity]["id"].to_list()
                answer = client.post("/v1/embeddings",
                                     json={"entity": entity, "ids": ids, "version": 0})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["version"] == 0 and all(body["found"])
                np.testing.assert_allclose(np.array(body["embeddings"]), _matrix(ver0[entity]),
                                           atol=1e-5, err_msg=entity)
    finally:
        serve.delete(app)


def _assert_delta_is_current(store: Store) -> None:
    frame = read_deltalake(store, None)
    for entity, expected in _tables(store.uri).items():
        got = frame.filter(pl.col("entity") == entity).sort("id")
        assert got["id"].to_list() == expected["id"].to_list()
        np.testing.assert_allclose(np.stack(got["embedding"].to_numpy()), _matrix(expected),
                                   atol=0)


def test_family_conforms(ray_cluster, serve_port, small_snapshot, tmp_path, family_name):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.6))
    family, spec = _train_two_versions(uri, family_name)
    version0_tables = _tables(uri, version=0)  # version 0's own refresh, kept by retention
    _incremental_equals_full(store, family, spec)
    ver0 = _assert_version_zero_is_the_chain(store)
    _assert_serve_answers(serve_port, family_name, uri, ver0)
    _assert_delta_is_current(store)

    rolled = rollback_version(store, reason="conformance")
    assert rolled.version == 0 and store.state().current_version == 0
    back = _tables(uri)
    assert all(back[e]["source_version"].unique().to_list() == [0] for e in ENTITIES)
    _assert_same(back, version0_tables)
    _assert_same(_tables(uri, version=0), version0_tables)
    _assert_delta_is_current(store)


def test_a_bump_may_change_family(ray_cluster, small_snapshot, tmp_path):
    """Version 1 of another family, aligned to a GraphSAGE version 0: each version record names
    its own family, M_0 is rebuilt by GraphSAGE for the alignment targets, and version 0 is
    served from the new family's tables through B_1."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.6))
    graphsage, tiny = get_family("graphsage"), get_family("tiny")
    first = run_training(_job(uri, "graphsage", graphsage.parse_spec(SPECS["graphsage"]), 0))
    second = run_training(_job(uri, "tiny", tiny.parse_spec("dim=12"), 0))
    assert (first.status, second.status) == ("published", "published"), second.reasons
    state = store.state()
    assert (state.version(0).family, state.version(1).family) == ("graphsage", "tiny")
    assert state.version(1).parent == 0 and np.isfinite(second.metrics["align_error_rel"])
    assert _refresh(uri, "auto").mode == "full"
    _assert_version_zero_is_the_chain(store)
