"""One run of the paper's protocol over seeds and methods: every lineage, the lambda grid and the
simple references, into the results `report` and `seeds` read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from bc_ray.core.consumers import TASKS
from bc_ray.core.methods import Method, get_method
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import paper_times
from bc_ray.experiments.lambdas import LAM_RULE, choose_lambda, version_validation
from bc_ray.experiments.paper import (
    CONSUMER_HOLDOUT,
    Lineage,
    Preset,
    SeedContext,
    keep_all_rows,
    prepare_seed,
    run_method,
    validation_users,
)
from bc_ray.experiments.references import reference_rows


def run_benchmark(snapshot: GraphSnapshot, methods: list[str], seeds: int, preset: Preset,
                  progress: Callable[[str], None] = lambda _msg: None,
                  first_seed: int = 0, lam_chosen: Mapping[str, float] | None = None) -> dict:
    """Seeds `first_seed` .. `first_seed + seeds - 1`: separate runs on disjoint seeds merge
    (`bc_ray.experiments.seeds.merge`), so seeds can run as separate processes.

    `lam_chosen` (method -> lambda, from `chosen_lambdas` of an earlier run's validation) skips
    the grid for those methods."""
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
            if method.reference_only:
                runs += [{"seed": seed, **row} for row in reference_rows(ctx, preset, method)]
            elif not (method.joint and preset.lam_grid):
                runs += [{"seed": seed, **row} for row in run_method(ctx, preset, method)]
            elif method.name in lam_chosen:
                lam = lam_chosen[method.name]
                progress(f"seed {seed}: {method.title}, lambda {lam:g} (chosen earlier)")
                rows = run_method(ctx, preset, method, dataclasses.replace(ctx.config, lam=lam))
                grid.append({"seed": seed, "method": method.name, "chosen": lam,
                             "validation_sum": {}, "chosen_earlier": True})
                runs += [{"seed": seed, "lam": lam, **row} for row in rows]
            else:
                entry, rows = _grid_lineage(ctx, preset, method, keep_rows[1], progress)
                grid.append({"seed": seed, **entry})
                runs += [{"seed": seed, "lam": entry["chosen"], **row} for row in rows]
    return {"dataset": snapshot.meta.name, "preset": preset.name, "seeds": seeds,
            "times": paper_times(preset.start, preset.step, preset.versions),
            "validation": preset.validation, "lam_grid": grid,
            "lam_values": list(preset.lam_grid),
            "lam_rule": LAM_RULE if preset.lam_grid else None,
            "protocol": protocol(preset),
            "methods": [m.name for m in chosen], "tasks": list(TASKS), "runs": runs}


def protocol(preset: Preset) -> dict:
    """What decides a run's numbers beyond its preset's name: runs that differ here do not
    merge (`seeds.merge`)."""
    return {"validation": preset.validation, "refit": preset.refit,
            "consumer_holdout": CONSUMER_HOLDOUT, "posthoc_fit": "known graph"}


def _grid_lineage(ctx: SeedContext, preset: Preset, method: Method, keep_first: dict,
                  progress: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """Version 1 for every lambda of the grid, the choice by `LAM_RULE`, then the chosen
    lineage's later versions: (the grid's record, the chosen lineage's rows)."""
    lineages, costs = {}, {}
    for lam in preset.lam_grid:
        progress(f"{method.title}: version 1 with lambda {lam:g}")
        lineage = Lineage(ctx, preset, method, dataclasses.replace(ctx.config, lam=lam))
        costs[lam] = version_validation(lineage.advance(), keep_first)
        lineages[lam] = lineage
    best = choose_lambda({lam: intended for lam, (intended, _) in costs.items()})
    progress(f"{method.title}: lambda {best:g} chosen on version 1's validation window")
    lineage = lineages[best]
    while not lineage.done:
        lineage.advance()
    window = ctx.train_splits[1]
    entry = {"method": method.name, "chosen": best, "rule": LAM_RULE,
             "validation_edges": window.eval_edges.height,
             "validation_users": int(validation_users(window).numel()),
             "validation_intended": {str(lam): c[0] for lam, c in costs.items()},
             "validation_unintended": {str(lam): c[1] for lam, c in costs.items()},
             "validation_sum": {str(lam): c[0] + c[1] for lam, c in costs.items()}}
    return entry, lineage.rows
