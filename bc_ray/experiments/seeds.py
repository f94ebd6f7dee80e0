"""Paired comparisons over seeds: is a difference between two methods a finding or noise?

Seed s shares its splits and M_0 across methods, so methods are compared seed by seed: the
difference of their intended + unintended sums, its mean, a 95 % t-interval over seeds and how
many seeds each wins. Runs of the same benchmark on disjoint seeds (separate processes, possibly
on other days) merge into one result first.
"""

from __future__ import annotations

import math

import numpy as np

from bc_ray.core.evaluation import degradation_pct
from bc_ray.exceptions import ConfigError
from bc_ray.experiments.floor import FLOOR_BASELINES, baseline_checks, floor_verdict
from bc_ray.experiments.summary import per_version, summarize

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
        for key in ("dataset", "preset", "times", "model", "lam_values", "lam_rule", "protocol"):
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
    grid = [entry for result in results for entry in result.get("lam_grid", [])]
    return {**first, "methods": methods, "seeds": len(seen), "runs": runs, "lam_grid": grid,
            "seconds": sum(r.get("seconds", 0.0) for r in results),
            "commands": [r.get("command") for r in results],
            "code": [r.get("code") for r in results]}


def summary_per_seed(results: dict) -> dict[str, dict[int, dict]]:
    """method -> seed -> that seed's summary row (sums, alignment errors, ...)."""
    table: dict[str, dict[int, dict]] = {}
    for seed in sorted({run["seed"] for run in results["runs"]}):
        runs = [run for run in results["runs"] if run["seed"] == seed]
        for row in summarize({**results, "runs": runs}):
            table.setdefault(row["method"], {})[seed] = row
    return table


def values_per_seed(results: dict, key: str = "sum_pct") -> dict[str, dict[int, float]]:
    """method -> seed -> one summary value (default: intended + unintended degradation, %)."""
    return {method: {seed: row[key] for seed, row in rows.items()}
            for method, rows in summary_per_seed(results).items()}


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of a 95 % t-interval; NaN bounds below two values."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    quantile = T_975[len(values) - 2] if len(values) - 1 <= len(T_975) else 1.96
    half = quantile * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


# What a method's seeds are summarised by: summary key -> higher is better.
METRICS = {"intended_deg_pct": True, "unintended_deg_pct": True, "sum_pct": True,
           "last_align_error": False}


def interval(values: list[float]) -> dict:
    """{mean, sd, ci_low, ci_high, seeds} of one value per seed."""
    array = np.array(values, dtype=float)
    mean, low, high = t_interval(array)
    spread = float(array.std(ddof=1)) if len(array) > 1 else math.nan
    return {"mean": mean, "sd": spread, "ci_low": low, "ci_high": high, "seeds": len(array)}


def method_intervals(results: dict) -> dict[str, dict[str, dict]]:
    """method -> metric -> {mean, sd, ci_low, ci_high, seeds} over seeds."""
    out: dict[str, dict[str, dict]] = {}
    for key in METRICS:
        for method, by_seed in values_per_seed(results, key).items():
            out.setdefault(method, {})[key] = interval(list(by_seed.values()))
    return out


def last_version_intervals(results: dict) -> dict[str, dict[str, dict]]:
    """method -> {intended_deg_pct, unintended_deg_pct} -> interval over seeds, at the last
    version alone: the summary tables average versions 1..K-1, while a consumer lives with
    the last."""
    by_seed: dict[str, dict[str, list[float]]] = {}
    for seed in sorted({run["seed"] for run in results["runs"]}):
        table = per_version({**results, "runs": [r for r in results["runs"] if r["seed"] == seed]})
        for method, versions in table.items():
            last = versions[max(versions)]
            cell = by_seed.setdefault(method, {"intended_deg_pct": [], "unintended_deg_pct": []})
            for key in cell:
                cell[key].append(last[key])
    return {method: {key: interval(values) for key, values in cells.items()}
            for method, cells in by_seed.items() if method != "keep-all"}


