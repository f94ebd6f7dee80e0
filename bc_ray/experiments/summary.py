"""Benchmark runs reduced to per-version and per-method degradations against Keep-All."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

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
        for kind in ("recall_existing", "recall_new"):  # runs before issue 28 have neither
            cell[kind].append(_number(row.get(kind)))
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
                     "recall_existing_at_50": _mean(c["recall_existing"] for c in later),
                     "recall_new_at_50": _mean(c["recall_new"] for c in later),
                     "auc": _mean(c["auc"] for c in later)})
    return rows
