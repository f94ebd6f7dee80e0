"""`bc-ray model check` and `check_family` (bc_ray/models/check.py): every family this
installation has keeps the model contract, and a family that breaks a rule is told which, in
one line, where it broke it, with the checks that depend on it skipped. No Ray: the point of
the check is that a team runs it before anything reaches a cluster."""

from __future__ import annotations

import functools
import json

import pytest
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.exceptions import ConfigError
from bc_ray.models import family_names, get_family
from bc_ray.models.check import CHECKS, check_family
from bc_ray.models.check_rules import NEEDS

runner = CliRunner()
ALL = CHECKS
BROKEN = "tests.models.broken_families:"


def _statuses(report) -> dict[str, str]:
    return {c.check: c.status for c in report.checks}


@functools.lru_cache(maxsize=None)
def _checked(name: str):
    """One check of each installed family per session (two tests read GraphSAGE's)."""
    return check_family(name)


@pytest.mark.parametrize("name", sorted(set(family_names()) | {"tiny"}))
def test_every_installed_family_keeps_the_contract(name):
    report = _checked(name)
    assert [c.check for c in report.checks] == ALL
    assert report.ok, [c for c in report.checks if c.status == "failed"]
    for check in report.checks:
        assert check.detail, check  # what was checked, or why it did not apply
    skipped = {c.check for c in report.checks if c.status == "skipped"}
    assert skipped <= {"warm-start", "incremental"}, skipped
    if name == "tiny":
        assert skipped == {"warm-start"}  # FamilyBase's default: no warm start


def test_graphsage_incremental_check_leaves_rows_to_copy():
    """The synthetic graph is sparse enough that new interactions leave a 2-layer GNN's other
    rows alone: the incremental check compares real rows, not an empty set."""
    (incremental,) = [c for c in _checked("graphsage").checks if c.check == "incremental"]
    kept = int(incremental.detail.split("the other ")[1].split(" rows")[0])
    assert incremental.status == "passed" and kept > 50, incremental.detail


@pytest.mark.parametrize("family, spec, failed, message", [
    ("UnevenRanks", None, "ranks", "every rank must take as many"),
    ("UnusedWeight", None, "train", "without a gradient (model.unused.weight"),
    ("ForgetfulSpec", "dim=12", "spec", "does not survive the version record"),
    ("LossyLightModel", None, "bytes", "from_bytes(light=True)'s model differs"),
    ("SortedEmbed", None, "refresh", "for a shuffled run of nodes differs from the expected "
                                     "rows by up to"),
    ("UnpicklableInputs", None, "refresh", "cannot be pickled"),
    ("StaleItems", None, "incremental", "row(s) outside affected() changed"),
    ("ForgetsNewItems", None, "incremental", "entities added or changed since"),
    ("BuildFails", None, "build", "ValueError: this model needs a GPU (at "),
    ("FixedVocabulary", None, "build", "cannot embed a graph with entities newer than itself"),
    ("UsedEveryOtherStep", None, "train", "without a gradient (model.scale)"),
    ("StridedRanks", None, "ranks", "with 3 ranks and batch size"),
    ("AffectedOutOfRange", None, "incremental", "node ids outside 0.."),
    ("ChangedFeaturesNotSpread", None, "incremental", "row(s) outside affected() changed"),
    ("BytesForgetTheSpec", None, "bytes", "version 1: from_bytes(light=False) cannot read"),
    ("NaNLoss", None, "train", "the task's loss is not finite on its first batch"),
    ("NoFineTune", None, "fine-tune", "after fine_tune_from(M_0) differs from the expected"),
])
def test_a_broken_rule_is_named_and_what_needs_it_is_skipped(family, spec, failed, message):
    report = check_family(BROKEN + family, spec)
    statuses = _statuses(report)
    assert not report.ok
    assert [name for name, status in statuses.items() if status == "failed"] == [failed]
    (result,) = [c for c in report.checks if c.check == failed]
    assert message in result.detail, result.detail
    assert "\n" not in result.detail
    dependants = [c for c in report.checks[ALL.index(failed) + 1:] if c.status == "skipped"
                  and "did not pass" in c.detail]
    if failed in NEEDS.values():  # a rule others need
        assert dependants, statuses


@pytest.mark.parametrize("family, where", [("BuildFails", "in build)"),
                                           ("FixedVocabulary", "in entities)")])
def test_the_plugins_own_line_is_named_not_the_library_it_called(family, where):
    """FixedVocabulary's IndexError is raised inside torch; the line named is the plug-in's."""
    (build,) = [c for c in check_family(BROKEN + family).checks if c.check == "build"]
    assert "broken_families.py:" in build.detail and where in build.detail, build.detail


@pytest.mark.parametrize("family", ["SparseSometimes"])
def test_no_false_alarm_on_what_bc_ray_allows(family):
    """A row-sparse weight that skips a step is averaged by bc_ray, not by DDP: allowed."""
    report = check_family(BROKEN + family)
    assert report.ok, [c for c in report.checks if c.status == "failed"]


def test_a_model_whose_rows_follow_the_graph_passes_with_the_affected_it_needs():
    """The positive control of the incremental rule: the broken variants above differ from it
    in `affected` alone."""
    report = check_family(BROKEN + "Neighbourly")
    assert report.ok, [c for c in report.checks if c.status == "failed"]
    (incremental,) = [c for c in report.checks if c.check == "incremental"]
    assert incremental.status == "passed" and "the other 0 rows" not in incremental.detail


def test_a_file_path_for_a_module_says_how_to_name_it():
    report = check_family("/tmp/lab/two_tower.py:TwoTower")
    assert "is a file, not a module: put its folder on PYTHONPATH and name it as " \
           "two_tower:TwoTower" in report.checks[0].detail


def test_a_spec_number_the_version_record_cannot_hold_is_refused():
    with pytest.raises(ConfigError, match="must be a finite number"):
        get_family("sequence").parse_spec("temperature=inf")


def test_an_unknown_family_fails_to_load_and_nothing_else_runs():
    report = check_family("nosuch")
    assert [(c.check, c.status) for c in report.checks] == [("loads", "failed")] + [
        (name, "skipped") for name in ALL[1:]]
    assert "unknown model family 'nosuch'" in report.checks[0].detail


def test_cli_check_prints_each_result_and_exits_by_the_outcome():
    good = runner.invoke(app, ["model", "check", "tiny", "--spec", "dim=12"])
    assert good.exit_code == 0, good.output
    assert "tiny (bc-ray-tiny-family 0.1): 10 passed, 0 failed, 1 skipped" in good.output
    assert "passed  incremental" in good.output
    bad = runner.invoke(app, ["model", "check", BROKEN + "UnevenRanks", "--json"])
    assert bad.exit_code == 1, bad.output
    body = json.loads(bad.output)
    assert body["ok"] is False and body["spec"] == {"dim": 8}
    assert {c["check"]: c["status"] for c in body["checks"]}["ranks"] == "failed"


def test_cli_list_names_each_family_and_its_source():
    result = runner.invoke(app, ["model", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["family"]: r for r in json.loads(result.output)}
    assert rows["graphsage"]["source"] == "built-in"
    assert rows["graphsage"]["refresh_strategy"] == "layerwise"
    assert rows["tiny"]["source"] == "bc-ray-tiny-family 0.1" and rows["tiny"]["loads"]
