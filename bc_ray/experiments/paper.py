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
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from bc_ray.core.consumers import (
    TASKS,
    ConsumerConfig,
    ConsumerMLP,
    examples,
    item_rating_median,
    train_consumer,
)
from bc_ray.core.evaluation import alignment_error, degradation_pct, recall_at_k
from bc_ray.core.methods import Method, get_method
from bc_ray.core.family import ModelFamily, ModelSpec
from bc_ray.core.registry import family_of, get_family
from bc_ray.core.splits import PeriodSplit, period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import TrainResult
from bc_ray.core.transforms import TransformChain
from bc_ray.core.version import (
    PreviousVersion,
    VersionOutcome,
    finish_version,
    split_evaluator,
    train_version,
)
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import paper_times
from bc_ray.exceptions import ConfigError

DEFAULT_METHODS = ("non-bc", "post-lin-sloss", "post-lin-mloss", "joint-notrans",
                   "joint-lin-sloss", "bc-aligner", "fix-m0", "finetune-m0", "post-procrustes",
                   "post-lowrank", "bc-aligner-orth")


VALIDATIONS = ("paper", "recent-past")


@dataclass(frozen=True)
class Preset:
    name: str
    spec: ModelSpec  # version 0's; the family it names trains every version
    width_step: int
    train: TrainConfig
    consumer: ConsumerConfig
    start: float = 0.5
    step: float = 0.1
    versions: int = 5
    # Where models are selected (and stopped early): "paper" = half of the next period's users
    # (the reference's protocol; the test uses the other half of the same period);
    # "recent-past" = version k trains on the edges before t_k - `validation_window` and is
    # validated on the window itself, so nothing of the test period (t_k, t_k+1] is ever seen.
    validation: str = "paper"
    validation_window: float = 0.05
    # lambda for the jointly trained methods, chosen per method and seed on validation data.
    lam_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.validation not in VALIDATIONS:
            raise ConfigError(f"validation {self.validation!r} is not one of {VALIDATIONS}")
        if self.lam_grid and self.validation == "paper":
            raise ConfigError("a lambda grid is chosen on recent-past validation windows; the "
                              "paper's protocol has none apart from the test period")

    @property
    def family(self) -> ModelFamily:
        return family_of(self.spec)

    def spec_at(self, version: int) -> ModelSpec:
        return self.family.grown(self.spec, version, self.width_step)

    def with_model(self, model: str, spec: str | None = None) -> Preset:
        """The same protocol with another family's model: `spec` (its --spec text) or, for
        another family, its default spec."""
        family = get_family(model)
        if spec is not None:
            return dataclasses.replace(self, spec=family.parse_spec(spec))
        if family is self.family:
            return self
        return dataclasses.replace(self, spec=family.default_spec())


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
    # Every model trained until its validation Recall@50 stops improving (patience 6
    # evaluations, at most 300 epochs), validated on the recent past, lambda from a grid.
    "converged": Preset("converged", VersionSpec(num_layers=2, hidden_dim=32), 16,
                        TrainConfig(epochs=300, batch_size=4096, lr=3e-3, eval_every=2,
                                    warmup_epochs=8, patience=6, posthoc_epochs=60),
                        ConsumerConfig(hidden_dims=(128,), dropouts=(0.25,), epochs=100,
                                       patience=10),
                        validation="recent-past", lam_grid=(1.0, 4.0, 16.0, 64.0)),
}


@dataclass
class SeedContext:
    """What every method shares within one seed."""

    splits: list[PeriodSplit]  # version k's test: the period (t_k, t_k+1]
    train_splits: list[PeriodSplit]  # what version k trains and is validated on
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


def _evaluator(split: PeriodSplit, preset: Preset):
    users = None if preset.validation == "paper" else validation_users(split)
    return lambda targets: split_evaluator(split, targets, users=users)


def validation_users(split: PeriodSplit) -> torch.Tensor:
    return torch.unique(split.eval_pairs[0])


def training_split(snapshot: GraphSnapshot, preset: Preset, time: float, test: PeriodSplit,
                   seed: int) -> PeriodSplit:
    if preset.validation == "paper":
        return test
    return period_split(snapshot, time - preset.validation_window, time, seed=seed)


