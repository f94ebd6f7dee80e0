"""`bc-ray train --sharded`: a GraphSAGE bump whose training workers each hold their share of
the graph, the ID tables and the alignment targets, and whose driver never loads the edge list.

The driver counts degrees and plans row owners (`plan_owners`), decides the held-out split by
streaming the edge files (`held_out_split`), finds an age-aware model's first interactions on
ingested data the same way (`partition.first_seen`), and starts the workers. Each worker reads
its own nodes' training edges, warm-starts its ID rows from M_{k-1}'s model file (mapped on a
local store: it reads only its rows' pages), computes its rows of z_{k-1} by running M_{k-1}
over the sharded training graph with the other workers (`--targets model`: no held-out edge
reaches a target) or reads its rows of the stored ver-(k-1) tables (`--targets stored`, a
published parent), and trains the BC-Aligner objective within the step budget. Scoring is
sharded too: Recall@50 of the held-out test users (`sharded_recall`) and the alignment error on
the same sample of entities the one-table gate draws. Rank 0 then writes M_k's one model file
in place, every worker's rows going into it a block at a time (`write_model_file`: no process
holds the whole tables); the driver gates and registers it as `bc-ray train` does.

Model selection is the one-table bump's: every `eval_every` epochs the workers score the
validation users together, and the selected epoch's dense weights and ID rows are kept. Every
`checkpoint_every` epochs each worker writes its own part of the checkpoint (its rows with their
optimizer state, and the dense state), which a restarted group resumes from. The relative gate's
parent Recall@50 runs M_{k-1} over the same sharded graph, its tables mapped. Not yet here:
GPUs (rows are exchanged over gloo).
"""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
import mmap
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

from bc_ray.core.evaluation import MIN_ENTITY_SAMPLE
from bc_ray.core.methods import Method
from bc_ray.core.registry import DEFAULT_FAMILY, get_family
from bc_ray.core.row_shards import RowOwners, ShardedRows
from bc_ray.core.trainer import ShardedAlignment, VersionTrainer
from bc_ray.core.transforms import IdentityTransform, make_transform
from bc_ray.exceptions import ConfigError, PlacementError, TrainingError
from bc_ray.memory import PeakWatch, private_bytes, return_freed_memory
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.sharded_eval import Embedded, sharded_layerwise, sharded_recall
from bc_ray.models.graphsage.sharded_model_file import warm_id_rows, write_model_file
from bc_ray.models.graphsage.sharded_task import (
    ShardedLinkPredictionTask,
    initial_id_rows,
    sharded_model,
)
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.partition.edge_files import EdgeFiles, count_degrees_by_file
from bc_ray.partition.first_seen import ages_need_edges, first_interactions
from bc_ray.partition.model_source import ModelSource
from bc_ray.partition.task_memory import MB, slot_memory
from bc_ray.placement import Placement, Workers
from bc_ray.store.snapshots import load_entities
from bc_ray.store.state import StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES
from bc_ray.store.versions import Candidate, publish_version, register_candidate, reject_version
from bc_ray.train.config import FaultInjection, TrainJobConfig
from bc_ray.train.gate import ALIGN_SAMPLE, gate
from bc_ray.train.held_out import HeldOut, held_out_split
from bc_ray.train.held_out_caveats import say_if_seen, stored_targets_see
from bc_ray.train.inputs import (
    chain_amplifiers,
    check_sharded,
    instead_of_stored,
    resolve_method,
    resolve_spec,
)
from bc_ray.train.loop import (
    checkpoint_folder,
    epochs,
    gathered,
    remove_folder,
    report_epoch,
    start_worker,
)
from bc_ray.train.runs import TrainOutcome, check_placement, run_config, run_trainer
from bc_ray.train.sharded import ShardedRun, entity_graph, plan_owners, row_bytes
from bc_ray.train.stored_targets import stored_target_rows
from bc_ray.train.worker_memory import (
    WorkerMemory,
    peak_bytes,
    plan_worker_memory,
    worker_state_bytes,
)

logger = logging.getLogger(__name__)
RESULT_FILE = "sharded-bump.pt"  # B_k, the gate's scores and the history
MODEL_FILE = "model.pt"  # M_k's file, written by rank 0


