"""What both bumps share around their Ray Train run (one-table `job`, `sharded_job`): the
placement check, the run's storage and failure settings, and the outcome they return."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig

from bc_ray.exceptions import TrainingError
from bc_ray.store.store import Store
from bc_ray.train.config import TrainJobConfig


@dataclass
class TrainOutcome:
    version: int
    status: str
    metrics: dict
    reasons: list[str] = field(default_factory=list)
    run_name: str = ""
    history: list[dict] = field(default_factory=list)


def check_placement(job: TrainJobConfig) -> None:
    """Refuse a worker count the cluster cannot place (instead of waiting forever)."""
    if job.num_workers == 0:
        return
    resources = ray.cluster_resources()
    need_cpu = job.num_workers * job.cpus_per_worker
    if resources.get("CPU", 0.0) < need_cpu:
        raise TrainingError(f"--num-workers {job.num_workers} x {job.cpus_per_worker} CPU needs "
                            f"{need_cpu:g} CPUs but the cluster has {resources.get('CPU', 0):g}")
    if job.use_gpu and resources.get("GPU", 0.0) < job.num_workers:
        raise TrainingError(f"--use-gpu with {job.num_workers} workers needs {job.num_workers} "
                            f"GPUs but the cluster has {resources.get('GPU', 0):g}")


def run_config(store: Store, name: str, job: TrainJobConfig) -> RunConfig:
    kwargs = {}
    if store.io.scheme == "s3":
        kwargs["storage_filesystem"] = store.io.arrow_fs()
    return RunConfig(name=name, storage_path=store.io.path("_train"),
                     failure_config=FailureConfig(max_failures=job.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=2), **kwargs)
