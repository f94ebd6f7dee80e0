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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from bc_ray.chain import compose_path
from bc_ray.core.consumers import (
    TASKS,
    ConsumerConfig,
    ConsumerMLP,
    examples,
    item_rating_median,
    train_consumer,
)
from bc_ray.core.embedded import embedded
from bc_ray.core.evaluation import alignment_error, recall_at_k
from bc_ray.core.family import EmbeddingModule, ModelFamily, ModelSpec
from bc_ray.core.family_base import parse_spec_onto
from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.methods import Method, get_method
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
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import edges_until, paper_times
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.spec import VersionSpec

DEFAULT_METHODS = ("non-bc", "post-lin-sloss", "post-lin-mloss", "joint-notrans",
                   "joint-lin-sloss", "bc-aligner", "fix-m0", "finetune-m0", "post-procrustes",
                   "post-lowrank", "bc-aligner-orth", "popularity", "bpr-mf", "counts")


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
    # Recent-past validation holds the newest edges out of training. With `refit`, the selected
    # setting (its epoch count, its lambda) is trained again from scratch on every edge before
    # t_k (BPR-MF too). Off in every preset: a refit is a new random draw of the training run
    # that keeps none of what the selection found, and on MovieLens 100K it cost Keep-All more
    # than the window's edges gave (RESULTS §1). Kept so benchmarks/bench_recipe.py can show it.
    refit: bool = False
    # lambda for the jointly trained methods, chosen per method (per seed, or on one seed and
    # reused with --lam-from) by LAM_RULE on version 1's validation window.
    lam_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.validation not in VALIDATIONS:
            raise ConfigError(f"validation {self.validation!r} is not one of {VALIDATIONS}")
        if self.lam_grid and self.validation == "paper":
            raise ConfigError("a lambda grid is chosen on recent-past validation windows; the "
                              "paper's protocol has none apart from the test period")
        if self.refit and self.validation == "paper":
            raise ConfigError("refit trains again on the validation window's edges; the "
                              "paper's protocol validates on the test period and has none")

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
            base = self.spec if family is self.family else None
            return dataclasses.replace(self, spec=parse_spec_onto(family, spec, base))
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
    consumer_config: ConsumerConfig
    # What version k's final fit trains on (a refit, BPR-MF's too; a post-hoc B_k): with
    # recent-past validation every edge up to t_k and none later; with the paper's protocol its
    # training split (which holds the non-last edges of the test period's new users).
    known: list[GraphTensors]
    # M_0, its embeddings at every version (the true ver-0 view) and the consumers trained on
    # them: `prepare_seed` fills these, `prepare_splits` leaves them out.
    model0: EmbeddingModule | None = None
    keep_all_z0: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    consumers: dict[str, ConsumerMLP] = field(default_factory=dict)
    fresh: dict[int, VersionOutcome] = field(default_factory=dict)
    # Non-BC's M_k as selected on the validation window (before any refit): what Keep-All's
    # validation scores are computed with.
    fresh_selected: dict[int, VersionOutcome] = field(default_factory=dict)


def test_recall(split: PeriodSplit, z_user: torch.Tensor, z_item: torch.Tensor,
                users: torch.Tensor | None = None) -> float:
    """Recall@50 on the period's test users (or those of `users` among them)."""
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    test_users = split.test_users
    if users is not None:
        test_users = test_users[torch.isin(test_users, users)]
    return recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                       users=test_users, item_pool=split.item_pool)


def test_recalls(split: PeriodSplit, z_user: torch.Tensor, z_item: torch.Tensor) -> dict:
    """A row's test Recall@50, overall and apart for users seen before the period and users
    first seen in it (whom a model with a vector per entity cannot have learnt: cold start)."""
    new = split.new_users
    existing = torch.from_numpy(np.setdiff1d(split.test_users.numpy(), new.numpy()))
    return {"recall": test_recall(split, z_user, z_item),
            "recall_existing": test_recall(split, z_user, z_item, existing),
            "recall_new": test_recall(split, z_user, z_item, new)}


def consumer_aucs(ctx: SeedContext, version: int, z_user: torch.Tensor,
                  z_item: torch.Tensor) -> dict[str, float]:
    return task_aucs(ctx.consumers, ctx.splits[version], item_rating_median(ctx.splits[0]),
                     z_user, z_item)


def task_aucs(consumers: Mapping[str, ConsumerMLP], split: PeriodSplit, median: float,
              z_user: torch.Tensor, z_item: torch.Tensor) -> dict[str, float]:
    """Each consumer's AUC on the split's period, fed these inputs."""
    out = {}
    for task, consumer in consumers.items():
        data = examples(task, split, "eval", median)
        out[task] = consumer.auc(data.inputs(z_user, z_item), data.labels)
    return out


CONSUMER_HOLDOUT = 0.2  # of period 0's users: the user-task consumers' own validation slice