@dataclass(frozen=True)
class ShardedBump:
    """What every worker of a sharded bump is given besides its rank."""

    run: ShardedRun
    held_out: HeldOut
    method: Method
    parent: VersionRecord | None
    model_source: ModelSource | None  # M_{k-1}'s file: warm start, targets, the parent's recall
    amplifiers: list[torch.Tensor] | None  # multi-step alignment's W_{k-1}^j
    memory: WorkerMemory  # what each worker holds and asks Ray for
    checkpoint_every: int = 5
    fault: FaultInjection | None = None  # tests: a worker that crashes once
    targets: str | None = None  # z_{k-1}: M_{k-1} run by the workers on the training graph, or
    # the stored ver-(k-1) tables (`--targets stored`; a published parent has no model); None
    # for version 0


def target_source(job: TrainJobConfig, parent: VersionRecord | None) -> str | None:
    """Where the bump's z_{k-1} comes from (`--targets`); a published parent's tables are its
    only embeddings, as in the one-table bump. None: version 0, no targets."""
    if parent is None:
        return None
    return "stored" if parent.external else job.targets


def _check_inputs(state: StoreState, spec: VersionSpec, parent: VersionRecord | None,
                  targets: str | None) -> None:
    """What the workers would otherwise find missing only after the driver's passes."""
    if not spec.id_embeddings:
        raise ConfigError("--sharded shards the ID tables: the spec has none (id_embeddings)")
    if targets == "model" and parent.model_removed:
        raise TrainingError(f"version {parent.version}'s model was removed: align to its stored "
                            "embeddings (--targets stored)")
    if targets == "stored" and any(state.table(parent.version, e) is None for e in ENTITIES):
        raise TrainingError(f"a sharded bump with stored targets aligns to version "
                            f"{parent.version}'s stored embeddings, which have not been "
                            "refreshed: run `bc-ray refresh` first"
                            + ("" if parent.external else ", or align to M_{k-1} run on the "
                               "training graph (--targets model)"))


def _id_rows(bump: ShardedBump, rank: int, seen: torch.Tensor) -> torch.Tensor:
    run = bump.run
    fresh = initial_id_rows(run.owners, rank, run.spec.hidden_dim, run.train.seed)
    if bump.model_source is None or run.train.warm_start == "off":
        return fresh
    previous = _parent_model(bump, rank)
    rows = warm_id_rows(previous, run.owners, rank, fresh, seen, run.train.seed)
    del previous
    return rows


def _parent_model(bump: ShardedBump, rank: int) -> EmbeddingModel:
    """M_{k-1}, able to look up the ID rows worker `rank` owns (and only those, on S3)."""
    return bump.model_source.load({entity: (first, last) for entity, first, last, _
                                   in bump.run.owners.spans(rank)})


