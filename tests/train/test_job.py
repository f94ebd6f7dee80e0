"""Ray Train on a real local cluster: DDP over 2 workers, gating, failure recovery, bad input."""

import dataclasses
import os

import pytest
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError, NotFoundError, PlacementError
from bc_ray.store.snapshots import advance_snapshot, publish_snapshot
from bc_ray.store.store import Store
from bc_ray.train.config import FaultInjection, GateConfig, TrainJobConfig
from bc_ray.train.job import run_training
from bc_ray.train.runs import REPORT_POLL_ENV, REPORT_POLL_S, polled_often, run_trainer
from tests.helpers import checkpoint_folders

pytestmark = pytest.mark.ray

TRAIN = TrainConfig(epochs=8, batch_size=1024, lr=5e-3, eval_every=2, warmup_epochs=2)


def _job(uri: str, **overrides) -> TrainJobConfig:
    base = TrainJobConfig(store=uri, num_workers=2, spec=VersionSpec(hidden_dim=16), train=TRAIN,
                          holdout=0.1, checkpoint_every=2, max_failures=1,
                          gate=GateConfig(max_align_error_rel=0.9, min_recall_vs_parent=0.0))
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def trained_store(ray_cluster, small_snapshot, tmp_path_factory):
    """Version 0 trained by 2 workers, then the snapshot advances (new data arrived)."""
    uri = f"file://{tmp_path_factory.mktemp('train')}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.6))
    before = checkpoint_folders()
    first = run_training(_job(uri))
    assert first.status == "published" and first.version == 0
    # Four checkpoints were reported (every 2 of 8 epochs); each one's folder went once Ray
    # Train had persisted it.
    assert checkpoint_folders() <= before
    advance_snapshot(store, 0.8)
    return uri, first


