"""Why a freshly trained M_k lost to the frozen M_0 (issue 28): Keep-All's Recall@50 with and
without the refit, beside Fix-M0 and popularity, for recipe variants of the converged preset.

Each variant trains version 0..4 of Non-BC's fresh model per seed, selected on the validation
window before t_k. With the refit the selected epoch count is then trained again, from scratch,
on every edge up to t_k; both models are scored on the same test period, so one run gives the
refit's cost against the selection it replaces. Fix-M0 is M_0 run on the current graph, from the
same recipe as the column it is compared with (refit M_0 beside refit M_k, selected beside
selected). Popularity counts every edge up to t_k.

    python benchmarks/bench_recipe.py [--dataset movielens-100k:../shared/data/ml-100k]
        [--seeds 0,1,2] [--variant NAME:key=value,...] ...

A variant's keys are the converged preset's `TrainConfig` fields (`lr=0.001`), `spec.FIELD`
(`spec.hidden_dim=16`), `width_step` or `validation_window`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.baselines import popularity_embeddings  # noqa: E402
from bc_ray.core.embedded import embedded  # noqa: E402
from bc_ray.data import load_dataset  # noqa: E402
from bc_ray.experiments.paper import (  # noqa: E402
    PRESETS,
    Preset,
    fresh_outcome,
    prepare_splits,
    test_recall,
)

DEFAULT_VARIANTS = ("converged:", "lr 1e-3:lr=0.001")  # RESULTS §1's MovieLens 100K table


def variant(text: str) -> tuple[str, Preset]:
    """`NAME:key=value,...` -> (NAME, the converged preset so changed, refit on)."""
    name, _, changes = text.partition(":")
    preset = dataclasses.replace(PRESETS["converged"], refit=True)
    for change in filter(None, changes.split(",")):
        key, _, value = change.partition("=")
        if key.startswith("spec."):
            field = key[len("spec."):]
            spec = dataclasses.replace(preset.spec, **{field: _cast(getattr(preset.spec, field),
                                                                     value)})
            preset = dataclasses.replace(preset, spec=spec)
        elif key in ("width_step", "validation_window"):
            preset = dataclasses.replace(preset, **{key: _cast(getattr(preset, key), value)})
        else:
            train = dataclasses.replace(preset.train,
                                        **{key: _cast(getattr(preset.train, key), value)})
            preset = dataclasses.replace(preset, train=train)
    return name, preset


def _cast(old: object, text: str) -> object:
    if isinstance(old, bool):
        return text.lower() in ("1", "true", "yes")
    return type(old)(text)


def seed_recalls(snapshot, preset: Preset, seed: int) -> dict[str, float]:
    """Versions 1..K-1 means of each model's test Recall@50, for one seed."""
    ctx = prepare_splits(snapshot, preset, seed)
    fresh_outcome(ctx, preset, 0)
    scores: dict[str, list[float]] = {key: [] for key in
                                      ("refit", "selected", "fix_refit", "fix_selected", "pop")}
    for version in range(1, preset.versions):
        split, known = ctx.splits[version], ctx.known[version]
        fresh_outcome(ctx, preset, version)
        models = {"refit": ctx.fresh[version].model,
                  "selected": ctx.fresh_selected[version].model,
                  "fix_refit": ctx.fresh[0].model, "fix_selected": ctx.fresh_selected[0].model}
        for key, model in models.items():
            scores[key].append(test_recall(split, *embedded(model, split.graph)))
        scores["pop"].append(test_recall(split, *popularity_embeddings(
            known.edge_item, known.num_users, known.num_items)))
    return {key: 100 * float(np.mean(values)) for key, values in scores.items()}


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 \
        else f"{values[0]:.2f}"


def _vs(values: list[float], reference: list[float]) -> str:
    """Mean ± sd over seeds of the paired degradation against `reference`, in %."""
    return _cell([100 * (v - r) / r for v, r in zip(values, reference)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k:../shared/data/ml-100k")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variant", action="append", help="NAME:key=value,... (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    snapshot = load_dataset(args.dataset)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows, saved = [], {}
    for name, preset in map(variant, args.variant or DEFAULT_VARIANTS):
        by_seed = [seed_recalls(snapshot, preset, seed) for seed in seeds]
        column = {key: [scores[key] for scores in by_seed] for key in by_seed[0]}
        saved[name] = column
        rows.append([name, _cell(column["selected"]), _cell(column["refit"]),
                     _vs(column["refit"], column["selected"]),
                     _vs(column["fix_selected"], column["selected"]),
                     _vs(column["fix_refit"], column["refit"]),
                     _vs(column["pop"], column["selected"])])
        print(f"{name}: done", flush=True)
    print_table(f"Keep-All's Recall@50 (%, versions 1-4 mean; mean ± sd over seeds {args.seeds}) "
                f"on {snapshot.meta.name}, with and without the refit",
                ["variant", "selected", "refit", "refit vs selected %",
                 "Fix-M0 vs Keep-All % (selected)", "Fix-M0 vs Keep-All % (refit)",
                 "popularity vs Keep-All % (selected)"], rows)
    print(write_json(f"recipe-{snapshot.meta.name}", {"dataset": args.dataset, "seeds": seeds,
                                                      "variants": saved}))


if __name__ == "__main__":
    main()
