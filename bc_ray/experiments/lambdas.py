"""How lambda is chosen for the jointly trained methods of the paper's protocol: from a grid, on
validation data before any test period it is applied to."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

import numpy as np

from bc_ray.core.evaluation import degradation_pct
from bc_ray.exceptions import ConfigError

# How lambda is chosen: on version 1's validation window (t_1 - w, t_1], which ends before the
# first test period lambda is applied to, so no tested edge has a say; then fixed for every later
# version. The largest lambda (the most compatible B_k) whose intended cost there stays within
# the budget wins: a rule on one side of a trade-off is stabler across seeds than the argmax of
# a sum whose terms are closer than their own noise.
LAM_RULE = "v1-intended-within-2pct"
LAM_BUDGET_PCT = 2.0


def version_validation(row: dict, keep: dict) -> tuple[float, float]:
    """(intended, unintended) degradation in % against Keep-All on one version's validation
    window."""
    intended = degradation_pct(row["val_recall"], keep["val_recall"])
    unintended = float(np.mean([degradation_pct(row["val_auc"][t], keep["val_auc"][t])
                                for t in row["val_auc"]]))
    return intended, unintended


def choose_lambda(intended: Mapping[float, float], budget_pct: float = LAM_BUDGET_PCT) -> float:
    """The largest lambda whose intended degradation stays within `budget_pct`; if none does,
    the least costly. A window too small to score (NaN: no validation user, or Keep-All's
    recall 0) decides nothing: then the smallest lambda."""
    scored = {lam: cost for lam, cost in intended.items() if not math.isnan(cost)}
    if not scored:
        return min(intended)
    within = [lam for lam, cost in scored.items() if cost >= -budget_pct]
    return max(within) if within else max(scored, key=scored.get)


def chosen_lambdas(results: dict) -> dict[str, float]:
    """Per method, the lambda an earlier run chose on validation data (the most frequent over
    its seeds; a tie goes to the larger: the more compatible B_k)."""
    by_method: dict[str, list[dict]] = {}
    for entry in results.get("lam_grid", []):
        if entry.get("validation_sum"):
            by_method.setdefault(entry["method"], []).append(entry)
    if not by_method:
        raise ConfigError("that run chose no lambda (it has no lambda grid on validation data)")
    out = {}
    for method, entries in by_method.items():
        votes = Counter(float(entry["chosen"]) for entry in entries)
        out[method] = max(votes, key=lambda lam: (votes[lam], lam))
    return out


def validation_sum(rows: list[dict], keep_rows: list[dict]) -> float:
    """Intended + unintended degradation against Keep-All on the validation windows, averaged
    over versions 1..K-1 (higher is better): a diagnostic of a whole lineage. Windows after
    version 1 lie inside earlier versions' test periods, so lambda is never chosen by it."""
    reference = {row["version"]: row for row in keep_rows}
    return float(np.mean([sum(version_validation(row, reference[row["version"]]))
                          for row in rows if row["version"] > 0]))
