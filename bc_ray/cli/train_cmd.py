"""`bc-ray train`: a version bump on Ray Train (the same code `jobs/train.py` runs)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption
from bc_ray.cli.output import emit
from bc_ray.render import key_values


def train(
    store: StoreOption,
    method: Annotated[str, typer.Option(help="bc-aligner, joint-lin-sloss, joint-notrans, "
                                             "post-lin-sloss, post-lin-mloss, non-bc, "
                                             "finetune-m0, bc-aligner-orth, post-procrustes, "
                                             "post-lowrank.")] = "bc-aligner",
    num_workers: Annotated[int, typer.Option(help="Ray Train workers (DDP); 0 trains in the "
                                                  "driver process.")] = 2,
    use_gpu: Annotated[bool, typer.Option("--use-gpu", help="One GPU per worker (NCCL).")] = False,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs reserved per worker.")] = 1.0,
    spec: Annotated[Optional[str], typer.Option(
        help="Version spec, e.g. 'layers=3,hidden=320,out=128,agg=mean' (default: the current "
             "version's spec, or layers=2,hidden=64 for version 0).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Triples per step (per worker).")] = 4096,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-3,
    lam: Annotated[float, typer.Option(help="Weight of the alignment loss (lambda).")] = 16.0,
    holdout: Annotated[float, typer.Option(help="Replayed data sets: most recent fraction of the "
                                                "timeline held out for Recall@50 and the gate.")
                       ] = 0.05,
    holdout_days: Annotated[float, typer.Option(help="Ingested data: most recent calendar days "
                                                     "held out for Recall@50 and the gate.")
                            ] = 7.0,
    targets: Annotated[str, typer.Option(help="Alignment targets: 'model' (run M_{k-1} on the "
                                              "new graph) or 'stored' (ver-(k-1) table).")] = "model",
    max_align_error_rel: Annotated[float, typer.Option(help="Gate: max relative alignment "
                                                            "error.")] = 0.5,
    min_recall_vs_parent: Annotated[float, typer.Option(help="Gate: min Recall@50 relative to "
                                                             "the current version.")] = 0.8,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N epochs.")] = 5,
    max_failures: Annotated[int, typer.Option(help="Worker-group restarts allowed.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    address: Annotated[Optional[str], typer.Option(help="Ray address (default: RAY_ADDRESS or "
                                                        "a local cluster).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fail_on_reject: Annotated[bool, typer.Option(
        help="Exit with status 3 when the gate rejects the candidate.")] = True,
) -> None:
    """Train M_k jointly with B_k, score it on held-out edges, gate it, and publish it."""
    from bc_ray.cluster import connect
    from bc_ray.core.spec import VersionSpec
    from bc_ray.core.trainer import TrainConfig
    from bc_ray.train.config import DEFAULT_TRAIN, GateConfig, TrainJobConfig
    from bc_ray.train.job import run_training

    job = TrainJobConfig(
        store=store, method=method, num_workers=num_workers, use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker, spec=VersionSpec.parse(spec) if spec else None,
        train=TrainConfig(**{**vars(DEFAULT_TRAIN), "epochs": epochs, "batch_size": batch_size,
                             "lr": lr, "lam": lam, "seed": seed}),
        holdout=holdout, holdout_days=holdout_days, targets=targets,
        gate=GateConfig(max_align_error_rel=max_align_error_rel,
                        min_recall_vs_parent=min_recall_vs_parent),
        checkpoint_every=checkpoint_every, max_failures=max_failures)
    connect(address)
    outcome = run_training(job)
    summary = {"version": outcome.version, "status": outcome.status, "reasons": outcome.reasons,
               **{k: v for k, v in outcome.metrics.items() if k != "param_checksums"}}
    emit(summary, as_json, key_values(summary))
    if outcome.status != "published" and fail_on_reject:
        raise typer.Exit(code=3)
