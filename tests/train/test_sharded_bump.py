"""`bc-ray train --sharded` on a real local Ray cluster over ingested batches: version 0 and a
warm-started BC-Aligner version 1 aligned to the stored ver-0 tables, each trained by two
workers that hold only their share, version 1 through a worker's crash and resume, version 2
aligned to M_1 run by its workers on the training graph, and a non-bc version 3; the scores its
workers compute together equal the one-table gate's scores of the same registered model on the
same split, with the same targets (an age-aware model's, and its parent's, too), and the
refresh reads its model file. Requests it cannot serve are refused before any worker starts."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from bc_ray import read_embeddings
from bc_ray.cli.main import app
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError, TrainingError
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.models.graphsage.serialization import model_from_bytes
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from bc_ray.store.versions import load_model_bytes
from bc_ray.train.config import FaultInjection, GateConfig, TrainJobConfig
from bc_ray.train import gate
from bc_ray.train.gate import score_candidate
from bc_ray.train.inputs import load_inputs, previous_version
from bc_ray.train.job import run_training
from tests.data.test_ingest import put
from tests.helpers import checkpoint_folders
from tests.train.test_held_out import MAPPING, _days

pytestmark = pytest.mark.ray
TRAIN = TrainConfig(epochs=3, batch_size=256, lr=1e-2, fanout=5, edges_per_epoch=1024,
                    eval_every=1, warmup_epochs=0, warm_start="mean")


def _job(uri: str, **changes) -> TrainJobConfig:
    job = TrainJobConfig(store=uri, num_workers=2, spec=VersionSpec(hidden_dim=16),
                         train=TRAIN, holdout_days=4, max_eval_users=0, targets="stored",
                         sharded=True,
                         gate=GateConfig(max_align_error_rel=5.0, min_recall_vs_parent=0.0))
    return dataclasses.replace(job, **changes)


def _one_table_scores(uri: str, version: int, targets: str = "stored") -> dict:
    """The one-table gate's scores of the registered `version` (its split, the same seed),
    aligned to `targets`."""
    store = Store(uri)
    state = store.state()
    record = state.version(version)
    inputs = load_inputs(_job(uri, sharded=False, targets="model"), with_previous_model=False)
    previous = None
    if record.parent is not None:
        previous = previous_version(store, state, state.version(record.parent), inputs.snapshot,
                                    targets, with_model=targets == "model")
    model = model_from_bytes(load_model_bytes(store, version, state))
    transform = store.chain(version, state)[record.parent] if record.parent is not None else None
    scores = score_candidate(model, transform, inputs.split, previous, seed=TRAIN.seed)
    if record.parent is not None:
        parent = model_from_bytes(load_model_bytes(store, record.parent, state))
        scores["parent_recall_at_50"] = gate.test_recall(parent, inputs.split)
    return scores


def test_sharded_bumps_on_ingested_batches(ray_cluster, small_raw, tmp_path):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    days = _days(small_raw)
    for day, frame in enumerate(days[:3]):
        ingest(store, BatchInput(edges=put(store, f"landing/d{day}.parquet", frame)), MAPPING)

    # Workers whose rows no node can hold (16M-wide ID rows with Adam's moments: ~200 MB a
    # node) are refused by the driver, before any starts, instead of killed within their steps.
    with pytest.raises(ConfigError, match=r"peaks near 1.8x that.*--id-optimizer"):
        run_training(_job(uri, spec=VersionSpec(hidden_dim=1 << 24)))
    before = checkpoint_folders()
    first = run_training(_job(uri, checkpoint_every=1))
    assert first.status == "published", first.reasons
    assert checkpoint_folders() <= before  # each worker's checkpoint folder went once persisted
    expected = _one_table_scores(uri, first.version)
    assert first.metrics["recall_at_50"] == pytest.approx(expected["recall_at_50"], abs=1e-6)
    graph_bytes = first.metrics["worker_graph_bytes"]
    assert len(graph_bytes) == 2 and max(graph_bytes) < 0.75 * sum(graph_bytes)
    # What the driver planned each worker to hold bounds what it held (its CSR rows hold each
    # pair once and no held-out edge, which the plan's degrees count).
    held = [int(g) + int(i) for g, i in zip(graph_bytes, first.metrics["worker_id_bytes"])]
    planned = first.metrics["worker_planned_bytes"]
    assert all(h <= p < 2 * h for h, p in zip(held, planned)), (held, planned)
    with pytest.raises(TrainingError, match="have not been refreshed: run `bc-ray refresh`"):
        run_training(_job(uri))  # refused by the driver, before any worker reads the tables
    run_refresh(RefreshConfig(store=uri, mode="full", num_tasks=1, block_nodes=256))

    ingest(store, BatchInput(edges=put(store, "landing/d3.parquet", days[3])), MAPPING)
    for method in ("post-lin-mloss", "bc-aligner-refit"):
        with pytest.raises(ConfigError, match="needs the whole of M_k"):
            run_training(_job(uri, method=method))
    # Worker 1 dies after epoch 3: the group restarts from a checkpoint (epoch 2's, or epoch 1's
    # if Ray had not registered epoch 2's when it saw the worker die), each worker from its own
    # rows, and ends scored as the one-table gate scores the registered model. Its ID rows
    # step by row-wise Adagrad, whose one float per row is checkpointed and restored with them.
    crash = FaultInjection(rank=1, epoch=3, marker=str(tmp_path / "crashed"))
    before = checkpoint_folders()
    second = run_training(_job(uri, train=dataclasses.replace(TRAIN, epochs=4,
                                                              id_optimizer="rowwise_adagrad"),
                               checkpoint_every=1, fault=crash))
    assert (tmp_path / "crashed").exists() and second.metrics["resumed_from"] in (2, 3)
    # Worker 0, killed with the group while its report was persisting, left its folder: the
    # restart (or the driver, once the run ends) removed it.
    assert checkpoint_folders() <= before
    assert second.status == "published", second.reasons
    expected = _one_table_scores(uri, second.version)
    for name in ("recall_at_50", "parent_recall_at_50", "align_error", "align_error_rel"):
        assert second.metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert second.metrics["align_sample"] == expected["align_sample"] > 0
    by_entity = expected["align_error_rel_by_entity"]
    assert set(by_entity) == {"user", "item"}
    assert second.metrics["align_error_rel_by_entity"] == pytest.approx(by_entity, rel=1e-4)
    assert second.metrics["sharded"] and second.metrics["epochs"] == 4
    # The tables it aligned to were refreshed on days up to 38, inside its last 4 days (from
    # about day 37): said and recorded; version 0 had no targets.
    assert second.metrics["targets_see_held_out"] is True
    assert first.metrics["targets_see_held_out"] is None
    assert [h["epoch"] for h in second.history] == [1, 2, 3, 4]
    assert all("recall" in h and "align_error" in h for h in second.history)
    min_align, best = float("inf"), None  # the selection rule, replayed on what it saw
    for h in second.history:
        min_align = min(min_align, h["align_error"])
        within = h["align_error"] <= (1 + TRAIN.align_tolerance) * min_align
        if within and (best is None or h["recall"] > best["recall"]):
            best = h
    assert second.metrics["selected_epoch"] == best["epoch"]

    # Aligned to M_1 run by the workers over the sharded training graph (version 1 has no
    # tables yet, and needs none): its targets, and so its alignment error, are the one-table
    # bump's `--targets model`, which no held-out edge reaches.
    third = run_training(_job(uri, targets="model"))
    assert third.status == "published", third.reasons
    assert third.metrics["targets_see_held_out"] is None
    expected = _one_table_scores(uri, third.version, targets="model")
    for name in ("recall_at_50", "parent_recall_at_50", "align_error", "align_error_rel"):
        assert third.metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    assert third.metrics["align_sample"] == expected["align_sample"] > 0
    assert third.metrics["targets"] == "model" and second.metrics["targets"] == "stored"
    # A method not aligned jointly runs M_2 for the alignment sample's rows alone.
    fourth = run_training(_job(uri, method="non-bc", targets="model"))
    expected = _one_table_scores(uri, fourth.version, targets="model")
    for name in ("parent_recall_at_50", "align_error", "align_error_rel"):
        assert fourth.metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name

    refreshed = run_refresh(RefreshConfig(store=uri, mode="full", num_tasks=1, block_nodes=256))
    assert refreshed.version == fourth.version
    snapshot = load_snapshot(store)
    nodes = snapshot.num_users + snapshot.num_items  # an ID row and one float of state each
    assert sum(int(b) for b in second.metrics["worker_id_bytes"]) == nodes * (16 + 1) * 4
    assert read_embeddings(uri, "user").height == snapshot.num_users
    assert read_embeddings(uri, "item", version=0).height == snapshot.num_items


def test_a_sharded_age_aware_model_scores_as_the_one_table_gate(ray_cluster, small_raw,
                                                                tmp_path):
    """Its entities' ages on ingested data come from tasks over the edge files (first
    interactions, and "now" at the period's start, in edge-fraction time): the one-table gate,
    which reads them from the whole edge list, scores the registered model alike."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    for day, frame in enumerate(_days(small_raw)[:3]):
        ingest(store, BatchInput(edges=put(store, f"landing/d{day}.parquet", frame)), MAPPING)
    outcome = run_training(_job(uri, spec=VersionSpec(hidden_dim=16, cold_start_mixing=True)))
    assert outcome.status == "published", outcome.reasons
    expected = _one_table_scores(uri, outcome.version)
    assert outcome.metrics["recall_at_50"] == pytest.approx(expected["recall_at_50"], abs=1e-6)
    # A bump whose own model reads no ages still runs the age-aware M_0 (its targets, the
    # relative gate's recall) with the ages the one-table bump reads from the edge list.
    bump = run_training(_job(uri, spec=VersionSpec(hidden_dim=16), targets="model"))
    expected = _one_table_scores(uri, bump.version, targets="model")
    for name in ("recall_at_50", "parent_recall_at_50", "align_error"):
        assert bump.metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("options,message", [(["--num-workers", "0"], "--num-workers >= 1"),
                                             (["--use-gpu"], "drop --use-gpu")])
def test_sharded_cli_refuses_what_it_cannot_shard(tmp_path, options, message):
    result = CliRunner().invoke(app, ["train", "--store", f"file://{tmp_path}/none",
                                      "--sharded", *options])
    # Raised before any cluster starts; the console entry prints it as one line.
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)
