"""The paper's benchmark protocol (method.md), for any snapshot and any set of methods.

Versions are trained at t = 0.5, 0.6, ..., 0.9 with growing models; M_k is evaluated on the next
period. All methods share M_0. Consumers are trained once per task on ver-0 embeddings; at version
k each method's ver-0 compatible embeddings z~_0 are fed to them. Keep-All is the reference: its
intended metric is a freshly trained M_k (Non-BC's) and its unintended one is M_0 run on the
current graph (the true z_0).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bc_ray.core.consumers import (
    TASKS,
    ConsumerConfig,
    ConsumerMLP,
    examples,
    item_rating_median,
    train_consumer,
)
from bc_ray.core.evaluation import alignment_error, recall_at_k
from bc_ray.core.methods import Method, get_method
from bc_ray.core.spec import VersionSpec
from bc_ray.core.splits import PeriodSplit, period_split
from bc_ray.core.trainer import TrainConfig, TrainResult
from bc_ray.core.transforms import TransformChain
from bc_ray.core.version import PreviousVersion, VersionOutcome, finish_version, split_evaluator, train_version
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import paper_times

DEFAULT_METHODS = ("non-bc", "post-lin-sloss", "post-lin-mloss", "joint-notrans",
                   "joint-lin-sloss", "bc-aligner", "fix-m0", "finetune-m0", "post-procrustes",
                   "post-lowrank", "bc-aligner-orth")


@dataclass(frozen=True)
class Preset:
    name: str
    spec: VersionSpec
    width_step: int
    train: TrainConfig
    consumer: ConsumerConfig
    start: float = 0.5
    step: float = 0.1
    versions: int = 5

    def spec_at(self, version: int) -> VersionSpec:
        return self.spec.grown(version, width_step=self.width_step)


PRESETS = {
    # The paper's configuration: 2 -> 3 layers, hidden 256 (+64 per version), 500 epochs.
    "full": Preset("full", VersionSpec(num_layers=2, hidden_dim=256), 64,
                   TrainConfig(epochs=500, batch_size=2048, eval_every=10, warmup_epochs=50),
                   ConsumerConfig(hidden_dims=(128, 256, 512, 1024), dropouts=(0.0, 0.25, 0.5),
                                  epochs=300, patience=30)),
    # A few minutes on 2 CPU cores: the same protocol with small, short-trained models.
    "quick": Preset("quick", VersionSpec(num_layers=2, hidden_dim=32), 16,
                    TrainConfig(epochs=20, batch_size=4096, lr=3e-3, eval_every=4,
                                warmup_epochs=8, posthoc_epochs=60),
                    ConsumerConfig(hidden_dims=(128,), dropouts=(0.25,), epochs=60, patience=10)),
}


@dataclass
class SeedContext:
    """What every method shares within one seed."""

    splits: list[PeriodSplit]
    config: TrainConfig
    model0: object
    keep_all_z0: list[tuple[torch.Tensor, torch.Tensor]]
    consumers: dict[str, ConsumerMLP]
    fresh: dict[int, VersionOutcome] = field(default_factory=dict)


def test_recall(split: PeriodSplit, z_user: torch.Tensor, z_item: torch.Tensor) -> float:
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    return recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                       users=split.test_users, item_pool=split.item_pool)


def consumer_aucs(ctx: SeedContext, version: int, z_user: torch.Tensor,
                  z_item: torch.Tensor) -> dict[str, float]:
    split, median = ctx.splits[version], item_rating_median(ctx.splits[0])
    out = {}
    for task, consumer in ctx.consumers.items():
        data = examples(task, split, "eval", median)
        out[task] = consumer.auc(data.inputs(z_user, z_item), data.labels)
    return out


def _train_consumers(splits: list[PeriodSplit], z0: list, config: ConsumerConfig) -> dict:
    """Train on period 0 with ver-0 embeddings; early-stop on the next phase (as the reference:
    period 0's evaluation edges for item/edge tasks, period 1 for user tasks)."""
    median = item_rating_median(splits[0])
    consumers = {}
    for task in TASKS:
        user_task = task.startswith("user")
        train = examples(task, splits[0], "eval" if user_task else "train", median)
        val_version = 1 if user_task else 0
        val = examples(task, splits[val_version], "eval", median)
        consumers[task] = train_consumer(train.inputs(*z0[0]), train.labels,
                                         val.inputs(*z0[val_version]), val.labels, config)
    return consumers


def _evaluator(split: PeriodSplit):
    return lambda targets: split_evaluator(split, targets)


def prepare_seed(snapshot: GraphSnapshot, preset: Preset, seed: int) -> SeedContext:
    times = paper_times(preset.start, preset.step, preset.versions)
    splits = [period_split(snapshot, times[k], times[k + 1], seed=seed)
              for k in range(preset.versions)]
    config = dataclasses.replace(preset.train, seed=seed)
    first = train_version(get_method("non-bc"), preset.spec_at(0), splits[0].graph, config, None,
                          _evaluator(splits[0]), item_pool=splits[0].item_pool)
    z0 = [first.model.embed(split.graph) for split in splits]
    consumers = _train_consumers(splits, z0, dataclasses.replace(preset.consumer, seed=seed))
    return SeedContext(splits, config, first.model, z0, consumers, fresh={0: first})


def fresh_outcome(ctx: SeedContext, preset: Preset, version: int) -> VersionOutcome:
    """Non-BC's M_k (trained once per seed, reused by the post-hoc methods and Keep-All)."""
    if version not in ctx.fresh:
        split = ctx.splits[version]
        ctx.fresh[version] = train_version(get_method("non-bc"), preset.spec_at(version),
                                           split.graph, ctx.config, None, _evaluator(split),
                                           item_pool=split.item_pool)
    return ctx.fresh[version]


def run_method(ctx: SeedContext, preset: Preset, method: Method) -> list[dict]:
    """One lineage: versions 1..K-1 of `method`, each scored on its own next period."""
    spec0 = preset.spec_at(0)
    chain = TransformChain([spec0.output_dim])
    previous = PreviousVersion(0, spec0, chain.amplifiers(), model=ctx.model0)
    rows = [_score(ctx, method, 0, *ctx.keep_all_z0[0], chain, 0.0, 0)]
    for version in range(1, preset.versions):
        split = ctx.splits[version]
        spec = spec0 if method.model in ("finetune", "fixed") else preset.spec_at(version)
        started = time.perf_counter()
        if method.model == "fresh" and not method.joint:
            fresh = fresh_outcome(ctx, preset, version)
            outcome = finish_version(method, fresh.result or TrainResult(fresh.model, None),
                                     split.graph, ctx.config, previous)
        else:
            outcome = train_version(method, spec, split.graph, ctx.config, previous,
                                    _evaluator(split), item_pool=split.item_pool)
        seconds = time.perf_counter() - started
        chain.append(outcome.transform, spec.output_dim)
        z_user, z_item = outcome.model.embed(split.graph)
        epoch = outcome.result.selected_epoch if outcome.result else 0
        stopped = outcome.result.stopped_epoch if outcome.result else 0
        rows.append({**_score(ctx, method, version, z_user, z_item, chain, seconds, epoch),
                     "stopped_epoch": stopped})
        previous = PreviousVersion(version, spec, chain.amplifiers(), model=outcome.model)
    return rows


def _score(ctx: SeedContext, method: Method, version: int, z_user, z_item,
           chain: TransformChain, seconds: float, epoch: int) -> dict:
    split = ctx.splits[version]
    zt_user, zt_item = chain.apply(z_user, 0), chain.apply(z_item, 0)
    true_user, true_item = ctx.keep_all_z0[version]
    pool = split.node_pool
    error = alignment_error(torch.cat([zt_user, zt_item])[pool],
                            torch.cat([true_user, true_item])[pool])
    return {"method": method.name, "version": version, "recall": test_recall(split, z_user, z_item),
            "auc": consumer_aucs(ctx, version, zt_user, zt_item), "align_error": error,
            "train_seconds": seconds, "selected_epoch": epoch}


def keep_all_rows(ctx: SeedContext, preset: Preset) -> list[dict]:
    rows = []
    for version in range(preset.versions):
        fresh = fresh_outcome(ctx, preset, version)
        split = ctx.splits[version]
        z_user, z_item = fresh.model.embed(split.graph)
        result = fresh.result
        rows.append({"method": "keep-all", "version": version,
                     "recall": test_recall(split, z_user, z_item),
                     "auc": consumer_aucs(ctx, version, *ctx.keep_all_z0[version]),
                     "align_error": 0.0,
                     "selected_epoch": result.selected_epoch if result else 0,
                     "stopped_epoch": result.stopped_epoch if result else 0})
    return rows


def run_benchmark(snapshot: GraphSnapshot, methods: list[str], seeds: int, preset: Preset,
                  progress: Callable[[str], None] = lambda _msg: None,
                  first_seed: int = 0) -> dict:
    """Seeds `first_seed` .. `first_seed + seeds - 1`: separate runs on disjoint seeds merge
    (`bc_ray.experiments.seeds.merge`), so seeds can run as separate processes."""
    chosen = [get_method(name) for name in methods]
    runs = []
    for seed in range(first_seed, first_seed + seeds):
        progress(f"seed {seed}: version 0, consumers")
        ctx = prepare_seed(snapshot, preset, seed)
        for row in keep_all_rows(ctx, preset):
            runs.append({"seed": seed, **row})
        for method in chosen:
            if method.name == "keep-all":
                continue
            progress(f"seed {seed}: {method.title}")
            runs += [{"seed": seed, **row} for row in run_method(ctx, preset, method)]
    return {"dataset": snapshot.meta.name, "preset": preset.name, "seeds": seeds,
            "times": paper_times(preset.start, preset.step, preset.versions),
            "methods": [m.name for m in chosen], "tasks": list(TASKS), "runs": runs}
