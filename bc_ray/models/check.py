"""A model family checked against bc_ray's contract in one process, in seconds, without Ray:
`bc-ray model check NAME` and `check_family`.

A plug-in that breaks a rule otherwise fails on a cluster minutes into a bump or a refresh: two
ranks that take different step counts hang DDP, a weight one step leaves unused stops Ray Train,
an `affected` that misses an entity leaves a stale row an incremental refresh copies for ever.
Each rule (`check_rules.py`) is one check on a small synthetic graph (`check_bench.py`), said on
one line where it fails, so a team checks its family before anything reaches a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bc_ray.core.registry import family_source, get_family
from bc_ray.exceptions import BcRayError, ConfigError
from bc_ray.models.check_bench import Bench, NotApplicable, home_of, make_bench, said
from bc_ray.models.check_rules import NEEDS, RULES, Rule

CHECKS = ["loads"] + [name for name, _ in RULES]


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # passed | failed | skipped
    detail: str
    seconds: float


@dataclass
class FamilyReport:
    """What `check_family` found: each check's result, in the order they ran."""

    family: str
    source: str
    spec: dict[str, Any] | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "source": self.source, "spec": self.spec, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


def check_family(name: str, spec: str | None = None, *, seed: int = 0,
                 on_check: Callable[[CheckResult], None] | None = None) -> FamilyReport:
    """Run every rule of the model contract on the family called `name` (as `--model` names
    it) with `spec` (`key=value` text; default: the family's default spec); `on_check` hears
    each result as it comes. Nothing is written anywhere and no Ray cluster starts."""
    if seed < 0:
        raise ConfigError(f"the seed must be 0 or more, got {seed}")
    report = FamilyReport(name, family_source(name), None)

    def record(result: CheckResult) -> None:
        report.checks.append(result)
        if on_check is not None:
            on_check(result)

    def give_up(result: CheckResult) -> FamilyReport:
        record(result)
        for rule_name in CHECKS[len(report.checks):]:
            record(CheckResult(rule_name, "skipped", f"needs {result.check!r}, which did not "
                               "pass", 0.0))
        return report

    started = time.perf_counter()
    try:
        family = get_family(name)
    except BcRayError as error:
        return give_up(CheckResult("loads", "failed", said(error), _since(started)))
    record(CheckResult("loads", "passed", f"{type(family).__qualname__}, model API "
                       f"{family.api_version}, refresh strategy {family.refresh_strategy!r}",
                       _since(started)))
    started = time.perf_counter()
    try:
        chosen = family.parse_spec(spec) if spec else family.default_spec()
        report.spec = chosen.to_dict()
    except Exception as error:  # noqa: BLE001 - a plug-in's parser may raise anything
        return give_up(CheckResult("spec", "failed", said(error, home_of(family)),
                                   _since(started)))
    bench = make_bench(family, chosen, seed)
    for rule_name, rule in RULES:
        record(_run(rule_name, rule, bench, report.checks))
    return report


def _run(name: str, rule: Rule, bench: Bench, done: list[CheckResult]) -> CheckResult:
    needed = NEEDS.get(name)
    earlier = next((c for c in done if c.check == needed), None)
    if needed is not None and (earlier is None or earlier.status != "passed"):
        return CheckResult(name, "skipped", f"needs {needed!r}, which did not pass", 0.0)
    started = time.perf_counter()
    try:
        detail = rule(bench)
    except NotApplicable as reason:
        return CheckResult(name, "skipped", str(reason), _since(started))
    except Exception as error:  # noqa: BLE001 - a plug-in may raise anything: it is the finding
        return CheckResult(name, "failed", said(error, bench.home), _since(started))
    return CheckResult(name, "passed", detail, _since(started))


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
