"""The per-worker training function TorchTrainer runs (one copy per rank, DDP over gloo/NCCL).

Every rank loads the snapshot and the frozen M_{k-1} once, trains on its shard of each epoch's
triples, evaluates (so model selection stays identical across ranks), and calls
`ray.train.report` once per epoch; only rank 0 attaches checkpoints. A restarted group resumes
from the latest checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bc_ray.core.trainer import VersionTrainer
from bc_ray.core.version import prepare_trainer, split_evaluator
from bc_ray.memory import private_bytes
from bc_ray.train.config import FaultInjection, TrainJobConfig
from bc_ray.train.inputs import load_inputs, previous_model_used

CHECKPOINT_FILE = "trainer.pt"
CHECKPOINT_PREFIX = "bc-ray-ckpt-"  # the temporary folder of each checkpoint reported


def parameter_checksum(module: torch.nn.Module) -> str:
    """Of the parameters, which DDP keeps identical across ranks. Buffers are left out: in
    sampled mode each rank's BatchNorm running statistics follow its own last batch (DDP
    re-broadcasts rank 0's before every forward, and rank 0's are the ones checkpointed)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gathered(value: str) -> list[str]:
    """`value` of every rank, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def inject_fault(fault: FaultInjection | None, rank: int, epoch: int) -> None:
    """A test's crash of worker `rank` after `epoch`, once (its marker file says it happened)."""
    if fault is None or fault.rank != rank or fault.epoch != epoch:
        return
    marker = Path(fault.marker)
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def log_progress(step: dict) -> None:
    """Within a long epoch, rank 0 prints where it is into the job's log."""
    print(f"epoch {step['epoch']}: step {step['step']}/{step['steps']}, "
          f"{step['edges_per_s']:,.0f} edges/s on this worker, epoch ETA {step['eta_s']:.0f} s, "
          f"{private_bytes() / 2**20:,.0f} MB private", file=sys.stderr, flush=True)


def report_epoch(stats: dict, checkpoint: dict | None = None, file_name: str = CHECKPOINT_FILE,
                 keep: bool = False) -> str | None:
    """The epoch's metrics, with `checkpoint` (when given) saved as `file_name` in a new
    temporary folder. A checkpoint holds the model: left in /tmp, every one of them would fill
    the disk of a long run, so the folder goes once `report` has persisted it (or given up: a
    peer died). `keep`: Ray Train's local mode (`--num-workers 0`) persists nothing and keeps
    the folder itself as the checkpoint, so it stays and its path is returned, for the caller
    to remove once superseded."""
    if checkpoint is None:
        ray.train.report(stats)
        return None
    directory = checkpoint_folder()
    try:
        torch.save(checkpoint, os.path.join(directory, file_name))
        ray.train.report(stats, checkpoint=ray.train.Checkpoint.from_directory(directory))
    except BaseException:
        remove_folder(directory)
        raise
    if keep:
        return directory
    remove_folder(directory)
    return None


