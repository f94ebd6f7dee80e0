"""Turning benchmark runs into the paper's Table 3, `summary.json` and the Figure 3 plots."""

from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np
import orjson

from bc_ray.core.evaluation import degradation_pct
from bc_ray.core.methods import get_method


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def per_version(results: dict) -> dict:
    """method -> version -> {intended_deg_pct, unintended_deg_pct, align_error} (seed means)."""
    keep = {(r["seed"], r["version"]): r for r in results["runs"] if r["method"] == "keep-all"}
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in results["runs"]:
        reference = keep[(row["seed"], row["version"])]
        cell = table[row["method"]][row["version"]]
        cell["intended_deg_pct"].append(degradation_pct(row["recall"], reference["recall"]))
        cell["unintended_deg_pct"].append(_mean(
            degradation_pct(row["auc"][task], reference["auc"][task]) for task in row["auc"]))
        cell["align_error"].append(row["align_error"])
        cell["recall"].append(row["recall"])
        cell["auc"].append(_mean(row["auc"].values()))
    return {method: {version: {k: _mean(v) for k, v in cells.items()}
                     for version, cells in sorted(versions.items())}
            for method, versions in table.items()}


def summarize(results: dict) -> list[dict]:
    """One row per method, averaged over versions 1..K-1 (version 0 is shared by all methods)
    and seeds; the Keep-All row carries the absolute Recall@50 and AUC."""
    versions = per_version(results)
    rows = []
    for method in ["keep-all"] + [m for m in results["methods"] if m != "keep-all"]:
        if method not in versions:
            continue
        later = [v for k, v in versions[method].items() if k >= 1]
        intended = _mean(c["intended_deg_pct"] for c in later)
        unintended = _mean(c["unintended_deg_pct"] for c in later)
        rows.append({"method": method, "title": get_method(method).title,
                     "intended_deg_pct": intended, "unintended_deg_pct": unintended,
                     "sum_pct": intended + unintended,
                     "align_error": _mean(c["align_error"] for c in later),
                     "last_align_error": later[-1]["align_error"] if later else float("nan"),
                     "recall_at_50": _mean(c["recall"] for c in later),
                     "auc": _mean(c["auc"] for c in later)})
    return rows


def markdown_table(results: dict, summary: list[dict]) -> str:
    lines = [
        f"Dataset `{results['dataset']}`, preset `{results['preset']}`, {results['seeds']} seed(s); "
        "degradations relative to Keep-All in %, averaged over versions 1-4 and tasks "
        "(closer to 0 is better).",
        "",
        "| Method | Intended deg. (Recall@50) | Unintended deg. (AUC) | Sum | Align error "
        "(mean) | Align error (last version) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keep = summary[0]
    for row in summary[1:]:
        lines.append(f"| {row['title']} | {row['intended_deg_pct']:+.2f} | "
                     f"{row['unintended_deg_pct']:+.2f} | {row['sum_pct']:+.2f} | "
                     f"{row['align_error']:.3f} | {row['last_align_error']:.3f} |")
    lines.append(f"| Keep-All (absolute) | Recall@50 = {100 * keep['recall_at_50']:.2f} | "
                 f"AUC = {100 * keep['auc']:.2f} | | 0 | 0 |")
    floor = sanity(summary)
    verdict = ("passed" if floor["passed"]
               else "NOT passed: methods are not ranked on this data set")
    lines += ["", f"Sanity floor ({verdict}): Keep-All beats Fix-M0 on the intended task: "
                  f"{floor['keep_all_beats_fix_m0']}; Keep-All's consumers reach AUC "
                  f"{100 * floor['keep_all_auc']:.2f} (floor {100 * AUC_FLOOR:.0f})."]
    for entry in lambda_summary(results):
        lines.append(f"- {entry['method']}: lambda chosen per seed {entry['chosen']}; mean "
                     f"validation sum by lambda {entry['validation_sum']}")
    return "\n".join(lines) + "\n"


AUC_FLOOR = 0.60  # consumers must be well above chance (0.5) for a ranking to mean anything


def sanity(summary: list[dict]) -> dict:
    """The floor a data set must pass before methods are ranked on it: Keep-All (a model
    retrained on the new data) beats the frozen M_0 on the intended task, and its consumers are
    well above chance."""
    rows = {row["method"]: row for row in summary}
    keep = rows["keep-all"]
    fixed = rows.get("fix-m0")
    beats = None if fixed is None else bool(fixed["intended_deg_pct"] < 0)
    passed = bool(beats is not False and keep["auc"] >= AUC_FLOOR)
    return {"keep_all_beats_fix_m0": beats, "keep_all_auc": keep["auc"],
            "auc_floor": AUC_FLOOR, "passed": passed}


def lambda_summary(results: dict) -> list[dict]:
    """Per jointly trained method: the lambda chosen for each seed and the mean validation sum
    of every lambda of the grid."""
    by_method: dict = defaultdict(lambda: {"chosen": [], "scores": defaultdict(list)})
    for entry in results.get("lam_grid", []):
        cell = by_method[entry["method"]]
        cell["chosen"].append(float(entry["chosen"]))
        for lam, score in entry["validation_sum"].items():
            cell["scores"][lam].append(score)
    return [{"method": method, "chosen": cell["chosen"],
             "validation_sum": {lam: round(_mean(v), 2) for lam, v in cell["scores"].items()}}
            for method, cell in by_method.items()]


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = per_version(results)
    metrics = [("intended_deg_pct", "Intended degradation (%)"),
               ("unintended_deg_pct", "Unintended degradation (%)"),
               ("align_error", "Embedding alignment error")]
    methods = [m for m in results["methods"] if m in versions]
    pairs = plt.get_cmap("tab20").colors  # (dark, light) pairs: all darks first, then lights
    colours = pairs[0::2] + pairs[1::2]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for axis, (key, label) in zip(axes, metrics):
        for i, method in enumerate(methods):
            xs = sorted(versions[method])
            axis.plot(xs, [versions[method][x][key] for x in xs], marker="o",
                      color=colours[i % len(colours)], label=get_method(method).title)
        axis.set_xlabel("version")
        axis.set_xticks(sorted({v for m in methods for v in versions[m]}))
        axis.set_title(label)
        axis.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(0.87, 0.5),
               fontsize=8)
    fig.suptitle(f"{results['dataset']} ({results['preset']} preset)")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, out_dir: str) -> list[dict]:
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(results)
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    with open(os.path.join(out_dir, "results.json"), "wb") as handle:
        handle.write(orjson.dumps({**results, "per_version": per_version(results),
                                   "sanity": sanity(summary),
                                   "lambda": lambda_summary(results)},
                                  option=options | orjson.OPT_NON_STR_KEYS))
    with open(os.path.join(out_dir, "summary.json"), "wb") as handle:
        handle.write(orjson.dumps(summary, option=options))
    with open(os.path.join(out_dir, "table.md"), "w") as handle:
        handle.write(markdown_table(results, summary))
    plot(results, os.path.join(out_dir, "metrics.png"))
    return summary