def train_consumers(split0: PeriodSplit, z0: tuple[torch.Tensor, torch.Tensor],
                    config: ConsumerConfig) -> dict[str, ConsumerMLP]:
    """Train on period 0 with ver-0 embeddings and early-stop on data before version 1's test
    period: item and edge tasks on period 0's evaluation edges (trained on what is known at t_0),
    user tasks on a held-out 20 % of period 0's users (their labels *are* period 0's activity,
    so the rest train). The reference stopped user tasks on period 1, where version 1 is scored."""
    median = item_rating_median(split0)
    consumers = {}
    for task in TASKS:
        if task.startswith("user"):
            data = examples(task, split0, "eval", median)
            held = user_holdout(data.rows.numel(), config.seed)
            inputs = data.inputs(*z0)
            consumers[task] = train_consumer(inputs[~held], data.labels[~held], inputs[held],
                                             data.labels[held], config)
            continue
        train = examples(task, split0, "train", median)
        val = examples(task, split0, "eval", median)
        consumers[task] = train_consumer(train.inputs(*z0), train.labels, val.inputs(*z0),
                                         val.labels, config)
    return consumers


def user_holdout(count: int, seed: int) -> torch.Tensor:
    """A seeded mask of `CONSUMER_HOLDOUT` of `count` rows."""
    return torch.from_numpy(np.random.default_rng(seed).random(count) < CONSUMER_HOLDOUT)


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


def prepare_splits(snapshot: GraphSnapshot, preset: Preset, seed: int) -> SeedContext:
    """One seed's periods, training windows and known graphs, before any model is trained."""
    times = paper_times(preset.start, preset.step, preset.versions)
    splits = [period_split(snapshot, times[k], times[k + 1], seed=seed)
              for k in range(preset.versions)]
    train_splits = [training_split(snapshot, preset, times[k], splits[k], seed)
                    for k in range(preset.versions)]
    known = [split.graph if preset.validation == "paper" else
             build_graph(snapshot, edges_until(snapshot, split.start), now=split.start)
             for split in splits]
    return SeedContext(splits, train_splits, dataclasses.replace(preset.train, seed=seed),
                       dataclasses.replace(preset.consumer, seed=seed), known)


def prepare_seed(snapshot: GraphSnapshot, preset: Preset, seed: int) -> SeedContext:
    """`prepare_splits` plus M_0, its ver-0 embeddings at every version and the consumers."""
    ctx = prepare_splits(snapshot, preset, seed)
    ctx.model0 = fresh_outcome(ctx, preset, 0).model
    ctx.keep_all_z0 = [embedded(ctx.model0, split.graph) for split in ctx.splits]
    ctx.consumers = train_consumers(ctx.splits[0], ctx.keep_all_z0[0], ctx.consumer_config)
    return ctx


def fit_version(preset: Preset, method: Method, spec: ModelSpec, known: GraphTensors,
                train: PeriodSplit, config: TrainConfig,
                previous: PreviousVersion | None) -> tuple[VersionOutcome, VersionOutcome]:
    """(the M_k to use, the M_k selected on the validation window). Without `preset.refit`
    they are one; with it, the first is the selected epoch count trained again, from scratch,
    on `known` (every edge up to t_k, never one after), its record keeping the selection's
    epochs."""
    selected = train_version(method, spec, train.graph, config, previous,
                             _evaluator(train, preset), item_pool=train.item_pool)
    if not preset.refit or selected.result is None:
        return selected, selected
    again = dataclasses.replace(config, epochs=max(selected.result.selected_epoch, 1),
                                patience=0)
    refit = train_version(method, spec, known, again, previous, None, item_pool=train.item_pool)
    record = dataclasses.replace(refit.result, selected_epoch=selected.result.selected_epoch,
                                 stopped_epoch=selected.result.stopped_epoch)
    return dataclasses.replace(refit, result=record), selected


def fresh_outcome(ctx: SeedContext, preset: Preset, version: int) -> VersionOutcome:
    """Non-BC's M_k (trained once per seed, reused by the post-hoc methods and Keep-All)."""
    if version not in ctx.fresh:
        ctx.fresh[version], ctx.fresh_selected[version] = fit_version(
            preset, get_method("non-bc"), preset.spec_at(version), ctx.known[version],
            ctx.train_splits[version], ctx.config, None)
    return ctx.fresh[version]


