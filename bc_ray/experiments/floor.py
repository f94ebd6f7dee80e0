"""The sanity floor a data set must pass before methods are ranked on it."""

from __future__ import annotations

import math

from bc_ray.core.methods import get_method


def pct(value: float | None, signed: bool = True, digits: int = 2) -> str:
    """A percentage for the tables; "n/a" where a row has no such metric."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


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
                     f"{pct(check['mean'])} % against Keep-All's)")
    return "; ".join(parts + [f"Keep-All's consumers reach AUC "
                              f"{100 * floor['keep_all_auc']:.2f} (floor "
                              f"{100 * floor['auc_floor']:.0f})"]) + "."


def sanity(summary: list[dict]) -> dict:
    """The floor a data set must pass before methods are ranked on it (one run)."""
    rows = {row["method"]: row for row in summary}
    intended = {method: {"mean": row["intended_deg_pct"], "ci_low": math.nan,
                         "ci_high": math.nan, "seeds": 1}
                for method, row in rows.items() if method in FLOOR_BASELINES}
    return floor_verdict(baseline_checks(intended), rows["keep-all"]["auc"])
