"""Paired comparisons over seeds: is a difference between two methods a finding or noise?

Seed s shares its splits and M_0 across methods, so methods are compared seed by seed: the
difference of their intended + unintended sums, its mean, a 95 % t-interval over seeds and how
many seeds each wins. Runs of the same benchmark on disjoint seeds (separate processes, possibly
on other days) merge into one result first.
"""

from __future__ import annotations

import math

import numpy as np

from bc_ray.exceptions import ConfigError
from bc_ray.experiments.report import summarize

# The paper's Keep-Latest methods: each keeps only the latest model and a backward transform.
KEEP_LATEST = ("non-bc", "post-lin-sloss", "post-lin-mloss", "joint-notrans", "joint-lin-sloss",
               "bc-aligner")
# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then the normal's).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def merge(results: list[dict]) -> dict:
    """One result from runs of the same benchmark on disjoint seeds."""
    if not results:
        raise ConfigError("no results to merge")
    first = results[0]
    for other in results[1:]:
        for key in ("dataset", "preset", "times"):
            if other.get(key) != first.get(key):
                raise ConfigError(f"cannot merge runs with different {key}: "
                                  f"{first.get(key)!r} vs {other.get(key)!r}")
    seen: set[int] = set()
    for result in results:
        seeds = {run["seed"] for run in result["runs"]}
        if seeds & seen:
            raise ConfigError(f"seed(s) {sorted(seeds & seen)} appear in more than one run; give "
                              "each run its own --first-seed")
        seen |= seeds
    methods = [m for m in first["methods"] if all(m in r["methods"] for r in results)]
    runs = [run for result in results for run in result["runs"] if run["method"] in
            (*methods, "keep-all")]
    return {**first, "methods": methods, "seeds": len(seen), "runs": runs,
            "seconds": sum(r.get("seconds", 0.0) for r in results),
            "commands": [r.get("command") for r in results]}


def summary_per_seed(results: dict) -> dict[str, dict[int, dict]]:
    """method -> seed -> that seed's summary row (sums, alignment errors, ...)."""
    table: dict[str, dict[int, dict]] = {}
    for seed in sorted({run["seed"] for run in results["runs"]}):
        runs = [run for run in results["runs"] if run["seed"] == seed]
        for row in summarize({**results, "runs": runs}):
            table.setdefault(row["method"], {})[seed] = row
    return table


def sums_per_seed(results: dict) -> dict[str, dict[int, float]]:
    """method -> seed -> intended + unintended degradation sum (%)."""
    return {method: {seed: row["sum_pct"] for seed, row in rows.items()}
            for method, rows in summary_per_seed(results).items()}


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of a 95 % t-interval; NaN bounds below two values."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    quantile = T_975[len(values) - 2] if len(values) - 1 <= len(T_975) else 1.96
    half = quantile * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_comparison(results: dict, reference: str = "bc-aligner",
                      others: tuple[str, ...] = KEEP_LATEST) -> list[dict]:
    """`reference` against each other method, seed by seed (a positive difference: the reference
    has the better, i.e. higher, sum)."""
    sums = sums_per_seed(results)
    if reference not in sums:
        return []
    rows = []
    for other in others:
        if other == reference or other not in sums:
            continue
        seeds = sorted(set(sums[reference]) & set(sums[other]))
        diff = np.array([sums[reference][s] - sums[other][s] for s in seeds])
        mean, low, high = t_interval(diff)
        rows.append({"method": other, "seeds": len(seeds), "mean_diff": mean, "ci_low": low,
                     "ci_high": high, "wins": int((diff > 0).sum()),
                     "finding": ("better" if low > 0 else "worse" if high < 0 else "tie")
                     if not math.isnan(low) else "one seed"})
    return rows