def prepare_seed(snapshot: GraphSnapshot, preset: Preset, seed: int) -> SeedContext:
    times = paper_times(preset.start, preset.step, preset.versions)
    splits = [period_split(snapshot, times[k], times[k + 1], seed=seed)
              for k in range(preset.versions)]
    train_splits = [training_split(snapshot, preset, times[k], splits[k], seed)
                    for k in range(preset.versions)]
    config = dataclasses.replace(preset.train, seed=seed)
    first = train_version(get_method("non-bc"), preset.spec_at(0), train_splits[0].graph, config,
                          None, _evaluator(train_splits[0], preset),
                          item_pool=train_splits[0].item_pool)
    z0 = [first.model.embed(split.graph) for split in splits]
    consumers = _train_consumers(splits, z0, dataclasses.replace(preset.consumer, seed=seed))
    return SeedContext(splits, train_splits, config, first.model, z0, consumers,
                       fresh={0: first})


def fresh_outcome(ctx: SeedContext, preset: Preset, version: int) -> VersionOutcome:
    """Non-BC's M_k (trained once per seed, reused by the post-hoc methods and Keep-All)."""
    if version not in ctx.fresh:
        train = ctx.train_splits[version]
        ctx.fresh[version] = train_version(get_method("non-bc"), preset.spec_at(version),
                                           train.graph, ctx.config, None,
                                           _evaluator(train, preset), item_pool=train.item_pool)
    return ctx.fresh[version]


def run_method(ctx: SeedContext, preset: Preset, method: Method,
               config: TrainConfig | None = None) -> list[dict]:
    """One lineage: versions 1..K-1 of `method`, each trained (and validated) on its training
    split and scored on its own next period."""
    config = config or ctx.config
    spec0 = preset.spec_at(0)
    chain = TransformChain([spec0.output_dim])
    previous = PreviousVersion(0, spec0, chain.amplifiers(), model=ctx.model0)
    rows = [_score(ctx, method, 0, *ctx.keep_all_z0[0], chain, 0.0, 0)]
    for version in range(1, preset.versions):
        split, train = ctx.splits[version], ctx.train_splits[version]
        spec = spec0 if method.model in ("finetune", "fixed") else preset.spec_at(version)
        started = time.perf_counter()
        if method.model == "fresh" and not method.joint:
            fresh = fresh_outcome(ctx, preset, version)
            outcome = finish_version(method, fresh.result or TrainResult(fresh.model, None),
                                     split.graph, config, previous)
        else:
            outcome = train_version(method, spec, train.graph, config, previous,
                                    _evaluator(train, preset), item_pool=train.item_pool)
        seconds = time.perf_counter() - started
        chain.append(outcome.transform, spec.output_dim)
        z_user, z_item = outcome.model.embed(split.graph)
        epoch = outcome.result.selected_epoch if outcome.result else 0
        stopped = outcome.result.stopped_epoch if outcome.result else 0
        rows.append({**_score(ctx, method, version, z_user, z_item, chain, seconds, epoch),
                     "stopped_epoch": stopped,
                     **_validation_score(ctx, preset, version, outcome.model, chain)})
        previous = PreviousVersion(version, spec, chain.amplifiers(), model=outcome.model)
    return rows


def _validation_score(ctx: SeedContext, preset: Preset, version: int, model,
                      chain: TransformChain | None) -> dict:
    """The same metrics on the training split's held-out window (recent-past validation only):
    what lambda is chosen by, never the test period."""
    if preset.validation == "paper":
        return {}
    train = ctx.train_splits[version]
    z_user, z_item = model.embed(train.graph)
    eval_user, eval_item = train.eval_pairs
    known_user, known_item = train.train_pairs
    recall = recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                         users=validation_users(train), item_pool=train.item_pool)
    if chain is not None:
        z_user, z_item = chain.apply(z_user, 0), chain.apply(z_item, 0)
    else:  # Keep-All: consumers read the true ver-0 embeddings
        z_user, z_item = ctx.model0.embed(train.graph)
    median = item_rating_median(ctx.splits[0])
    aucs = {}
    for task, consumer in ctx.consumers.items():
        data = examples(task, train, "eval", median)
        aucs[task] = consumer.auc(data.inputs(z_user, z_item), data.labels)
    return {"val_recall": recall, "val_auc": aucs}


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
                     "stopped_epoch": result.stopped_epoch if result else 0,
                     **_validation_score(ctx, preset, version, fresh.model, None)})
    return rows


