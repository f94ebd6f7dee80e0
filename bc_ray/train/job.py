"""The driver of a version bump: validate, train on Ray Train, score, gate, register.

Everything that can be wrong with the request (no snapshot, unknown method, incompatible spec,
more workers than the cluster can place) is reported before any worker starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid

import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from bc_ray.core.family import Vocabularies
from bc_ray.core.trainer import JointModule, TrainResult
from bc_ray.core.transforms import make_transform
from bc_ray.core.version import finish_version
from bc_ray.exceptions import TrainingError
from bc_ray.models.on_cluster import check_loads_on_cluster
from bc_ray.placement import Placement
from bc_ray.store.versions import Candidate, publish_version, register_candidate, reject_version
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.gate import gate, score_candidate
from bc_ray.train.inputs import JobInputs, load_inputs
from bc_ray.train.loop import (
    CHECKPOINT_FILE,
    CHECKPOINT_PREFIX,
    train_loop_per_worker,
)
from bc_ray.train.runs import TrainOutcome, check_placement, run_config, run_trainer

logger = logging.getLogger(__name__)


def fit(job: TrainJobConfig, inputs: JobInputs, name: str):
    """Run the TorchTrainer; returns Ray's Result (metrics of rank 0, last checkpoint)."""
    return run_trainer(TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.to_dict()},
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu,
                                     resources_per_worker={"CPU": job.cpus_per_worker}),
        run_config=run_config(inputs.store, name, job)))


def _restore(result, inputs: JobInputs) -> TrainResult:
    """The selected M_k (and B_k) from the final checkpoint."""
    if result.checkpoint is None:
        raise TrainingError(f"training ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        saved = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=False,
                           map_location="cpu")
    model = inputs.family.build(inputs.spec, Vocabularies.of(inputs.split.graph))
    transform = None
    if inputs.previous is not None and inputs.method.joint:
        transform = make_transform(inputs.method.transform, inputs.spec.output_dim,
                                   inputs.previous.dim)
    joint = JointModule(model, transform)
    joint.load_state_dict(saved["best_state"] or saved["joint"])
    model.eval()
    return TrainResult(model=model, transform=transform, history=saved["history"],
                       selected_epoch=saved["best"]["epoch"] or saved["epoch"],
                       selected_metrics=saved["best"]["metrics"])


def _remove_local_checkpoint(path: str) -> None:
    """Ray Train's local mode (`--num-workers 0`) returns the loop's own temporary folder as
    the last checkpoint, which nothing else removes (a persisted one is left as it is)."""
    folder = os.path.abspath(path)
    if (os.path.dirname(folder) == os.path.abspath(tempfile.gettempdir())
            and os.path.basename(folder).startswith(CHECKPOINT_PREFIX)):
        shutil.rmtree(folder, ignore_errors=True)


def run_training(job: TrainJobConfig) -> TrainOutcome:
    """A bump: train, score, gate, and publish or reject the candidate."""
    with Placement(job.placement_timeout_s) as placement:
        if job.sharded:
            from bc_ray.train.sharded_job import run_sharded_training

            return run_sharded_training(job, placement)
        return _run_one_table(job, placement)


def _run_one_table(job: TrainJobConfig, placement: Placement) -> TrainOutcome:
    started = time.perf_counter()
    inputs = load_inputs(job)
    check_placement(job, placement)
    if job.num_workers > 0:  # each worker rebuilds M_k, and M_{k-1}, by its family's name
        parent = inputs.parent
        check_loads_on_cluster([inputs.model] + ([parent.family] if parent and not
                                                 parent.external else []))
    name = job.run_name or f"train-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    logger.info("training %s (%s) on %d worker(s): %s %s", inputs.method.title, name,
                job.num_workers, inputs.model, inputs.spec)
    placement.release()  # Ray Train asks for its workers' nodes itself
    result = fit(job, inputs, name)
    if result.error is not None:
        raise TrainingError(f"training run {name} failed: {result.error}")
    try:
        trained = _restore(result, inputs)
    finally:
        if result.checkpoint is not None:
            _remove_local_checkpoint(result.checkpoint.path)
    outcome = finish_version(inputs.method, trained, inputs.split.graph, job.train,
                             inputs.previous)
    metrics = score_candidate(outcome.model, outcome.transform, inputs.split, inputs.previous,
                              seed=job.train.seed)
    history = trained.history
    steady = history[1:] or history  # the first epoch pays one-off warm-up costs
    seconds = sum(h["seconds"] for h in steady)
    edges = sum(h["edges"] for h in steady) * max(job.num_workers, 1)
    metrics.update(
        run_name=name, epochs=len(history), selected_epoch=trained.selected_epoch,
        train_seconds=sum(h["seconds"] for h in history),
        edges_per_second=edges / seconds if seconds else None,
        wall_seconds=time.perf_counter() - started, num_workers=job.num_workers,
        resumed_from=result.metrics.get("resumed_from"),
        param_checksums=result.metrics.get("param_checksums"),
        worker_nodes=result.metrics.get("worker_nodes"),
        targets_see_held_out=inputs.targets_see_held_out)
    reasons = gate(metrics, job.gate)
    candidate = register_candidate(inputs.store, Candidate(
        parent=inputs.parent.version if inputs.parent else None, dim=inputs.spec.output_dim,
        method=inputs.method.name, spec=inputs.spec.to_dict(), family=inputs.model,
        snapshot_id=inputs.state.current_snapshot, cutoff=inputs.snapshot.meta.cutoff,
        model=inputs.family.to_bytes(outcome.model), transform=outcome.transform, metrics=metrics))
    if reasons:
        reject_version(inputs.store, candidate.version, reasons)
        return TrainOutcome(candidate.version, "rejected", metrics, reasons, name, history)
    publish_version(inputs.store, candidate.version)
    return TrainOutcome(candidate.version, "published", metrics, [], name, history)