class Lineage:
    """One method's chain of versions within a seed, trained one version at a time (so a lambda
    grid can stop every candidate after version 1 and carry on only the chosen one)."""

    def __init__(self, ctx: SeedContext, preset: Preset, method: Method,
                 config: TrainConfig | None = None) -> None:
        if ctx.model0 is None:
            raise ValueError("a lineage needs M_0 and the consumers: build its context with "
                             "prepare_seed, not prepare_splits")
        self.ctx, self.preset, self.method = ctx, preset, method
        self.config = config or ctx.config
        self.spec0 = preset.spec_at(0)
        self.chain = TransformChain([self.spec0.output_dim])
        self.previous = PreviousVersion(0, self.spec0, self.chain.amplifiers(), model=ctx.model0)
        self.rows = [_score(ctx, method, 0, *ctx.keep_all_z0[0], self.chain, 0.0, 0)]

    @property
    def done(self) -> bool:
        return len(self.rows) >= self.preset.versions

    def advance(self) -> dict:
        """Train, score and append the next version; its row."""
        ctx, preset, method = self.ctx, self.preset, self.method
        version = len(self.rows)
        split, train = ctx.splits[version], ctx.train_splits[version]
        spec = self.spec0 if method.model in ("finetune", "fixed") else preset.spec_at(version)
        started = time.perf_counter()
        validation: dict = {}
        if method.model == "fresh" and not method.joint:
            fresh = fresh_outcome(ctx, preset, version)
            # a post-hoc B_k is fitted on the graph known at t_k, as M_k was trained
            outcome = finish_version(method, fresh.result or TrainResult(fresh.model, None),
                                     ctx.known[version], self.config, self.previous)
        else:
            outcome, selected = fit_version(preset, method, spec, ctx.known[version], train,
                                            self.config, self.previous)
            # scored before B_k joins the chain: the selected M_k through its own B_k
            validation = _validation_score(ctx, preset, version, selected.model,
                                           self._to_ver0(selected.transform))
        seconds = time.perf_counter() - started
        self.chain.append(outcome.transform, spec.output_dim)
        z_user, z_item = embedded(outcome.model, split.graph)
        epoch = outcome.result.selected_epoch if outcome.result else 0
        stopped = outcome.result.stopped_epoch if outcome.result else 0
        row = {**_score(ctx, method, version, z_user, z_item, self.chain, seconds, epoch),
               "stopped_epoch": stopped, **validation}
        self.rows.append(row)
        self.previous = PreviousVersion(version, spec, self.chain.amplifiers(),
                                        model=outcome.model)
        return row


    def _to_ver0(self, transform) -> Callable[[torch.Tensor], torch.Tensor]:
        """z_k -> the ver-0 view through `transform` (B_k) and the chain as it is now."""
        weight, bias = (torch.from_numpy(part) for part in compose_path(
            [self.chain.to(0), transform]))
        return lambda z: z @ weight.T + bias


def run_method(ctx: SeedContext, preset: Preset, method: Method,
               config: TrainConfig | None = None) -> list[dict]:
    """One lineage: versions 1..K-1 of `method`, each trained (and validated) on its training
    split and scored on its own next period."""
    lineage = Lineage(ctx, preset, method, config)
    while not lineage.done:
        lineage.advance()
    return lineage.rows


def _validation_score(ctx: SeedContext, preset: Preset, version: int, model,
                      to_ver0: Callable[[torch.Tensor], torch.Tensor] | None) -> dict:
    """The same metrics on the training split's held-out window (recent-past validation only),
    of the model selected there (before any refit trains on the window): what lambda is chosen
    by, never the test period. `to_ver0` maps its embeddings to the ver-0 view (None: Keep-All,
    whose consumers read the true ver-0 embeddings)."""
    if preset.validation == "paper":
        return {}
    train = ctx.train_splits[version]
    z_user, z_item = embedded(model, train.graph)
    eval_user, eval_item = train.eval_pairs
    known_user, known_item = train.train_pairs
    recall = recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                         users=validation_users(train), item_pool=train.item_pool)
    if to_ver0 is not None:
        z_user, z_item = to_ver0(z_user), to_ver0(z_item)
    else:  # Keep-All: consumers read the true ver-0 embeddings
        z_user, z_item = embedded(ctx.model0, train.graph)
    aucs = task_aucs(ctx.consumers, train, item_rating_median(ctx.splits[0]), z_user, z_item)
    return {"val_recall": recall, "val_auc": aucs}


def _score(ctx: SeedContext, method: Method, version: int, z_user, z_item,
           chain: TransformChain, seconds: float, epoch: int) -> dict:
    split = ctx.splits[version]
    zt_user, zt_item = chain.apply(z_user, 0), chain.apply(z_item, 0)
    true_user, true_item = ctx.keep_all_z0[version]
    pool = split.node_pool
    error = alignment_error(torch.cat([zt_user, zt_item])[pool],
                            torch.cat([true_user, true_item])[pool])
    return {"method": method.name, "version": version, **test_recalls(split, z_user, z_item),
            "auc": consumer_aucs(ctx, version, zt_user, zt_item), "align_error": error,
            "train_seconds": seconds, "selected_epoch": epoch}


def keep_all_rows(ctx: SeedContext, preset: Preset) -> list[dict]:
    rows = []
    for version in range(preset.versions):
        fresh = fresh_outcome(ctx, preset, version)
        split = ctx.splits[version]
        z_user, z_item = embedded(fresh.model, split.graph)
        result = fresh.result
        rows.append({"method": "keep-all", "version": version,
                     **test_recalls(split, z_user, z_item),
                     "auc": consumer_aucs(ctx, version, *ctx.keep_all_z0[version]),
                     "align_error": 0.0,
                     "selected_epoch": result.selected_epoch if result else 0,
                     "stopped_epoch": result.stopped_epoch if result else 0,
                     **_validation_score(ctx, preset, version,
                                         ctx.fresh_selected[version].model, None)})
    return rows