def run_benchmark(snapshot: GraphSnapshot, methods: list[str], seeds: int, preset: Preset,
                  progress: Callable[[str], None] = lambda _msg: None,
                  first_seed: int = 0, lam_chosen: Mapping[str, float] | None = None) -> dict:
    """Seeds `first_seed` .. `first_seed + seeds - 1`: separate runs on disjoint seeds merge
    (`bc_ray.experiments.seeds.merge`), so seeds can run as separate processes.

    `lam_chosen` (method -> lambda, from `chosen_lambdas` of an earlier run's validation) skips
    the grid for those methods: the grid is most of a converged seed's cost."""
    chosen = [get_method(name) for name in methods]
    lam_chosen = dict(lam_chosen or {})
    runs, grid = [], []
    for seed in range(first_seed, first_seed + seeds):
        progress(f"seed {seed}: version 0, consumers")
        ctx = prepare_seed(snapshot, preset, seed)
        keep_rows = keep_all_rows(ctx, preset)
        runs += [{"seed": seed, **row} for row in keep_rows]
        for method in chosen:
            if method.name == "keep-all":
                continue
            progress(f"seed {seed}: {method.title}")
            if not (method.joint and preset.lam_grid):
                runs += [{"seed": seed, **row} for row in run_method(ctx, preset, method)]
                continue
            if method.name in lam_chosen:
                lam = lam_chosen[method.name]
                progress(f"seed {seed}: {method.title}, lambda {lam:g} (chosen earlier)")
                rows = run_method(ctx, preset, method, dataclasses.replace(ctx.config, lam=lam))
                grid.append({"seed": seed, "method": method.name, "chosen": lam,
                             "validation_sum": {}, "chosen_earlier": True})
                runs += [{"seed": seed, "lam": lam, **row} for row in rows]
                continue
            by_lam = {}
            for lam in preset.lam_grid:
                progress(f"seed {seed}: {method.title}, lambda {lam:g}")
                rows = run_method(ctx, preset, method, dataclasses.replace(ctx.config, lam=lam))
                by_lam[lam] = (validation_sum(rows, keep_rows), rows)
            best = max(by_lam, key=lambda lam: by_lam[lam][0])
            grid.append({"seed": seed, "method": method.name, "chosen": best,
                         "validation_sum": {str(lam): score for lam, (score, _) in
                                            by_lam.items()}})
            runs += [{"seed": seed, "lam": best, **row} for row in by_lam[best][1]]
    return {"dataset": snapshot.meta.name, "preset": preset.name, "seeds": seeds,
            "times": paper_times(preset.start, preset.step, preset.versions),
            "validation": preset.validation, "lam_grid": grid,
            "lam_values": list(preset.lam_grid),
            "methods": [m.name for m in chosen], "tasks": list(TASKS), "runs": runs}


def chosen_lambdas(results: dict) -> dict[str, float]:
    """Per method, the lambda an earlier run chose on validation data (the most frequent over
    its seeds; a tie goes to the best mean validation sum)."""
    by_method: dict[str, list[dict]] = {}
    for entry in results.get("lam_grid", []):
        if entry.get("validation_sum"):
            by_method.setdefault(entry["method"], []).append(entry)
    if not by_method:
        raise ConfigError("that run chose no lambda (it has no lambda grid on validation data)")
    out = {}
    for method, entries in by_method.items():
        votes = Counter(float(entry["chosen"]) for entry in entries)
        mean_score = {lam: np.mean([e["validation_sum"][str(lam)] for e in entries
                                    if str(lam) in e["validation_sum"]]) for lam in votes}
        out[method] = max(votes, key=lambda lam: (votes[lam], mean_score[lam]))
    return out


def validation_sum(rows: list[dict], keep_rows: list[dict]) -> float:
    """Intended + unintended degradation against Keep-All on the validation windows, averaged
    over versions 1..K-1 (higher is better), the criterion lambda is chosen by."""
    reference = {row["version"]: row for row in keep_rows}
    sums = []
    for row in rows:
        if row["version"] == 0:
            continue
        keep = reference[row["version"]]
        intended = degradation_pct(row["val_recall"], keep["val_recall"])
        unintended = float(np.mean([degradation_pct(row["val_auc"][t], keep["val_auc"][t])
                                    for t in row["val_auc"]]))
        sums.append(intended + unintended)
    return float(np.mean(sums))