def task_intervals(results: dict) -> dict[str, dict[str, dict]]:
    """method -> consumer task -> interval over seeds of its AUC degradation against Keep-All
    (%, mean over versions 1..K-1): which consumers a method fails, where the summary tables
    average all tasks into one number."""
    keep = {(r["seed"], r["version"]): r for r in results["runs"] if r["method"] == "keep-all"}
    cells: dict[str, dict[str, dict[int, list[float]]]] = {}
    for row in results["runs"]:
        if row["method"] == "keep-all" or row["version"] < 1:
            continue
        reference = keep[(row["seed"], row["version"])]["auc"]
        for task, auc in row["auc"].items():
            seeds = cells.setdefault(row["method"], {}).setdefault(task, {})
            seeds.setdefault(row["seed"], []).append(degradation_pct(auc, reference[task]))
    return {method: {task: interval([float(np.mean(v)) for _, v in sorted(seeds.items())])
                     for task, seeds in tasks.items()}
            for method, tasks in cells.items()}


def keep_all_absolute(results: dict) -> dict[str, dict]:
    """Keep-All's own Recall@50 and consumer AUC in % (means over versions 1..K-1), over seeds:
    the level the degradations are relative to, comparable across model families."""
    rows = summary_per_seed(results)["keep-all"].values()
    return {key: interval([100 * row[key] for row in rows]) for key in ("recall_at_50", "auc")}


def seed_sanity(results: dict) -> dict:
    """The sanity floor over seeds (`report.baseline_checks`): Keep-All's win over the frozen
    M_0 on the intended task must itself be a finding (its 95 % interval below zero), Keep-All
    must be at least level with popularity and BPR-MF, and its consumers well above chance."""
    intervals = method_intervals(results)
    keep_auc = float(np.mean(list(values_per_seed(results, "auc")["keep-all"].values())))
    intended = {method: intervals[method]["intended_deg_pct"] for method in FLOOR_BASELINES
                if method in intervals}
    return floor_verdict(baseline_checks(intended), keep_auc)


def paired_comparison(results: dict, reference: str = "bc-aligner",
                      others: tuple[str, ...] = KEEP_LATEST, key: str = "sum_pct") -> list[dict]:
    """`reference` against each other method, seed by seed, on one summary value. The
    difference is oriented so that positive means the reference is better (a higher sum, a
    lower alignment error)."""
    values = values_per_seed(results, key)
    if reference not in values:
        return []
    sign = 1.0 if METRICS.get(key, True) else -1.0
    rows = []
    for other in others:
        if other == reference or other not in values:
            continue
        seeds = sorted(set(values[reference]) & set(values[other]))
        diff = sign * np.array([values[reference][s] - values[other][s] for s in seeds])
        mean, low, high = t_interval(diff)
        rows.append({"method": other, "metric": key, "seeds": len(seeds), "mean_diff": mean,
                     "ci_low": low, "ci_high": high, "wins": int((diff > 0).sum()),
                     "finding": ("better" if low > 0 else "worse" if high < 0 else "tie")
                     if not math.isnan(low) else "one seed"})
    return rows


def plot_intervals(results: dict, path: str) -> None:
    """One figure per data set: methods as bars (mean over seeds) with 95 % t-interval error
    bars, for the intended, unintended and summed degradation against Keep-All."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bc_ray.core.methods import get_method

    intervals = method_intervals(results)
    methods = [m for m in results["methods"] if m in intervals and m != "keep-all"]
    panels = [("intended_deg_pct", "Intended degradation (Recall@50, %)"),
              ("unintended_deg_pct", "Unintended degradation (consumer AUC, %)"),
              ("sum_pct", "Sum (%)")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), sharey=False)
    xs = np.arange(len(methods))
    for axis, (key, label) in zip(axes, panels):
        cells = [intervals[m][key] for m in methods]
        means = np.array([c["mean"] for c in cells])
        errors = np.array([[c["mean"] - c["ci_low"] for c in cells],
                           [c["ci_high"] - c["mean"] for c in cells]])
        colours = ["tab:red" if m == "bc-aligner" else
                   "tab:blue" if m in KEEP_LATEST else "tab:gray" for m in methods]
        axis.bar(xs, means, color=colours, yerr=np.nan_to_num(errors), capsize=3)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(xs)
        axis.set_xticklabels([get_method(m).title for m in methods], rotation=60, ha="right",
                             fontsize=8)
        axis.set_title(label, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    seeds = results["seeds"]
    fig.suptitle(f"{results['dataset']} ({results['preset']} preset): mean of {seeds} seeds, "
                 "95 % t-interval; blue: the paper's Keep-Latest methods, red: BC-Aligner")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
