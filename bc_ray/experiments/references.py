"""The simple references every table of the paper's protocol carries beside the trained
models (core/baselines.py): popularity and BPR-MF on the intended task, and consumers trained on
raw interaction counts on the unintended ones."""

from __future__ import annotations

import time

from bc_ray.core.baselines import (
    MFConfig,
    fold_in_users,
    popularity_embeddings,
    refit_bpr_mf,
    train_bpr_mf,
)
from bc_ray.core.consumers import interaction_counts, item_rating_median
from bc_ray.core.evaluation import recall_at_k
from bc_ray.core.methods import Method
from bc_ray.core.splits import PeriodSplit
from bc_ray.experiments.paper import (
    Preset,
    SeedContext,
    task_aucs,
    test_recalls,
    train_consumers,
    validation_users,
)


def reference_rows(ctx: SeedContext, preset: Preset, method: Method) -> list[dict]:
    """The rows of one reference method (`Method.reference_only`) at every version."""
    if method.model == "counts":
        return counts_rows(ctx)
    return baseline_rows(ctx, preset, method)


def baseline_rows(ctx: SeedContext, preset: Preset, method: Method) -> list[dict]:
    """Popularity or BPR-MF at every version, scored on the same test period as M_k and given
    the same edges M_k embeds with there (`split.graph`: every edge up to t_k and, as the
    paper's protocol has it, the test period's new users' edges but their last). Popularity
    counts those edges; BPR-MF is tuned and stopped on version k's validation users (with
    `preset.refit`, trained again on the edges up to t_k like the graph models), then a user it
    has no vector for is folded in from those edges (`fold_in_users`), as a graph model's
    aggregation embeds one."""
    rows = []
    for version in range(preset.versions):
        split, train, known = ctx.splits[version], ctx.train_splits[version], ctx.known[version]
        started = time.perf_counter()
        epoch = stopped = 0
        extra: dict = {}
        if method.model == "popularity":
            graph = split.graph
            z_user, z_item = popularity_embeddings(graph.edge_item, graph.num_users,
                                                   graph.num_items)
        else:
            config = _mf_config(preset, version, ctx.config.seed)
            result = train_bpr_mf(train.graph.edge_user, train.graph.edge_item,
                                  train.graph.num_users, train.graph.num_items,
                                  _table_validator(train, preset), config,
                                  item_pool=train.item_pool)
            if preset.refit:
                result = refit_bpr_mf(known.edge_user, known.edge_item, known.num_users,
                                      known.num_items, result, config, item_pool=train.item_pool)
            z_item = result.z_item
            z_user = fold_in_users(result.z_user, z_item, split.graph.edge_user,
                                   split.graph.edge_item)
            epoch, stopped, extra = result.selected_epoch, result.stopped_epoch, {
                "mf_reg": result.reg}
        rows.append({"method": method.name, "version": version,
                     **test_recalls(split, z_user, z_item), "auc": {},
                     "align_error": float("nan"),
                     "train_seconds": time.perf_counter() - started, "selected_epoch": epoch,
                     "stopped_epoch": stopped, **extra})
    return rows


def counts_rows(ctx: SeedContext) -> list[dict]:
    """Consumers of the same tasks trained (once, on period 0, as the embedding consumers) on raw
    interaction counts instead of embeddings, scored at every version: if even they sit near
    AUC 0.5, the data set's tasks carry no signal for embeddings to keep."""
    started = time.perf_counter()
    inputs = [interaction_counts(split) for split in ctx.splits]
    consumers = train_consumers(ctx.splits[0], inputs[0], ctx.consumer_config)
    seconds = time.perf_counter() - started
    median = item_rating_median(ctx.splits[0])
    return [{"method": "counts", "version": version, "recall": float("nan"),
             "auc": task_aucs(consumers, split, median, *counts), "align_error": float("nan"),
             "train_seconds": seconds, "selected_epoch": 0, "stopped_epoch": 0}
            for version, (split, counts) in enumerate(zip(ctx.splits, inputs))]


def _mf_config(preset: Preset, version: int, seed: int) -> MFConfig:
    """BPR-MF as wide as the version's M_k, with the preset's batch size and stopping rule."""
    train = preset.train
    return MFConfig(dim=preset.spec_at(version).output_dim, batch_size=train.batch_size,
                    epochs=train.epochs, eval_every=train.eval_every,
                    patience=train.patience or MFConfig.patience, seed=seed)


def _table_validator(split: PeriodSplit, preset: Preset):
    """Validation Recall@50 of embedding tables, on the users M_k is selected on."""
    users = split.val_users if preset.validation == "paper" else validation_users(split)
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    return lambda z_user, z_item: recall_at_k(z_user, z_item, eval_user, eval_item, known_user,
                                              known_item, users=users,
                                              item_pool=split.item_pool)
