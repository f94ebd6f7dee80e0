"""Turning benchmark runs into the paper's Table 3, `summary.json` and the Figure 3 plots."""

from __future__ import annotations

import math
import os
from collections import defaultdict

import orjson

from bc_ray.core.methods import get_method
from bc_ray.experiments.floor import floor_text, sanity
from bc_ray.experiments.floor import pct as _pct
from bc_ray.experiments.seeds import seed_sanity
from bc_ray.experiments.summary import _mean, per_version, summarize  # noqa: F401


def markdown_table(results: dict, summary: list[dict]) -> str:
    lines = [
        f"Dataset `{results['dataset']}`, preset `{results['preset']}`, "
        f"{results['seeds']} seed(s); "
        f"degradations relative to Keep-All in %, averaged over versions "
        f"1-{len(results['times']) - 2} and tasks (closer to 0 is better).",
    ]
    if results.get("validation") == "paper":
        lines.append("Models were selected on the validation half of each test period's users "
                     "(the paper's protocol): selection sees the test period. The converged "
                     "preset validates on a window before it.")
    lines += [
        "",
        "| Method | Intended deg. (Recall@50) | Unintended deg. (AUC) | Sum | Align error "
        "(mean) | Align error (last version) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keep = summary[0]
    for row in summary[1:]:
        lines.append(f"| {row['title']} | {_pct(row['intended_deg_pct'])} | "
                     f"{_pct(row['unintended_deg_pct'])} | {_pct(row['sum_pct'])} | "
                     f"{_pct(row['align_error'], False, 3)} | "
                     f"{_pct(row['last_align_error'], False, 3)} |")
    lines.append(f"| Keep-All (absolute) | Recall@50 = {100 * keep['recall_at_50']:.2f} | "
                 f"AUC = {100 * keep['auc']:.2f} | | 0 | 0 |")
    counts = next((row for row in summary if row["method"] == "counts"), None)
    if counts is not None:
        lines += ["", f"Consumers trained on raw interaction counts instead of embeddings reach "
                      f"AUC {100 * counts['auc']:.2f} (Keep-All's, on ver-0 embeddings: "
                      f"{100 * keep['auc']:.2f}); near 50 would mean the tasks carry little "
                      "signal for any input."]
    lines += ["", *recall_by_version(results), *recall_by_user_kind(results, summary)]
    floor = floor_of(results, summary)
    verdict = ("passed" if floor["passed"] else
               "not checked: methods are not ranked" if floor["passed"] is None else
               "NOT passed: methods are not ranked on this data set")
    lines += ["", f"Sanity floor ({verdict}): {floor_text(floor)}"]
    for entry in lambda_summary(results):
        lines.append(f"- {entry['method']}: lambda chosen per seed {entry['chosen']} by "
                     f"{entry['rule']}; validation intended degradation by lambda "
                     f"{entry['validation_intended']}, sum {entry['validation_sum']}")
    return "\n".join(lines) + "\n"


def recall_by_version(results: dict) -> list[str]:
    """Every method's absolute test Recall@50 (%) at every version, seed means: the simple
    baselines beside the trained models, version by version."""
    versions = per_version(results)
    methods = ["keep-all"] + [m for m in results["methods"] if m in versions and m != "keep-all"]
    numbers = sorted({v for m in methods for v in versions[m]})
    lines = ["Recall@50 (absolute, %) by version",
             "", "| Method | " + " | ".join(f"v{v}" for v in numbers) + " |",
             "|---|" + "---:|" * len(numbers)]
    for method in methods:
        if all(math.isnan(cell["recall"]) for cell in versions[method].values()):
            continue  # a reference of the consumers only
        cells = [_pct(100 * versions[method][v]["recall"], False) if v in versions[method]
                 else "" for v in numbers]
        lines.append(f"| {get_method(method).title} | " + " | ".join(cells) + " |")
    return lines


def recall_by_user_kind(results: dict, summary: list[dict]) -> list[str]:
    """Recall@50 apart for test users seen before the period and users first seen in it (with
    two or more of its edges: the last is tested): a graph model embeds the latter from their
    earlier edges, BPR-MF folds them in from the same edges (runs before 2026-12-07 gave them
    a zero vector). Nothing for runs saved before the split was recorded."""
    rows = [row for row in summary if not math.isnan(row["recall_existing_at_50"])
            or not math.isnan(row["recall_new_at_50"])]
    if not rows:
        return []
    lines = ["", f"Recall@50 (absolute, %, versions 1-{len(results['times']) - 2} mean) by test "
             "user: seen before t_k / first seen in the test period", "",
             "| Method | seen before | first seen |", "|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['title']} | {_pct(100 * row['recall_existing_at_50'], False)} | "
                     f"{_pct(100 * row['recall_new_at_50'], False)} |")
    return lines


def floor_of(results: dict, summary: list[dict]) -> dict:
    """The floor by intervals over seeds where the run has two or more, else by its means."""
    if results.get("seeds", 1) >= 2:
        return seed_sanity(results)
    return sanity(summary)


def lambda_summary(results: dict) -> list[dict]:
    """Per jointly trained method: the lambda chosen for each seed, the rule, and the mean over
    seeds of each lambda's validation sum and intended degradation (what the rule reads)."""
    by_method: dict = defaultdict(lambda: {"chosen": [], "validation_sum": defaultdict(list),
                                           "validation_intended": defaultdict(list)})
    for entry in results.get("lam_grid", []):
        cell = by_method[entry["method"]]
        cell["chosen"].append(float(entry["chosen"]))
        for key in ("validation_sum", "validation_intended"):
            for lam, score in entry.get(key, {}).items():
                cell[key][lam].append(score)
    return [{"method": method, "chosen": cell["chosen"],
             "rule": results.get("lam_rule") or "best validation sum over versions 1-4",
             **{key: {lam: round(_mean(v), 2) for lam, v in cell[key].items()}
                for key in ("validation_sum", "validation_intended")}}
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
                                   "sanity": floor_of(results, summary),
                                   "lambda": lambda_summary(results)},
                                  option=options | orjson.OPT_NON_STR_KEYS))
    with open(os.path.join(out_dir, "summary.json"), "wb") as handle:
        handle.write(orjson.dumps(summary, option=options))
    with open(os.path.join(out_dir, "table.md"), "w") as handle:
        handle.write(markdown_table(results, summary))
    plot(results, os.path.join(out_dir, "metrics.png"))
    return summary
