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


def _number(value) -> float:
    """A metric as saved: JSON writes NaN (a metric a reference row does not have) as null."""
    return float("nan") if value is None else float(value)


def per_version(results: dict) -> dict:
    """method -> version -> {intended_deg_pct, unintended_deg_pct, align_error} (seed means)."""
    keep = {(r["seed"], r["version"]): r for r in results["runs"] if r["method"] == "keep-all"}
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in results["runs"]:
        reference = keep[(row["seed"], row["version"])]
        cell = table[row["method"]][row["version"]]
        recall = _number(row["recall"])
        cell["intended_deg_pct"].append(degradation_pct(recall, reference["recall"]))
        cell["unintended_deg_pct"].append(_mean(
            degradation_pct(row["auc"][task], reference["auc"][task]) for task in row["auc"]))
        cell["align_error"].append(_number(row["align_error"]))
        cell["recall"].append(recall)
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


def _pct(value: float, signed: bool = True, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(results: dict, summary: list[dict]) -> str:
    lines = [
        f"Dataset `{results['dataset']}`, preset `{results['preset']}`, {results['seeds']} seed(s); "
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
    lines += ["", *recall_by_version(results)]
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


AUC_FLOOR = 0.60  # consumers must be well above chance (0.5) for a ranking to mean anything
# What Keep-All (a model retrained on the new data) must do on the intended task before methods
# are ranked: beat the frozen M_0, and be at least level with the simple recommenders.
FLOOR_BASELINES = {"fix-m0": "beats", "popularity": "at least level", "bpr-mf": "at least level"}


def baseline_checks(intended: dict[str, dict]) -> dict[str, dict]:
    """method -> {rule, passed, mean, ...}: each floor baseline's intended degradation against
    Keep-All (negative: Keep-All better). "beats" needs the 95 % interval below 0 with two seeds
    or more (the mean below 0 with one); "at least level" needs the mean at or below 0 (then its
    interval reaches 0 or below too). A baseline the run left out is "missing": not checked."""
    checks = {}
    for method, rule in FLOOR_BASELINES.items():
        cell = intended.get(method)
        if cell is None:
            checks[method] = {"rule": rule, "passed": None, "missing": True}
            continue
        if rule == "beats":
            with_interval = cell.get("seeds", 1) >= 2 and not math.isnan(cell["ci_high"])
            passed = cell["ci_high"] < 0 if with_interval else cell["mean"] < 0
        else:
            passed = cell["mean"] <= 0
        checks[method] = {"rule": rule, "passed": bool(passed), **cell}
    return checks


def floor_verdict(checks: dict[str, dict], keep_auc: float) -> dict:
    """The floor's record, shared by one run (`sanity`) and merged seeds (`seed_sanity`):
    `passed` is None when a baseline was not run (a ranking then has no floor under it)."""
    fixed = checks.get("fix-m0", {})
    verdicts = [check["passed"] for check in checks.values()] + [keep_auc >= AUC_FLOOR]
    passed = False if False in verdicts else None if None in verdicts else True
    return {"keep_all_beats_fix_m0": fixed.get("passed"), "baselines": checks,
            "keep_all_auc": keep_auc, "auc_floor": AUC_FLOOR, "passed": passed}


def floor_text(floor: dict) -> str:
    parts = []
    for method, check in floor["baselines"].items():
        title = get_method(method).title
        if check.get("missing"):
            parts.append(f"Keep-All vs {title} ({check['rule']}): not checked ({method} was not "
                         "run)")
            continue
        parts.append(f"Keep-All vs {title} ({check['rule']}): "
                     f"{'yes' if check['passed'] else 'NO'} ({title}'s Recall@50 "
                     f"{_pct(check['mean'])} % against Keep-All's)")
    return "; ".join(parts + [f"Keep-All's consumers reach AUC "
                              f"{100 * floor['keep_all_auc']:.2f} (floor "
                              f"{100 * floor['auc_floor']:.0f})"]) + "."


def floor_of(results: dict, summary: list[dict]) -> dict:
    """The floor by intervals over seeds where the run has two or more, else by its means."""
    if results.get("seeds", 1) >= 2:
        from bc_ray.experiments.seeds import seed_sanity  # it builds on this module

        return seed_sanity(results)
    return sanity(summary)


def sanity(summary: list[dict]) -> dict:
    """The floor a data set must pass before methods are ranked on it (one run)."""
    rows = {row["method"]: row for row in summary}
    intended = {method: {"mean": row["intended_deg_pct"], "ci_low": math.nan,
                         "ci_high": math.nan, "seeds": 1}
                for method, row in rows.items() if method in FLOOR_BASELINES}
    return floor_verdict(baseline_checks(intended), rows["keep-all"]["auc"])


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
