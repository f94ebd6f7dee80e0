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
from bc_ray.core.registry import DEFAULT_FAMILY
from bc_ray.exceptions import ConfigError
from bc_ray.render import key_values
from bc_ray.train.config import TrainJobConfig

if TYPE_CHECKING:
    from bc_ray.train.runs import TrainOutcome

# What a training job takes for an option not given: the options' defaults are these.
TRAIN = default_of(TrainJobConfig, "train")
GATE = default_of(TrainJobConfig, "gate")


def _job(name: str):
    return default_of(TrainJobConfig, name)


def train(
    store: StoreOption,
    method: Annotated[str, typer.Option(help="bc-aligner, joint-lin-sloss, joint-notrans, "
                                             "post-lin-sloss, post-lin-mloss, non-bc, "
                                             "finetune-m0, bc-aligner-orth, bc-aligner-refit "
                                             "(BC-Aligner, then B_k refitted by least squares "
                                             "on the final M_k), post-procrustes, "
                                             "post-lowrank.")] = _job("method"),
    num_workers: Annotated[int, typer.Option(help="Ray Train workers (DDP); 0 trains in the "
                                                  "driver process.")] = _job("num_workers"),
    use_gpu: Annotated[bool, typer.Option("--use-gpu", help="One GPU per worker (NCCL).")
                       ] = _job("use_gpu"),
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs reserved per worker.")
                               ] = _job("cpus_per_worker"),
    model: Annotated[Optional[str], typer.Option(
        help="Model family: graphsage, sequence, the name of a bc_ray.models entry point, or "
             "package.module:Class (default: the current version's family; graphsage for "
             "version 0 or with --spec alone).")] = _job("model"),
    spec: SpecOption = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TRAIN.epochs,
    batch_size: Annotated[int, typer.Option(help="Examples per step, per worker (BPR triples "
                                                 "for graphsage, predicted interactions for "
                                                 "sequence).")
                          ] = TRAIN.batch_size,
    max_steps: Annotated[int, typer.Option(
        help="Step budget: optimiser steps in all, so a bump's training steps are bounded "
             "whatever the graph's size (training ends within the epoch that spends it; 0: "
             "none).")
                         ] = TRAIN.max_steps,
    edges_per_epoch: Annotated[int, typer.Option(
        help="Examples per epoch over all workers, drawn afresh each epoch (0: every edge).")
                               ] = TRAIN.edges_per_epoch,
    warm_start: Annotated[str, typer.Option(
        help="Start M_k from M_{k-1}: off, mean or metadata (how entities M_{k-1} did not know "
             "get their ID rows).")] = TRAIN.warm_start,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = TRAIN.lr,
    id_optimizer: Annotated[str, typer.Option(
        help="How row-sparse and sharded ID tables are stepped: adam (2 floats of state per "
             "table value) or rowwise_adagrad (one float per row: half a sharded worker's "
             "memory per owned row, with stored targets).")] = TRAIN.id_optimizer,
    id_lr: Annotated[float, typer.Option(
        help="Learning rate of those ID tables (0: --lr with adam, 0.01 with rowwise_adagrad, "
             "whose steps shrink as a row's gradients add up; RESULTS §10).")
                     ] = TRAIN.id_lr,
    lam: Annotated[float, typer.Option(help="Weight of the alignment loss (lambda).")
                   ] = TRAIN.lam,
    holdout: Annotated[float, typer.Option(help="Replayed data sets: most recent fraction of the "
                                                "timeline held out for Recall@50 and the gate.")
                       ] = _job("holdout"),
    holdout_days: Annotated[float, typer.Option(help="Ingested data: most recent calendar days "
                                                     "held out for Recall@50 and the gate.")
                            ] = _job("holdout_days"),
    max_eval_users: Annotated[int, typer.Option(
        help="Held-out users drawn (by --seed) for Recall@50 and the gate, so an evaluation's "
             "time is bounded whatever the graph's size (0: every held-out user).")
                              ] = _job("max_eval_users"),
    targets: Annotated[str, typer.Option(help="Alignment targets: 'model' (run M_{k-1} on the "
                                              "new graph) or 'stored' (ver-(k-1) table).")
                       ] = _job("targets"),
    sharded: Annotated[bool, typer.Option(
        "--sharded", help="GraphSAGE at scale: each worker holds only its range of users' and "
                          "items' edges, ID rows and alignment targets, and no process loads "
                          "the edge list (after version 0 it needs --targets stored; "
                          "jointly aligned methods and non-bc). Each worker asks Ray for the "
                          "memory its share needs; a cluster that cannot place them all is "
                          "refused before any starts.")] = _job("sharded"),
    max_align_error_rel: Annotated[float, typer.Option(help="Gate: max relative alignment "
                                                            "error.")
                                   ] = GATE.max_align_error_rel,
    min_recall_vs_parent: Annotated[float, typer.Option(help="Gate: min Recall@50 relative to "
                                                             "the current version.")
                                    ] = GATE.min_recall_vs_parent,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N epochs.")
                                ] = _job("checkpoint_every"),
    max_failures: Annotated[int, typer.Option(help="Worker-group restarts allowed.")
                            ] = _job("max_failures"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = TRAIN.seed,
    address: Annotated[Optional[str], typer.Option(help="Ray address (default: RAY_ADDRESS or "
                                                        "a local cluster).")] = None,
    as_json: JsonOption = False,
    fail_on_reject: Annotated[bool, typer.Option(
        help="Exit with status 3 when the gate rejects the candidate.")] = True,
) -> None:
    """Train M_k jointly with B_k, score it on held-out edges, gate it, and publish it."""
    from bc_ray.cluster import connect
    from bc_ray.train.inputs import resolve_method
    from bc_ray.train.job import run_training

    if spec and model is None:  # a spec is read by its family: without --model, GraphSAGE's
        model = DEFAULT_FAMILY
    family = model_family(model)
    try:
        parsed = family.parse_spec(spec) if spec else None
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="--spec") from None
    job = TrainJobConfig(
        store=store, method=method, num_workers=num_workers, use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker, model=model, spec=parsed,
        train=dataclasses.replace(TRAIN, epochs=epochs, batch_size=batch_size, lr=lr, lam=lam,
                                  seed=seed, max_steps=max_steps,
                                  edges_per_epoch=edges_per_epoch, warm_start=warm_start,
                                  id_optimizer=id_optimizer, id_lr=id_lr),
        holdout=holdout, holdout_days=holdout_days, max_eval_users=max_eval_users,
        targets=targets, sharded=sharded,
        gate=dataclasses.replace(GATE, max_align_error_rel=max_align_error_rel,
                                 min_recall_vs_parent=min_recall_vs_parent),
        checkpoint_every=checkpoint_every, max_failures=max_failures)
    resolve_method(method)  # what is said without a cluster is said before one starts
    open_store(store).written_state().snapshot()
    connect(address)
    _report(run_training(job), as_json, fail_on_reject)


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