def remove_folder(path: str | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def checkpoint_folder() -> str:
    """A new temporary folder for a checkpoint (or the model file) a report hands Ray, named
    by this process and its host (`remove_orphaned_checkpoints`)."""
    return tempfile.mkdtemp(prefix=f"{CHECKPOINT_PREFIX}{os.getpid()}@{socket.gethostname()}-")


def remove_orphaned_checkpoints() -> int:
    """Remove this node's checkpoint folders whose process is gone; how many. A worker killed
    within `report` (Ray Train kills the whole group when a peer dies) cannot remove its own,
    and each holds the model (gigabytes at scale). A folder is named `<pid>@<host>-<random>`;
    one of another host (containers sharing a temp dir have their own process ids), of a live
    process, or named otherwise is left alone."""
    removed, host = 0, socket.gethostname()
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{CHECKPOINT_PREFIX}*")):
        owner = os.path.basename(folder)[len(CHECKPOINT_PREFIX):].rsplit("-", 1)[0]
        pid, _, where = owner.partition("@")
        if pid.isdigit() and where == host and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def start_worker() -> None:
    """What every training worker does first: remove a killed group's checkpoints on this node
    (a restart comes here), and quiet Ray Train's line per `report` call."""
    remove_orphaned_checkpoints()
    quiet_report_lines()


def quiet_report_lines() -> None:
    """Ray Train 2.60 logs every `ray.train.report` at INFO from every worker ("Reporting
    training result N: TrainingReport(...)", hundreds of characters each epoch, under a logger
    named by its file); the driver logs each epoch once. Warnings still show."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray: its own logging
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict) -> None:
    start_worker()
    job = TrainJobConfig.from_dict(config["job"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    inputs = load_inputs(job, with_previous_model=previous_model_used(job), say=False)
    device = ray.train.torch.get_device() if job.use_gpu else torch.device("cpu")
    trainer = prepare_trainer(
        inputs.method, inputs.spec, inputs.split.graph, job.train, inputs.previous,
        lambda targets: split_evaluator(inputs.split, targets), rank=rank,
        world_size=max(world_size, 1), item_pool=inputs.split.item_pool, device=device,
        family=inputs.family)
    if world_size > 1:
        # Row-sparse ID tables (sampled mode) are averaged by the trainer, not by DDP.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            trainer.joint, trainer.sparse_parameter_names())
        trainer.module = ray.train.torch.prepare_model(trainer.joint, move_to_device=False)

    start, resumed_from = 1, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            saved = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=False,
                               map_location=device)
        trainer.load_state(saved)
        start = resumed_from = saved["epoch"] + 1

    _run_epochs(job, trainer, rank, start, resumed_from)


def epochs(trainer: VersionTrainer, rank: int, start: int, resumed_from: int | None,
           fault: FaultInjection | None,
           on_last: Callable[[], None] | None = None) -> Iterator[tuple[int, dict, bool]]:
    """(epoch, stats, last) of each epoch from `start`, its steps taken, evaluated when due and
    recorded, until the epochs or the step budget are spent or validation stopped improving
    on every rank (`patience`, as `VersionTrainer.fit` stops; ranks agree first, so none
    leaves a collective the others wait in): what both training loops share before they
    report. `on_last` runs once the last epoch's steps are taken, before its evaluation (after
    it, where convergence is what made the epoch the last)."""
    for epoch in range(start, trainer.config.epochs + 1):
        stats = trainer.run_epoch(epoch, log_progress if rank == 0 else None)
        last = trainer.is_last(epoch)
        if last and on_last is not None:
            on_last()
        evaluated = trainer.should_evaluate(epoch)
        if evaluated:
            stats.update(trainer.evaluate(epoch))
        if not last and evaluated and trainer.config.patience > 0 \
                and all(gathered("1" if trainer.converged else "")):  # all ranks stop together
            last = True
            if on_last is not None:
                on_last()
        trainer.history.append(stats)
        inject_fault(fault, rank, epoch)
        stats["resumed_from"] = resumed_from
        yield epoch, stats, last
        if last:
            return


def _run_epochs(job: TrainJobConfig, trainer, rank: int, start: int,
                resumed_from: int | None) -> None:
    """The epochs from `start`, each reported, rank 0's with a checkpoint every
    `checkpoint_every` and at the last."""
    # Ray Train's local mode (the driver's own process) keeps each checkpoint's folder as it
    # is: the superseded ones go here, the last once the driver has read it.
    local, previous = job.num_workers == 0, None
    try:
        for epoch, stats, last in epochs(trainer, rank, start, resumed_from, job.fault):
            if last:
                stats["param_checksums"] = gathered(parameter_checksum(trainer.joint))
                stats["worker_nodes"] = gathered(ray.get_runtime_context().get_node_id())
            attach = rank == 0 and (epoch % job.checkpoint_every == 0 or last)
            written = report_epoch(stats, {**trainer.state(), "epoch": epoch,
                                           "resumed_from": resumed_from} if attach else None,
                                   keep=local)
            if written is not None:
                remove_folder(previous)
                previous = written
    except BaseException:  # a failed local run has no checkpoint for the driver to read
        remove_folder(previous)
        raise
