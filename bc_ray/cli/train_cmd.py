"""`bc-ray train`: a version bump on Ray Train (the same code `jobs/train.py` runs)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bc_ray.cli.common import (
    JsonOption,
    SpecOption,
    StoreOption,
    default_of,
    model_family,
    open_store,
)
from bc_ray.cli.output import emit
from bc_ray.exceptions import ConfigError
from bc_ray.render import key_values
from bc_ray.train.config import TrainJobConfig

if TYPE_CHECKING:
    from bc_ray.store.state import StoreState, VersionRecord
    from bc_ray.train.runs import TrainOutcome

# What a training job takes for an option not given: the options' defaults are these.
TRAIN = default_of(TrainJobConfig, "train")
GATE = default_of(TrainJobConfig, "gate")


def _job(name: str):
    return default_of(TrainJobConfig, name)


def _help(text: str, *declarations: str):
    return typer.Option(*declarations, help=text)


# The options, declared once here so `train` reads as what it does.
Method = Annotated[str, _help(
    "bc-aligner, joint-lin-sloss, joint-notrans, post-lin-sloss, post-lin-mloss, non-bc, "
    "finetune-m0, bc-aligner-orth, bc-aligner-refit (BC-Aligner, then B_k refitted by least "
    "squares on the final M_k), post-procrustes, post-lowrank.")]
NumWorkers = Annotated[int, _help("Ray Train workers (DDP); 0 trains in the driver process.")]
UseGpu = Annotated[bool, _help("One GPU per worker (NCCL).", "--use-gpu")]
CpusPerWorker = Annotated[float, _help("CPUs reserved per worker.")]
Model = Annotated[Optional[str], _help(
    "Model family: graphsage, sequence, the name of a bc_ray.models entry point, or "
    "package.module:Class (default: the current version's family, which also reads --spec; "
    "graphsage for version 0).")]
Epochs = Annotated[int, _help("Training epochs.")]
BatchSize = Annotated[int, _help(
    "Examples per step, per worker (BPR triples for graphsage, predicted interactions for "
    "sequence).")]
MaxSteps = Annotated[int, _help(
    "Step budget: optimiser steps in all, so a bump's training steps are bounded whatever the "
    "graph's size (training ends within the epoch that spends it; 0: none).")]
EdgesPerEpoch = Annotated[int, _help(
    "Examples per epoch over all workers, drawn afresh each epoch (0: every edge).")]
WarmStart = Annotated[str, _help(
    "Start M_k from M_{k-1}: off, mean or metadata (how entities M_{k-1} did not know get their "
    "ID rows).")]
Lr = Annotated[float, _help("Learning rate.")]
IdOptimizer = Annotated[str, _help(
    "How row-sparse and sharded ID tables are stepped: adam (2 floats of state per table value) "
    "or rowwise_adagrad (one float per row: half a sharded worker's memory per owned row, with "
    "alignment targets).")]
IdLr = Annotated[float, _help(
    "Learning rate of those ID tables (0: --lr with adam, 0.01 with rowwise_adagrad, whose "
    "steps shrink as a row's gradients add up; RESULTS §10).")]
Lam = Annotated[float, _help("Weight of the alignment loss (lambda).")]
Holdout = Annotated[float, _help(
    "Replayed data sets: most recent fraction of the timeline held out for Recall@50 and the "
    "gate.")]
HoldoutDays = Annotated[float, _help(
    "Ingested data: most recent calendar days held out for Recall@50 and the gate.")]
MaxEvalUsers = Annotated[int, _help(
    "Held-out users drawn (by --seed) for Recall@50 and the gate, so an evaluation's time is "
    "bounded whatever the graph's size (0: every held-out user).")]
Targets = Annotated[str, _help(
    "Alignment targets: 'model' (run M_{k-1} on the training graph, by the workers together "
    "with --sharded) or 'stored' (the ver-(k-1) tables, which usually saw the held-out days: "
    "the gate then reads optimistically). A published parent's tables are always its "
    "targets; a parent whose model retention removed needs 'stored'.")]
Sharded = Annotated[bool, _help(
    "GraphSAGE at scale: each worker holds only its range of users' and items' edges, ID rows "
    "and alignment targets, and no process loads the edge list (jointly aligned methods and "
    "non-bc). Each worker asks Ray for the memory "
    "its share needs; a cluster that cannot place them all (after --placement-timeout, where "
    "an autoscaler was asked for them) is refused before any starts.",
    "--sharded")]
MaxAlignErrorRel = Annotated[float, _help(
    "Gate: max relative alignment error, of users and items together and each.")]
MinRecallVsParent = Annotated[float, _help(
    "Gate: min Recall@50 relative to the current version.")]
CheckpointEvery = Annotated[int, _help("Checkpoint every N epochs.")]
MaxFailures = Annotated[int, _help("Worker-group restarts allowed.")]
PlacementTimeout = Annotated[float, _help(
    "Seconds to wait, on a cluster that autoscales, for the nodes the workers need (asked of "
    "its autoscaler); without an autoscaler, or with 0, a bump its nodes cannot place is "
    "refused at once.")]
Seed = Annotated[int, _help("Random seed.")]
RunName = Annotated[Optional[str], _help(
    "Name of the run: its Ray Train folder and the version's run_name (default: train-<time>, "
    "sharded-<time> with --sharded; the scheduler passes its job id, to know the version its "
    "job made).")]
Address = Annotated[Optional[str], _help(
    "Ray address (default: RAY_ADDRESS or a local cluster).")]
FailOnReject = Annotated[bool, _help("Exit with status 3 when the gate rejects the candidate.")]


def train(
    store: StoreOption,
    method: Method = _job("method"),
    num_workers: NumWorkers = _job("num_workers"),
    use_gpu: UseGpu = _job("use_gpu"),
    cpus_per_worker: CpusPerWorker = _job("cpus_per_worker"),
    model: Model = _job("model"),
    spec: SpecOption = None,
    epochs: Epochs = TRAIN.epochs,
    batch_size: BatchSize = TRAIN.batch_size,
    max_steps: MaxSteps = TRAIN.max_steps,
    edges_per_epoch: EdgesPerEpoch = TRAIN.edges_per_epoch,
    warm_start: WarmStart = TRAIN.warm_start,
    lr: Lr = TRAIN.lr,
    id_optimizer: IdOptimizer = TRAIN.id_optimizer,
    id_lr: IdLr = TRAIN.id_lr,
    lam: Lam = TRAIN.lam,
    holdout: Holdout = _job("holdout"),
    holdout_days: HoldoutDays = _job("holdout_days"),
    max_eval_users: MaxEvalUsers = _job("max_eval_users"),
    targets: Targets = _job("targets"),
    sharded: Sharded = _job("sharded"),
    max_align_error_rel: MaxAlignErrorRel = GATE.max_align_error_rel,
    min_recall_vs_parent: MinRecallVsParent = GATE.min_recall_vs_parent,
    checkpoint_every: CheckpointEvery = _job("checkpoint_every"),
    max_failures: MaxFailures = _job("max_failures"),
    placement_timeout: PlacementTimeout = _job("placement_timeout_s"),
    seed: Seed = TRAIN.seed,
    run_name: RunName = None,
    address: Address = None,
    as_json: JsonOption = False,
    fail_on_reject: FailOnReject = True,
) -> None:
    """Train M_k jointly with B_k, score it on held-out edges, gate it, and publish it."""
    from bc_ray.cluster import connect
    from bc_ray.train.inputs import check_job, trained_before_published
    from bc_ray.train.job import run_training

    if model is not None:
        model_family(model)  # a usage error naming the choices, before the store is read
    job = TrainJobConfig(  # options that contradict each other are said first
        store=store, method=method, num_workers=num_workers, use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker, model=model,
        train=dataclasses.replace(TRAIN, epochs=epochs, batch_size=batch_size, lr=lr, lam=lam,
                                  seed=seed, max_steps=max_steps,
                                  edges_per_epoch=edges_per_epoch, warm_start=warm_start,
                                  id_optimizer=id_optimizer, id_lr=id_lr),
        holdout=holdout, holdout_days=holdout_days, max_eval_users=max_eval_users,
        targets=targets, sharded=sharded,
        gate=dataclasses.replace(GATE, max_align_error_rel=max_align_error_rel,
                                 min_recall_vs_parent=min_recall_vs_parent),
        checkpoint_every=checkpoint_every, max_failures=max_failures,
        placement_timeout_s=placement_timeout, run_name=run_name)
    state = _trainable_state(store)
    parent = state.version() if state.current_version is not None else None
    if job.model is None and parent is not None and parent.external:
        job = trained_before_published(job, state)  # its family reads --spec
    job = _with_spec(job, spec, parent)
    check_job(job, parent)  # what is said without a cluster is said before one starts
    connect(address)
    _report(run_training(job), as_json, fail_on_reject)


def _with_spec(job: TrainJobConfig, text: str | None, parent: VersionRecord | None
               ) -> TrainJobConfig:
    """The job with `--spec` read by the family it trains: --model's, else the current
    version's (GraphSAGE for version 0). Keys it does not name keep the spec the bump would
    train without it (the current version's, or the family's default)."""
    from bc_ray.core.family_base import parse_spec_onto
    from bc_ray.train.inputs import resolve_model

    if not text:
        return job
    chosen = resolve_model(job.model, parent)
    family = model_family(chosen)
    try:
        parsed = parse_spec_onto(family, text, _spec_without_option(job, chosen, parent, family))
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="--spec") from None
    return dataclasses.replace(job, model=chosen, spec=parsed)


def _spec_without_option(job: TrainJobConfig, chosen: str, parent: VersionRecord | None,
                         family) -> object | None:
    """The spec a bump of family `chosen` trains without --spec: one already chosen (after
    published embeddings, the newest trained version's), the current version's when it is of
    that family, else None (the family's default)."""
    if job.spec is not None and job.model == chosen:
        return job.spec
    if parent is not None and not parent.external and parent.family == chosen:
        return family.spec_from_dict(parent.spec)
    return None


def _trainable_state(store: str) -> StoreState:
    """The state of a store that holds a snapshot to train on."""
    state = open_store(store).written_state()
    state.snapshot()
    return state


def _report(outcome: TrainOutcome, as_json: bool, fail_on_reject: bool) -> None:
    """The outcome, and what helps where the gate rejected the candidate."""
    summary = {"version": outcome.version, "status": outcome.status, "reasons": outcome.reasons,
               **{k: v for k, v in outcome.metrics.items() if k != "param_checksums"}}
    emit(summary, as_json, key_values(summary))
    if outcome.status != "published":
        typer.echo(f"the gate rejected version {outcome.version} (the current version stays "
                   "served): train longer (--epochs, --max-steps), align harder (--lam), or, "
                   "where the gate is too strict for this data, loosen it "
                   "(--max-align-error-rel, --min-recall-vs-parent)", err=True)
        if fail_on_reject:
            raise typer.Exit(code=3)
