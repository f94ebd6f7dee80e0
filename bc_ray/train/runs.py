"""What both bumps share around their Ray Train run (one-table `job`, `sharded_job`): the
placement check, the run's storage and failure settings, running it, and the outcome they
return."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig

from bc_ray.exceptions import PlacementError
from bc_ray.placement import Placement, Workers, placeable
from bc_ray.store.store import Store
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.loop import remove_orphaned_checkpoints

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train.torch import TorchTrainer

# Ray Train's controller takes a worker's `ray.train.report` when it polls the group, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and the worker's next report waits until
# then. A bump reports every epoch, so each epoch shorter than the poll cost the whole poll: 15
# epochs on 10k edges took 43 s, of which 0.9 s computed (15 s polled at 0.25 s). Ray passes the
# variable from the driver to the controller (on any cluster); a value the user set wins.
# Polling four times a second costs the workers nothing measurable (bench_report_poll.py).
REPORT_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
REPORT_POLL_S = "0.25"


@dataclass
class TrainOutcome:
    version: int
    status: str
    metrics: dict
    reasons: list[str] = field(default_factory=list)
    run_name: str = ""
    history: list[dict] = field(default_factory=list)


def worker_resources(job: TrainJobConfig) -> dict[str, float]:
    """What each worker asks Ray for (Ray Train adds a GPU to each with `use_gpu`)."""
    return {"CPU": job.cpus_per_worker, **({"GPU": 1.0} if job.use_gpu else {})}


def check_placement(job: TrainJobConfig, placement: Placement) -> None:
    """Refuse a worker count the cluster cannot place and no autoscaler will (instead of Ray
    Train waiting forever); on a cluster that autoscales, wait for the nodes it starts."""
    workers = Workers(job.num_workers, worker_resources(job))
    if placement.wait(workers):
        return
    resources = ray.cluster_resources()
    fits = placeable(workers.bundle, ray.nodes())
    held = f"its nodes hold {fits} such worker(s) (a worker sits on one node), and no " \
           "autoscaler is asked for more (none runs, or --placement-timeout is 0)"
    if job.use_gpu:
        raise PlacementError(f"--use-gpu with {job.num_workers} workers of "
                             f"{job.cpus_per_worker:g} CPU needs {job.num_workers} GPUs; the "
                             f"cluster has {resources.get('GPU', 0):g}, and {held}")
    need_cpu = job.num_workers * job.cpus_per_worker
    raise PlacementError(f"--num-workers {job.num_workers} x {job.cpus_per_worker:g} CPU needs "
                         f"{need_cpu:g} CPUs; the cluster has {resources.get('CPU', 0):g}, and "
                         f"{held}")


def run_config(store: Store, name: str, job: TrainJobConfig) -> RunConfig:
    kwargs = {}
    if store.io.scheme == "s3":
        kwargs["storage_filesystem"] = store.io.arrow_fs()
    return RunConfig(name=name, storage_path=store.io.path("_train"),
                     failure_config=FailureConfig(max_failures=job.max_failures),
                     checkpoint_config=CheckpointConfig(num_to_keep=2), **kwargs)


def leave_out_a_blind_cleaner(trainer: TorchTrainer) -> None:
    """Ray Train's PlacementGroupCleaner asks Ray's State API, which the dashboard serves,
    whether the run's controller still lives. On a cluster without a dashboard (the one `bc-ray`
    starts locally) each ask fails, so it can never clean; stopping it cost every run 12 s and
    a traceback in the log. It is left out there, and kept on clusters with a dashboard."""
    try:
        from ray._private.worker import get_dashboard_url  # no public way to ask

        defaults = trainer._create_default_callbacks  # Ray Train v2's
        if get_dashboard_url():
            return
    except Exception:  # noqa: BLE001 - another Ray, or Train v1: its defaults stand
        return
    trainer._create_default_callbacks = lambda: [  # what `fit` asks for, on the driver
        callback for callback in defaults()
        if type(callback).__name__ != "PlacementGroupCleanerCallback"]


@contextlib.contextmanager
def polled_often() -> Iterator[None]:
    """Ray Train's controller polls every `REPORT_POLL_S` within (so that short epochs do not
    each wait for its default 2 s), unless the user chose."""
    if REPORT_POLL_ENV in os.environ:
        yield
        return
    os.environ[REPORT_POLL_ENV] = REPORT_POLL_S
    try:
        yield
    finally:
        os.environ.pop(REPORT_POLL_ENV, None)


def run_trainer(trainer: TorchTrainer) -> Result:
    """`trainer.fit()`, its reports taken as they come (`polled_often`)."""
    leave_out_a_blind_cleaner(trainer)
    with polled_often():
        try:
            return trainer.fit()
        finally:  # a group killed within a report left its folders on this node
            remove_orphaned_checkpoints()