def test_two_workers_synchronise_and_version_zero_publishes(trained_store):
    _, first = trained_store
    checksums = first.metrics["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # DDP kept replicas identical
    assert first.metrics["recall_at_50"] > 0.05 and first.metrics["epochs"] == TRAIN.epochs


def test_bc_aligner_aligns_far_better_than_non_bc(trained_store):
    uri, _ = trained_store
    wider = VersionSpec(hidden_dim=24)  # the output dimension changes between versions
    before = checkpoint_folders()
    non_bc = run_training(_job(uri, method="non-bc", spec=wider, num_workers=0,
                               gate=GateConfig(max_align_error_rel=0.0)))
    # In the driver's own process (Ray Train's local mode) nothing persists the checkpoints:
    # each is removed once the next is written, the last once the model is read from it.
    assert checkpoint_folders() <= before
    assert non_bc.status == "rejected" and "alignment error" in non_bc.reasons[0]
    # Sampled mode: the ID tables train with row-sparse gradients that the workers exchange
    # themselves (DDP ignores those tables), and must still end identical on both ranks.
    sampled = dataclasses.replace(TRAIN, mode="sampled", fanout=5, sparse_ids_min_nodes=0)
    aligned = run_training(_job(uri, spec=wider, train=sampled))
    assert aligned.status == "published", aligned.reasons
    checksums = aligned.metrics["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert aligned.metrics["align_error"] < 0.5 * non_bc.metrics["align_error"]
    state = Store(uri).state()
    assert state.current_version == aligned.version and state.version(aligned.version).parent == 0
    assert state.version(non_bc.version).status == "rejected"
    assert state.version(aligned.version).dim == 24


def test_a_warm_started_bump_with_a_step_budget_stops_on_every_rank(trained_store):
    """Issue 29: both workers take the same budgeted steps (DDP would hang otherwise), the last
    epoch reports and is gated as usual."""
    uri, _ = trained_store
    budget = dataclasses.replace(TRAIN, epochs=100, max_steps=3, edges_per_epoch=2048,
                                 warm_start="mean")
    outcome = run_training(_job(uri, train=budget,
                                gate=GateConfig(max_align_error_rel=10.0,
                                                min_recall_vs_parent=0.0)))
    assert outcome.metrics["epochs"] == 3  # one step of 1,024 per worker per epoch
    checksums = outcome.metrics["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert outcome.status == "published", outcome.reasons


def test_stored_targets_that_saw_the_held_out_period_are_said_and_still_gated(trained_store,
                                                                             caplog):
    """Tables of the current version refreshed on the whole snapshot (cutoff 0.8) hold the
    held-out period (0.7, 0.8]: the bump records it, and M_{k-1}'s recall is still measured
    for the relative gate (M_{k-1} was loaded only for model targets before)."""
    from datetime import datetime, timezone

    import numpy as np

    from bc_ray.store.snapshots import load_snapshot
    from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix, write_table

    uri, _ = trained_store
    store = Store(uri)
    state = store.state()
    parent, snapshot = state.version(), load_snapshot(store, state=state)
    rng, now, refresh = np.random.default_rng(0), datetime.now(timezone.utc), "targets"
    tables = []
    for entity in ("user", "item"):
        ids = snapshot.entities(entity)["id"].to_numpy()
        matrix = rng.normal(size=(ids.size, parent.dim)).astype(np.float32)
        files = write_table(store, table_prefix(store, parent.version, entity, refresh), ids,
                            matrix, parent.version, now)
        tables.append(TableFiles(entity, files, ids.size, parent.dim))
    publish_refresh(store, parent.version, refresh, tables, state.current_snapshot,
                    snapshot.meta.cutoff, "full", now)
    with caplog.at_level("WARNING", logger="bc_ray.train.held_out_caveats"):
        outcome = run_training(_job(uri, num_workers=0, targets="stored",
                                    gate=GateConfig(max_align_error_rel=100.0,
                                                    min_recall_vs_parent=0.0)))
    said = [r.getMessage() for r in caplog.records if "held-out period" in r.getMessage()]
    assert len(said) == 1 and "--targets model aligns to M_" in said[0], said  # the driver's
    assert outcome.metrics["targets_see_held_out"] is True
    assert outcome.metrics["parent_recall_at_50"] > 0


def test_worker_killed_mid_run_resumes_from_checkpoint(trained_store, tmp_path):
    uri, _ = trained_store
    marker = tmp_path / "killed"
    outcome = run_training(_job(uri, fault=FaultInjection(rank=1, epoch=5, marker=str(marker)),
                                gate=GateConfig(max_align_error_rel=10.0,
                                                min_recall_vs_parent=0.0)))
    assert marker.exists()  # the worker process really died (SIGKILL)
    # Restarted from a checkpoint (every 2 epochs) rather than from scratch; which one depends on
    # whether Ray had registered the epoch-4 checkpoint before it saw the worker die.
    assert outcome.metrics["resumed_from"] in (3, 5)
    assert outcome.metrics["epochs"] == TRAIN.epochs and outcome.status == "published"


def test_bad_requests_fail_before_any_worker_starts(ray_cluster, small_snapshot, tmp_path,
                                                   trained_store):
    empty = f"file://{tmp_path}/empty"
    with pytest.raises(NotFoundError, match="no graph snapshot"):
        run_training(_job(empty))
    uri, _ = trained_store
    with pytest.raises(PlacementError, match="needs 200 CPUs"):
        run_training(_job(uri, num_workers=200))
    with pytest.raises(ConfigError, match="unknown method"):
        run_training(_job(uri, method="bc-magic"))
    with pytest.raises(ConfigError, match="baseline"):
        run_training(_job(uri, method="fix-m0"))
    with pytest.raises(ConfigError, match="cannot change the architecture"):
        run_training(_job(uri, method="finetune-m0", spec=VersionSpec(hidden_dim=40)))
    with pytest.raises(ConfigError, match="--max-eval-users must be >= 0"):
        _job(uri, max_eval_users=-1)
    with pytest.raises(ConfigError, match="--cpus-per-worker must be positive"):
        _job(uri, cpus_per_worker=0)


def _report_poll(config: dict) -> None:
    """Each worker writes the controller's poll interval it was given, then reports twice."""
    with open(os.path.join(config["folder"], f"rank-{ray.train.get_context().get_world_rank()}"),
              "w") as file:
        file.write(os.environ.get(REPORT_POLL_ENV, "unset"))
    for epoch in range(2):
        ray.train.report({"epoch": epoch})


def _cleaners() -> set[str]:
    from ray._private.state import actors

    return {actor_id for actor_id, info in actors().items()
            if "PlacementGroupCleaner" in str(info.get("ActorClassName", ""))}


def test_reports_are_taken_as_they_come_unless_the_user_chose(ray_cluster, tmp_path,
                                                              monkeypatch):
    # Ray's default poll (2 s) made every short epoch wait for it: a bump's run polls more often.
    # And the test cluster has no dashboard: no PlacementGroupCleaner, whose every question
    # needs one, is started (stopping it cost each run 12 s and a traceback).
    monkeypatch.delenv(REPORT_POLL_ENV, raising=False)
    cleaners_before = _cleaners()
    result = run_trainer(TorchTrainer(
        _report_poll, train_loop_config={"folder": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="poll", storage_path=str(tmp_path / "_train"))))
    assert result.error is None, result.error
    given = {path.name: path.read_text() for path in tmp_path.glob("rank-*")}
    assert given == {"rank-0": REPORT_POLL_S, "rank-1": REPORT_POLL_S}
    assert _cleaners() == cleaners_before
    assert REPORT_POLL_ENV not in os.environ  # the driver's environment as it was
    monkeypatch.setenv(REPORT_POLL_ENV, "1.5")
    with polled_often():
        assert os.environ[REPORT_POLL_ENV] == "1.5"
    assert os.environ[REPORT_POLL_ENV] == "1.5"
