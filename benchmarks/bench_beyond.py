"""Beyond the paper, each measured against the paper's setting in the same run:

1. Warm start (version k initialised from M_{k-1}; new entities by mean or metadata): epochs to
   reach Keep-All's Recall@50 (the best a fresh model reaches within the budget).
2. Cold start by age-aware mixing (with ID dropout): Recall@50 on items first seen in the
   evaluation period and on all items, with and without mixing.
(3. The stabilised space, orthogonal B_k next to the free linear one, comes from the paper
benchmark: `bc-ray benchmark paper --methods bc-aligner,bc-aligner-orth ...`.)

    python benchmarks/bench_beyond.py [--data ../shared/data/ml-100k] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.embedded import embedded  # noqa: E402
from bc_ray.core.evaluation import recall_at_k  # noqa: E402
from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.core.splits import PeriodSplit, period_split  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.core.transforms import TransformChain  # noqa: E402
from bc_ray.core.version import PreviousVersion, split_evaluator, train_version  # noqa: E402
from bc_ray.data import load_dataset  # noqa: E402

SPEC = VersionSpec(num_layers=2, hidden_dim=48)
TRAIN = TrainConfig(epochs=30, batch_size=2048, lr=3e-3, eval_every=1, warmup_epochs=0)


def all_users(split: PeriodSplit) -> torch.Tensor:
    return torch.cat([split.val_users, split.test_users])


def smoothed(values: list[float], width: int = 3) -> np.ndarray:
    return np.convolve(values, np.ones(width) / width, mode="valid")


def epochs_to(curve: np.ndarray, target: float) -> int | None:
    hits = np.flatnonzero(curve >= target)
    return int(hits[0]) + 1 if hits.size else None


def warm_start(snapshot, seed: int) -> list[list]:
    """Curves of validation Recall@50 per epoch for version 1, fresh vs warm-started."""
    first, second = period_split(snapshot, 0.6, 0.7, seed), period_split(snapshot, 0.7, 0.8, seed)
    config = dataclasses.replace(TRAIN, seed=seed)
    base = train_version(get_method("non-bc"), SPEC, first.graph, config, None,
                         lambda t: split_evaluator(first, t), item_pool=first.item_pool)
    previous = PreviousVersion(0, SPEC, TransformChain([SPEC.output_dim]).amplifiers(),
                               model=base.model)
    curves = {}
    for name, warm, lr in (("fresh (Keep-All)", "off", 3e-3), ("warm: mean", "mean", 1e-3),
                           ("warm: metadata", "metadata", 1e-3)):
        history: list[float] = []
        train_version(get_method("non-bc"), SPEC.grown(1, 16), second.graph,
                      dataclasses.replace(config, warm_start=warm, lr=lr), previous,
                      lambda t: split_evaluator(second, t, users=all_users(second)),
                      on_epoch=lambda s: history.append(s["recall"]),
                      item_pool=second.item_pool)
        curves[name] = smoothed(history)
    target = 0.95 * float(curves["fresh (Keep-All)"].max())
    return [[name, float(curve[0]), float(curve.max()), target, epochs_to(curve, target)]
            for name, curve in curves.items()]


def cold_recall(split: PeriodSplit, z_user, z_item) -> tuple[float, float]:
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    users = split.test_users
    everything = recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                             users=users, item_pool=split.item_pool)
    first = split.graph.item_first_t[eval_item]
    cold = first > split.start
    coldest = recall_at_k(z_user, z_item, eval_user[cold], eval_item[cold], known_user,
                          known_item, users=users, item_pool=split.item_pool)
    return everything, coldest


def mixing(snapshot, seeds: int) -> list[list]:
    rows = []
    for label, spec in (("ID + metadata (paper)", SPEC),
                        ("age-aware mixing + ID dropout", dataclasses.replace(
                            SPEC, cold_start_mixing=True))):
        scores = []
        for seed in range(seeds):
            split = period_split(snapshot, 0.7, 0.8, seed)
            config = dataclasses.replace(TRAIN, seed=seed, eval_every=5)
            model = train_version(get_method("non-bc"), spec, split.graph, config, None,
                                  lambda t: split_evaluator(split, t),
                                  item_pool=split.item_pool).model
            scores.append(cold_recall(split, *embedded(model, split.graph)))
        scores = np.array(scores)
        rows.append([label, scores[:, 0].mean(), scores[:, 0].std(), scores[:, 1].mean(),
                     scores[:, 1].std()])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "ml-100k"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets = ["synthetic"]
    if os.path.isdir(args.data):
        datasets.insert(0, f"movielens-100k:{args.data}")
    results = {}
    for dataset in datasets:
        snapshot = load_dataset(dataset)
        name = dataset.split(":")[0]
        warm = warm_start(snapshot, seed=0)
        print_table(f"Warm start on {name}: validation Recall@50 (3-epoch running mean), "
                    "version 1", ["start", "after epoch 1-3", "best", "target (95% of "
                                  "Keep-All best)", "epochs to target"], warm)
        mixed = mixing(snapshot, args.seeds)
        print_table(f"Cold start on {name}: test Recall@50, {args.seeds} seeds (mean, std)",
                    ["input layer", "all items", "std", "cold items", "std"], mixed)
        results[name] = {"warm_start": warm, "mixing": mixed}
    write_json("beyond", results)


if __name__ == "__main__":
    main()