def _model_targets(bump: ShardedBump, task: ShardedLinkPredictionTask,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """M_{k-1} run on the training graph, every worker its own rows (all, or its local `rows`;
    the calls are collectives), as the one-table bump's `--targets model` runs it on the
    whole: no held-out edge reaches a target, and every entity has one."""
    return sharded_layerwise(task, _parent_model(bump, task.rank), rows)  # its own buffers


def _stored_targets(bump: ShardedBump, rank: int) -> tuple[ShardedRows, torch.Tensor]:
    """This worker's rows of the stored ver-(k-1) tables, and the whole mask."""
    store = Store(bump.run.files.store_uri, bump.run.files.options)
    entities = load_entities(store, bump.run.state)
    owners = bump.run.owners
    values = np.empty((owners.num_rows(rank), bump.parent.dim), dtype=np.float32)
    masks = []
    for entity, first, last, offset in owners.spans(rank):
        rows = stored_target_rows(store, bump.run.state, bump.parent, entity,
                                  entities.entities(entity), first, last,
                                  out=values[offset:offset + last - first])
        masks.append(torch.from_numpy(rows.mask))
    return ShardedRows(owners, torch.from_numpy(values)), torch.cat(masks)


def _alignment_sample(bump: ShardedBump, mask: torch.Tensor, rank: int) -> torch.Tensor:
    """This worker's rows (local indices, ascending) of the entities `score_candidate` draws to
    measure the alignment error (the same draw on every worker)."""
    held, owners = bump.held_out, bump.run.owners
    pool = torch.cat([held.user_pool, held.item_pool + owners.num_users])
    rows = pool[mask[pool]]
    generator = torch.Generator().manual_seed(bump.run.train.seed)
    rows = rows[torch.randperm(rows.numel(), generator=generator)[:ALIGN_SAMPLE]]
    return owners.local_row(rows[owners.owner(rows) == rank], rank).sort().values


def _scored_rows(bump: ShardedBump, sample: torch.Tensor | None, rank: int) -> torch.Tensor:
    """The rows of this worker that scoring reads (local indices, ascending): its items (every
    item is ranked), its held-out users and its part of the alignment `sample`."""
    owners = bump.run.owners
    first_user, last_user = owners.users_of(rank)
    users = torch.unique(bump.held_out.eval_user)
    parts = [users[(users >= first_user) & (users < last_user)] - first_user,
             torch.arange(last_user - first_user, owners.num_rows(rank))]
    if sample is not None:
        parts.append(sample)
    return torch.unique(torch.cat(parts))


def _alignment_metrics(z: Embedded, transform, expected: Embedded, users: int) -> dict:
    """The alignment error of B_k z_k against z_{k-1} on the entities `score_candidate` draws,
    each scored by its owner, of both and of each entity; `z`: this worker's rows (the sample's
    among them); `expected`: its rows of z_{k-1} for the sample (`_alignment_sample`);
    `users`: how many of its rows are users (they come first)."""
    mine = expected.rows
    weight, bias = transform
    predicted = z.of(mine) @ torch.from_numpy(weight).T + torch.from_numpy(bias)
    distances, norms = (predicted - expected.z).norm(dim=1), expected.z.norm(dim=1)
    sums = torch.tensor([[float(distances[rows].sum()), float(norms[rows].sum()),
                          float(rows.sum())] for rows in (mine < users, mine >= users)],
                        dtype=torch.float64)  # by entity: distance, norm, count
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    error_sum, norm_sum, count = sums.sum(dim=0).tolist()
    error = error_sum / count if count else float("nan")
    return {"align_error": error,
            "align_error_rel": error / max(norm_sum / count, 1e-12) if count else float("nan"),
            "align_sample": int(count),
            "align_error_rel_by_entity": {
                entity: part[0] / max(part[1], 1e-12)  # the counts cancel
                for entity, part in zip(("user", "item"), sums.tolist())
                if part[2] >= MIN_ENTITY_SAMPLE}}


def _local_users(owners: RowOwners, rank: int) -> int:
    """How many of worker `rank`'s rows are users (its first rows)."""
    first, last = owners.users_of(rank)
    return last - first


class _Stages:
    """Where a worker is, in its log: a bump at scale runs for minutes between reports (on
    stderr, which Ray forwards to the driver's: `--json` keeps stdout to the JSON), with its
    private memory at the stage's end and its peak within the stage."""

    def __init__(self, rank: int) -> None:
        self.rank, self.started, self.watch = rank, time.perf_counter(), PeakWatch()

    def done(self, name: str) -> None:
        peak = self.watch.take()
        print(f"sharded worker {self.rank}: {name} after {time.perf_counter() - self.started:.0f}"
              f" s, {private_bytes() / 2**20:,.0f} MB private (peak within "
              f"{peak / 2**20:,.0f} MB)", file=sys.stderr, flush=True)


def _embedded(task: ShardedLinkPredictionTask, model, rows: torch.Tensor) -> Embedded:
    """z of this worker's `rows` (`_scored_rows`), as the full-graph forward computes them,
    with rank 0's buffers (BatchNorm statistics), which the file keeps: in sampled training
    each worker's follow its own last batch."""
    if dist.is_available() and dist.is_initialized() and not len(model.ids):
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    return Embedded(rows, sharded_layerwise(task, model, rows))


def _transform(bump: ShardedBump, trainer: VersionTrainer):
    """B_k as the version keeps it (as `finish_version` makes it for the methods `_check`
    lets through: none refits its B_k)."""
    if bump.parent is None:
        return None
    if bump.method.joint:
        return trainer.joint.transform.affine()
    return IdentityTransform(bump.run.spec.output_dim, bump.parent.dim).affine()


def _worker_file(rank: int) -> str:
    return f"worker-{rank:05d}.pt"


def _resume(trainer: VersionTrainer, rank: int) -> tuple[int, int | None]:
    """(first epoch to run, the epoch resumed from): a restarted group picks up its latest
    checkpoint, each worker reading only its own file."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 1, None
    path = f"{checkpoint.path.rstrip('/')}/{_worker_file(rank)}"
    try:
        with checkpoint.filesystem.open_input_stream(path) as stream:
            saved = torch.load(io.BytesIO(stream.read()), weights_only=False)
    except FileNotFoundError:
        raise TrainingError(f"checkpoint {checkpoint.path} lacks worker {rank}'s rows: it was "
                            "written by a group of another size") from None
    trainer.load_state(saved)
    return saved["epoch"] + 1, saved["epoch"] + 1


def _train(trainer: VersionTrainer, bump: ShardedBump, rank: int,
           on_last: Callable[[], None]) -> dict:
    """The epochs (from a restarted group's checkpoint), each reported, with this worker's
    checkpoint every `checkpoint_every`; the last one's stats, which the final report carries.
    `on_last` is called once the last epoch's steps are taken, before its evaluation."""
    def before_last_evaluation() -> None:  # no step follows: the ID rows' optimizer state
        trainer.task.ids.optimizer.state.clear()  # (Adam's: 2 x the rows) makes room
        on_last()

    start, resumed_from = _resume(trainer, rank)
    stats: dict | None = None
    for epoch, stats, last in epochs(trainer, rank, start, resumed_from, bump.fault,
                                     on_last=before_last_evaluation):
        if last:
            break
        # Each worker's part of the checkpoint: its rows, their optimizer state and the dense
        # state (Ray Train merges the workers' files into one).
        report_epoch(stats, {**trainer.state(), "epoch": epoch}
                     if epoch % bump.checkpoint_every == 0 else None, _worker_file(rank))
    if stats is None:  # checkpoints are of epochs before the last: a restart always has one
        raise TrainingError(f"worker {rank} resumed at epoch {start} of "
                            f"{bump.run.train.epochs}: no epoch left to train")
    return stats


def _gate_scores(bump: ShardedBump, task: ShardedLinkPredictionTask, model, affine,
                 expected: Embedded | None, scored: torch.Tensor,
                 z: Embedded | None = None) -> dict:
    """What `score_candidate` measures, computed by every worker together: Recall@50 of the
    held-out test users, M_{k-1}'s on the same graph (the relative gate's) and the alignment
    error against `expected` (None: no parent), from this worker's `scored` rows. `z`: this
    worker's rows of the model as scored already (by the last evaluation,
    when it selected that state), or None to embed them."""
    held = bump.held_out
    if z is None:
        z = _embedded(task, model, scored)
    metrics = {"recall_at_50": sharded_recall(task, z, held.eval_user, held.eval_item,
                                              users=held.test_users, item_pool=held.item_pool)}
    if expected is not None:
        metrics.update(_alignment_metrics(z, affine, expected,
                                          _local_users(bump.run.owners, task.rank)))
    del z  # M_{k-1}'s rows take its place
    if bump.model_source is not None:
        metrics["parent_recall_at_50"] = sharded_recall(
            task, _embedded(task, _parent_model(bump, task.rank), scored), held.eval_user,
            held.eval_item, users=held.test_users, item_pool=held.item_pool)
    return metrics


@dataclass
class _Trained:
    """What is left of a worker's training once it is scored: the model and its ID rows."""

    model: torch.nn.Module  # the dense weights (a `sharded_model`)
    id_rows: torch.Tensor
    affine: tuple | None  # B_k's (weight, bias)
    metrics: dict  # the gate's scores
    history: list[dict]
    final: dict  # the last report's metrics


def _alignment(bump: ShardedBump, task: ShardedLinkPredictionTask, stages: _Stages
               ) -> tuple[ShardedAlignment | None, ShardedRows | None, Embedded | None]:
    """(B_k's joint training against this worker's rows of z_{k-1}, those rows while a step
    may read them, the alignment sample's rows that scoring reads): all None without a
    parent; a method not aligned jointly keeps only the sample's rows (and with model
    targets computes only those)."""
    if bump.parent is None:
        return None, None, None
    owners, rank = bump.run.owners, task.rank
    if bump.targets == "stored":
        targets, mask = _stored_targets(bump, rank)
    else:
        targets, mask = None, torch.ones(owners.num_users + owners.num_items, dtype=torch.bool)
    sample = _alignment_sample(bump, mask, rank)
    if targets is None:
        z = _model_targets(bump, task, None if bump.method.joint else sample)
        targets = ShardedRows(owners, z) if bump.method.joint else None
        expected = Embedded(sample, z[sample] if bump.method.joint else z)
    else:
        expected = Embedded(sample, targets.rows[sample])
    return_freed_memory()  # the table parts it read, or M_{k-1}'s ID rows
    stages.done(f"targets of version {bump.parent.version} ({bump.targets})")
    if not bump.method.joint:
        return None, None, expected
    spec = bump.run.spec
    transform = make_transform(bump.method.transform, spec.output_dim, bump.parent.dim)
    amplifiers = bump.amplifiers if bump.method.alignment == "multi" else None
    return ShardedAlignment(transform, targets, mask, amplifiers), targets, expected


def _train_and_score(bump: ShardedBump, rank: int, world: int, stages: _Stages) -> _Trained:
    """Everything a worker holds for training and scoring (graph rows, sampler, targets) lives
    here and goes when it returns, before the model file is written."""
    run, held = bump.run, bump.held_out
    graph = entity_graph(run)
    rows = run.local_rows(rank)
    stages.done(f"read its {rows.neighbours.size:,} edge ends")
    model = sharded_model(run.spec, graph)
    id_rows = _id_rows(bump, rank, torch.from_numpy(np.diff(rows.crow) > 0))
    task = ShardedLinkPredictionTask(model, graph, rows, run.train, id_rows, rank=rank,
                                     world_size=world, item_pool=held.item_pool)
    stages.done(f"warm start and sampler of its {task.triples.num_edges:,} training edges "
                "ready")
    alignment, targets, expected = _alignment(bump, task, stages)
    scored = _scored_rows(bump, None if expected is None else expected.rows, rank)
    # The last epoch's z: if selection keeps that epoch, the gate scores the same state and
    # takes it instead of another layer-wise pass (minutes at 100M edges).
    last: dict = {"epoch": False}

    def validate(model, transform) -> dict:
        """Selection's scores, computed by every worker together (the calls are collectives)."""
        z = _embedded(task, model, scored)
        if last["epoch"]:
            last["z"] = z
        metrics = {"recall": sharded_recall(task, z, held.eval_user, held.eval_item,
                                            users=held.val_users, item_pool=held.item_pool)}
        if alignment is not None:
            aligned = _alignment_metrics(z, transform.affine(), expected,
                                         _local_users(run.owners, rank))
            metrics["align_error"] = aligned["align_error"]
        return metrics

    trainer = VersionTrainer(model, graph, run.train, alignment, validate, rank=rank,
                             world_size=world, task=task)
    if world > 1:
        trainer.module = prepare_model(trainer.joint, move_to_device=False)

    def on_last() -> None:
        last.update(epoch=True)
        if targets is not None:  # no step follows, and scoring reads `expected` alone
            targets.rows = targets.rows.new_empty((0, targets.rows.shape[1]))  # not a view
        stages.done(f"took {trainer.steps_done} steps")

    stats = _train(trainer, bump, rank, on_last=on_last)
    selected = trainer.result()  # the selected epoch's dense weights and ID rows
    stages.done("evaluated the last epoch")

    affine = _transform(bump, trainer)
    if selected.selected_epoch != stats["epoch"]:
        last.pop("z", None)  # an earlier epoch's state was restored: it is embedded afresh
    metrics = {**_gate_scores(bump, task, model, affine, expected, scored,
                              last.pop("z", None)),  # held by the callee alone: it frees it
               "selected_epoch": selected.selected_epoch}
    stages.done("scored")
    held_bytes = task.nbytes
    final = {**stats, "worker_graph_bytes": gathered(str(held_bytes["graph_rows"])),
             "worker_id_bytes": gathered(str(held_bytes["id_rows"])),
             "worker_nodes": gathered(ray.get_runtime_context().get_node_id())}
    return _Trained(model, task.ids.weight.detach(), affine, metrics, trainer.history, final)


def sharded_bump_per_worker(config: dict) -> None:
    start_worker()
    bump: ShardedBump = config["bump"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    stages = _Stages(rank)
    try:
        _bump(bump, rank, world, stages)
    finally:
        stages.watch.close()


def _bump(bump: ShardedBump, rank: int, world: int, stages: _Stages) -> None:
    trained = _train_and_score(bump, rank, world, stages)
    gc.collect()  # modules and the process group's hooks hold reference cycles
    return_freed_memory()
    if rank != 0:  # its rows go into rank 0's file
        write_model_file(trained.model, trained.id_rows, bump.run.owners, None)
        ray.train.report(trained.final)
        return
    directory = checkpoint_folder()  # found and removed by the next start if killed within
    try:
        write_model_file(trained.model, trained.id_rows, bump.run.owners,
                         os.path.join(directory, MODEL_FILE))
        torch.save({"transform": trained.affine, "metrics": trained.metrics,
                    "history": trained.history}, os.path.join(directory, RESULT_FILE))
        stages.done("wrote the model file")
        ray.train.report(trained.final,
                         checkpoint=ray.train.Checkpoint.from_directory(directory))
    finally:
        remove_folder(directory)


def _worker_memory(job: TrainJobConfig, placement: Placement, owners: RowOwners,
                   degrees: np.ndarray, width: int, aligned: bool) -> WorkerMemory:
    """The workers' memory plan, after nodes with room for each worker's were asked of the
    cluster's autoscaler, where one runs; where none came, the plan's refusal says what
    helps, as temporary as the wait's."""
    try:
        placement.wait(Workers(job.num_workers, {
            "CPU": job.cpus_per_worker,
            "memory": float(peak_bytes(worker_state_bytes(owners, degrees, width)))}))
    except PlacementError as waited:
        try:
            return plan_worker_memory(owners, degrees, width, job.cpus_per_worker, ray.nodes(),
                                      aligned)
        except ConfigError as refused:
            raise PlacementError(f"{refused} ({waited})", temporary=waited.temporary) \
                from refused
    return plan_worker_memory(owners, degrees, width, job.cpus_per_worker, ray.nodes(),
                              aligned)


def _plan(job: TrainJobConfig, store: Store, state: StoreState, parent: VersionRecord | None,
          spec: VersionSpec, method: Method, placement: Placement) -> ShardedBump:
    """Driver side: owners, the held-out split and what workers read, all of `state` (the
    store as the bump found it: an ingest landing meanwhile changes none of it)."""
    entities = load_entities(store, state)
    files = EdgeFiles.of(store, state, entities.num_users, entities.num_items)
    degrees, file_edges = count_degrees_by_file(files, 1.0, None)
    target_dim = parent.dim if parent is not None else 0
    width = row_bytes(spec, target_dim, job.train.id_optimizer)
    owners = plan_owners(files, job.num_workers, width, job.train.user_uniform,
                         degrees=degrees)
    memory = _worker_memory(job, placement, owners, degrees, width, parent is not None)
    held = held_out_split(files, degrees, job.holdout_days, job.holdout, job.train.seed,
                          job.max_eval_users)
    logger.info("sharded bump: %d workers, each holding up to %.0f MB of rows (asking Ray for "
                "%s), held out %s: %d edges of %d test users", job.num_workers,
                max(memory.state) / MB,
                "no memory" if memory.request is None else f"{memory.request / MB:,.0f} MB",
                held.window, held.eval_user.numel(), held.test_users.numel())
    source = None
    if parent is not None and not parent.external:
        source = ModelSource.of(store, parent)
    amplifiers = chain_amplifiers(store, state, parent) if parent is not None else None
    run = ShardedRun(files, owners, spec, job.train, held.start, held, state)
    # M_{k-1} runs on the same graph (targets, the relative gate): its ages count too.
    parent_ages = source is not None and bool(parent.spec.get("cold_start_mixing"))
    if ages_need_edges(spec.cold_start_mixing or parent_ages, state):
        # Ages on ingested data: first interactions (and "now", the period's start) in
        # edge-fraction time, which the entity tables do not keep.
        found = first_interactions(files, degrees, file_edges, budget=slot_memory(
            1.0, ray.nodes()), ranges=job.num_workers, at=[held.start])
        run = dataclasses.replace(run, now=float(found.t_at[0]), first_seen=ray.put(found))
    return ShardedBump(run, held, method, parent, source, amplifiers, memory,
                       job.checkpoint_every, job.fault, target_source(job, parent))


def _targets_see_held_out(bump: ShardedBump) -> bool | None:
    """Whether the stored ver-(k-1) tables it aligns to were refreshed on its held-out period
    (said when they were); None without stored targets."""
    if bump.targets != "stored":
        return None
    seen = stored_targets_see(bump.run.state, bump.parent.version, bump.held_out.start,
                              bump.run.files.time_column == "timestamp")
    say_if_seen(seen, bump.parent.version, bump.held_out.window,
                instead_of_stored(bump.parent))
    return seen


def run_sharded_training(job: TrainJobConfig, placement: Placement) -> TrainOutcome:
    started = time.perf_counter()
    method = resolve_method(job.method)
    store = Store(job.store)
    state = store.state()
    parent = state.version() if state.current_version is not None else None
    check_sharded(job, method, parent)
    family = get_family(DEFAULT_FAMILY)
    spec = resolve_spec(job, DEFAULT_FAMILY, family, method, parent)
    _check_inputs(state, spec, parent, target_source(job, parent))
    check_placement(job, placement)
    bump = _plan(job, store, state, parent, spec, method, placement)
    seen = _targets_see_held_out(bump)
    name = job.run_name or f"sharded-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    placement.release()  # Ray Train asks for its workers' nodes itself
    result = run_trainer(TorchTrainer(
        sharded_bump_per_worker, train_loop_config={"bump": bump},
        scaling_config=ScalingConfig(num_workers=job.num_workers,
                                     resources_per_worker={"CPU": job.cpus_per_worker,
                                                           **bump.memory.resources}),
        run_config=run_config(store, name, job)))
    if result.error is not None:
        raise TrainingError(f"sharded training run {name} failed: {result.error}")
    if result.checkpoint is None:
        raise TrainingError(f"sharded training run {name} ended without its model")
    with result.checkpoint.as_directory() as directory:
        saved = torch.load(os.path.join(directory, RESULT_FILE), weights_only=False)
        history = saved["history"]
        steady = history[1:] or history
        seconds = sum(h["seconds"] for h in steady)
        metrics = {**saved["metrics"], "run_name": name, "epochs": len(history),
                   "sharded": True,
                   "train_seconds": sum(h["seconds"] for h in history),
                   "resumed_from": result.metrics.get("resumed_from"),
                   "edges_per_second": (sum(h["edges"] for h in steady) * job.num_workers
                                        / seconds if seconds else None),
                   "wall_seconds": time.perf_counter() - started,
                   "num_workers": job.num_workers,
                   "worker_graph_bytes": [int(b) for b in result.metrics["worker_graph_bytes"]],
                   "worker_id_bytes": [int(b) for b in result.metrics["worker_id_bytes"]],
                   "worker_planned_bytes": list(bump.memory.state),
                   "worker_nodes": result.metrics["worker_nodes"],
                   "targets": bump.targets, "targets_see_held_out": seen}
        reasons = gate(metrics, job.gate)
        # The model file goes into the store from its mapped pages: the driver never holds
        # the whole tables (4 d N bytes, 2.8 GB at 100M edges).
        with (open(os.path.join(directory, MODEL_FILE), "rb") as file,
              mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
              memoryview(mapped) as model_file):
            candidate = register_candidate(store, Candidate(
                parent=parent.version if parent else None, dim=spec.output_dim,
                method=method.name, spec=spec.to_dict(), family=DEFAULT_FAMILY,
                snapshot_id=state.current_snapshot, cutoff=state.snapshot().cutoff,
                model=model_file, transform=saved["transform"], metrics=metrics))
    if reasons:
        reject_version(store, candidate.version, reasons)
        return TrainOutcome(candidate.version, "rejected", metrics, reasons, name, history)
    publish_version(store, candidate.version)
    return TrainOutcome(candidate.version, "published", metrics, [], name, history)
