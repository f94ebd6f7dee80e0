"""Per-method mean ± sd and 95 % t-intervals over seeds of `bc-ray benchmark paper` runs, and
BC-Aligner against every other Keep-Latest method seed by seed: the paired difference of the
intended + unintended sum, its 95 % t-interval and how many seeds it wins; the same for the
consumer AUC alone (against `--reference` instead, and its sum too, when given), and for the
last-version alignment error of the multi-step against the single-step loss; and each consumer
task's AUC degradation on its own. Runs on disjoint seeds (`--first-seed`) are merged first.

    python benchmarks/paper_seeds.py OUT [OUT ...] [--figure PNG] [--save JSON]
        [--reference METHOD]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.experiments.report import lambda_summary  # noqa: E402
from bc_ray.experiments.seeds import (  # noqa: E402
    KEEP_LATEST,
    interval,
    keep_all_absolute,
    last_version_intervals,
    merge,
    method_intervals,
    paired_comparison,
    plot_intervals,
    seed_sanity,
    summary_per_seed,
    task_intervals,
)


def load(folder: str) -> dict:
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; run `bc-ray benchmark paper --out {folder}` first")
    with open(path, "rb") as handle:
        return orjson.loads(handle.read())


def cell(interval: dict, digits: int = 2, sign: str = "+") -> str:
    number = f"{sign}.{digits}f"
    if math.isnan(interval["mean"]):
        return "n/a"
    text = format(interval["mean"], number)
    if math.isnan(interval["sd"]):
        return text
    return (f"{text} ± {interval['sd']:.{digits}f} [{format(interval['ci_low'], number)}, "
            f"{format(interval['ci_high'], number)}]")


def seeds_cell(values: list[float]) -> str:
    """An absolute metric over the seeds that have it (a version without new test users, or a
    run saved before the metric was recorded, has NaN), saying so where some lack it."""
    present = [value for value in values if not math.isnan(value)]
    if not present:
        return "n/a"
    text = cell(interval(present), sign="")
    return text if len(present) == len(values) else f"{text} ({len(present)} seeds)"


def comparison_table(rows: list[dict], title: str, reference: str = "BC-Aligner") -> None:
    print(f"\n{title}\n")
    print(f"| Method | seeds | mean diff | 95 % interval | {reference} wins | finding |")
    print("|---|---:|---:|---|---:|---|")
    for row in rows:
        print(f"| {row['method']} | {row['seeds']} | {row['mean_diff']:+.3f} | "
              f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | {row['wins']}/{row['seeds']} | "
              f"{row['finding']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="+", help="folders `bc-ray benchmark paper --out` wrote")
    parser.add_argument("--figure", help="write the bar chart with error bars here (.png)")
    parser.add_argument("--save", help="write the merged intervals and comparisons here (.json)")
    parser.add_argument("--reference", default="bc-aligner",
                        help="the method every other is compared with, seed by seed, on the "
                             "consumer AUC alone (default: bc-aligner)")
    args = parser.parse_args()
    results = merge([load(folder) for folder in args.out])
    intervals = method_intervals(results)
    rows = summary_per_seed(results)
    floor = seed_sanity(results)
    print(f"{results['dataset']}, preset {results['preset']}, {results['seeds']} seed(s), "
          f"{results.get('seconds', 0.0) / 60:.1f} min of runs (process time, added up)\n")
    checks = "; ".join(
        f"vs {method} ({check['rule']}): not checked, not run" if check.get("missing") else
        f"vs {method} ({check['rule']}): {'yes' if check['passed'] else 'NO'}, its Recall@50 "
        f"degradation {cell(check)}" for method, check in floor["baselines"].items())
    verdict = {True: "passed", False: "NOT passed", None: "not checked"}[floor["passed"]]
    print(f"Sanity floor: {verdict} (Keep-All on the "
          f"intended task {checks or 'against no baseline'}; Keep-All consumer AUC "
          f"{100 * floor['keep_all_auc']:.2f}, floor {100 * floor['auc_floor']:.0f})\n")
    if not floor["passed"]:
        print("**Methods are not ranked on this data set**: the differences below are shown "
              "for completeness, not as findings.\n")
    absolute = keep_all_absolute(results)
    print(f"Keep-All (absolute, versions 1-{len(results['times']) - 2}): Recall@50 "
          f"{cell(absolute['recall_at_50'], sign='')}, consumer AUC "
          f"{cell(absolute['auc'], sign='')}\n")
    last_version = len(results["times"]) - 2
    print(f"Recall@50 (absolute, %, versions 1-{last_version}) over seeds\n")
    print("| Method | Recall@50 | test users seen before t_k | first seen in the period |")
    print("|---|---|---|---|")
    for method, by_seed in rows.items():
        values = {key: [100 * row[key] for row in by_seed.values()]
                  for key in ("recall_at_50", "recall_existing_at_50", "recall_new_at_50")}
        if not all(math.isnan(value) for value in values["recall_at_50"]):
            print(f"| {method} | " + " | ".join(map(seeds_cell, values.values())) + " |")
    print("\nmean ± sd [95 % t-interval] over seeds; degradations against Keep-All in %\n")
    print("| Method | Intended | Unintended | Sum | Align error (last) | sum per seed |")
    print("|---|---|---|---|---|---|")
    for method, by_seed in rows.items():
        if method == "keep-all":
            continue
        cells = intervals[method]
        sums = " / ".join("n/a" if math.isnan(row["sum_pct"]) else f"{row['sum_pct']:+.2f}"
                          for row in by_seed.values())
        print(f"| {method} | {cell(cells['intended_deg_pct'])} | "
              f"{cell(cells['unintended_deg_pct'])} | {cell(cells['sum_pct'])} | "
              f"{cell(cells['last_align_error'], 3, '')} | {sums} |")
    last = last_version_intervals(results)
    print(f"\nThe last version (v{last_version}) alone, mean ± sd [95 % t-interval] "
          "over seeds, degradation against Keep-All in %\n")
    print("| Method | Intended | Unintended |")
    print("|---|---|---|")
    for method, cells in last.items():
        print(f"| {method} | {cell(cells['intended_deg_pct'])} | "
              f"{cell(cells['unintended_deg_pct'])} |")
    tasks = task_intervals(results)
    print("\nConsumer AUC per task, against Keep-All in % (mean over versions "
          f"1-{last_version}), mean ± sd [95 % t-interval] over seeds\n")
    print("| Method | " + " | ".join(results["tasks"]) + " |")
    print("|---|" + "---|" * len(results["tasks"]))
    for method, cells in tasks.items():
        print(f"| {method} | " + " | ".join(cell(cells[task]) if task in cells else "n/a"
                                          for task in results["tasks"]) + " |")
    sums = paired_comparison(results)
    comparison_table(sums, "BC-Aligner minus each other Keep-Latest method (sum, %; positive: "
                           "BC-Aligner better)")
    beyond = tuple(m for m in results["methods"]
                   if m not in (*KEEP_LATEST, "keep-all") and not get_method(m).reference_only)
    extra = paired_comparison(results, others=beyond)
    comparison_table(extra, "BC-Aligner minus each method outside the paper's Keep-Latest set "
                            "(sum, %)")
    reference = get_method(args.reference)
    others = (*KEEP_LATEST, *beyond)
    unintended = paired_comparison(results, reference.name, others, key="unintended_deg_pct")
    comparison_table(unintended, f"{reference.title} minus each other method: consumer AUC "
                                 "alone (unintended, %)", reference.title)
    if reference.name != "bc-aligner":
        against = paired_comparison(results, reference.name, others)
        comparison_table(against, f"{reference.title} minus each other method (sum, %)",
                         reference.title)
    aligns = paired_comparison(results, others=("joint-lin-sloss",), key="last_align_error")
    comparison_table(aligns, "Multi-step (BC-Aligner) vs single-step (Joint-Lin-SLoss): "
                             "last-version alignment error (positive: multi-step lower)")
    if args.figure:
        plot_intervals(results, args.figure)
        print(f"\nfigure: {args.figure}")
    if args.save:
        with open(args.save, "wb") as handle:
            handle.write(orjson.dumps(
                {"dataset": results["dataset"], "preset": results["preset"],
                 "seeds": results["seeds"], "commands": results.get("commands"),
                 "code": results.get("code"),
                 "seconds": results.get("seconds"), "sanity": floor,
                 "keep_all_absolute": absolute, "intervals": intervals,
                 "last_version": last, "per_task": tasks,
                 "sum_vs_bc_aligner": sums, "sum_vs_bc_aligner_beyond": extra,
                 "reference": reference.name, "unintended_vs_reference": unintended,
                 "last_align_vs_single_step": aligns,
                 "lambda": lambda_summary(results)},
                option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


if __name__ == "__main__":
    main()
