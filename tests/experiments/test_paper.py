"""A tiny run of the whole paper protocol: every stage, every output file."""

import json
import math

import numpy as np
import pytest
import torch

from bc_ray.core.consumers import TASKS, ConsumerConfig
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError
from bc_ray.experiments.lambdas import chosen_lambdas
from bc_ray.experiments.benchmark import run_benchmark
from bc_ray.experiments.paper import Preset
from bc_ray.experiments.report import write_report
from bc_ray.experiments.seeds import merge
from tests.conftest import REPO

TINY = Preset("tiny", VersionSpec(num_layers=1, hidden_dim=8), 4,
              TrainConfig(epochs=4, batch_size=1024, lr=1e-2, eval_every=2, warmup_epochs=2,
                          posthoc_epochs=20),
              ConsumerConfig(epochs=5, patience=3), start=0.55, step=0.15, versions=3)


def test_tiny_benchmark_writes_every_output(small_snapshot, tmp_path):
    methods = ["non-bc", "post-lin-sloss", "bc-aligner", "fix-m0", "finetune-m0", "post-procrustes",
               "popularity", "bpr-mf", "counts"]
    results = run_benchmark(small_snapshot, methods, seeds=1, preset=TINY)
    summary = write_report(results, str(tmp_path))
    for name in ("results.json", "summary.json", "table.md", "metrics.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert [r["method"] for r in rows] == ["keep-all"] + methods
    for row in rows:
        assert {"method", "intended_deg_pct", "unintended_deg_pct", "sum_pct",
                "align_error"} <= set(row)
    by_name = {r["method"]: r for r in summary}
    assert by_name["keep-all"]["recall_at_50"] > 0 and 0.3 < by_name["keep-all"]["auc"] < 1
    assert by_name["non-bc"]["intended_deg_pct"] == 0.0  # Keep-All's intended model is Non-BC's
    assert by_name["fix-m0"]["unintended_deg_pct"] == 0.0 and by_name["fix-m0"]["align_error"] == 0
    assert by_name["bc-aligner"]["align_error"] < by_name["non-bc"]["align_error"]
    table = (tmp_path / "table.md").read_text()
    assert "| BC-Aligner |" in table and "selection sees the test period" in table
    # The simple recommenders: a Recall@50 at every version, nothing for consumers to read.
    for name in ("popularity", "bpr-mf"):
        rows_of = [r for r in results["runs"] if r["method"] == name]
        assert [r["version"] for r in rows_of] == [0, 1, 2]
        assert all(0 < r["recall"] <= 1 and r["auc"] == {} for r in rows_of)
        assert by_name[name]["recall_at_50"] > 0
        assert by_name[name]["unintended_deg_pct"] != by_name[name]["unintended_deg_pct"]  # NaN
    assert all(r["mf_reg"] in (1e-3, 1e-2, 1e-1) for r in results["runs"]
               if r["method"] == "bpr-mf")
    assert "| Popularity | n/a |" not in table and "| BPR-MF |" in table
    assert "Recall@50 (absolute, %) by version" in table
    # The ceiling check: consumers of raw interaction counts, scored like the others.
    counts = [r for r in results["runs"] if r["method"] == "counts"]
    assert [r["version"] for r in counts] == [0, 1, 2] and all(set(r["auc"]) == set(TASKS)
                                                                for r in counts)
    assert 0.3 < by_name["counts"]["auc"] < 1 and f"AUC {100 * by_name['counts']['auc']:.2f}" \
        in table
    saved = json.loads((tmp_path / "results.json").read_text())
    floor = saved["sanity"]["baselines"]
    assert set(floor) == {"fix-m0", "popularity", "bpr-mf"}
    assert floor["fix-m0"]["rule"] == "beats" and floor["bpr-mf"]["rule"] == "at least level"
    def recall(method, version):
        [row] = [r for r in results["runs"] if (r["method"], r["version"]) == (method, version)]
        return row["recall"]

    for name in ("popularity", "bpr-mf", "fix-m0"):  # the floor's numbers, from the runs
        degradation = np.mean([100 * (recall(name, v) - recall("keep-all", v))
                               / recall("keep-all", v) for v in (1, 2)])
        assert abs(floor[name]["mean"] - degradation) < 1e-9

    versions = {(r["method"], r["version"]) for r in results["runs"]}
    assert ("bc-aligner", 2) in versions and ("keep-all", 0) in versions
    # Recall apart for test users seen before the period and first seen in it: the overall
    # Recall@50 is their users-weighted mean, so it lies between them.
    for row in results["runs"]:
        if row["method"] == "counts":
            continue
        parts = [row["recall_existing"], row["recall_new"]]
        parts = [p for p in parts if not math.isnan(p)]
        assert parts and min(parts) - 1e-9 <= row["recall"] <= max(parts) + 1e-9
    assert "first seen in the test period" in table and "| BPR-MF |" in table


def test_new_users_are_the_ones_first_seen_in_the_period(small_snapshot):
    from bc_ray.core.splits import period_split

    split = period_split(small_snapshot, 0.55, 0.7)
    first_t = small_snapshot.users["first_t"].to_numpy()
    new = split.new_users.numpy()
    assert new.size and ((first_t[new] > 0.55) & (first_t[new] <= 0.7)).all()
    assert ((first_t > 0.55) & (first_t <= 0.7)).sum() == new.size
    known_users = set(split.train_edges.filter(split.train_edges["t"] <= 0.55)["user_idx"])
    assert not known_users & set(new.tolist())  # nobody new had an edge before the period


def test_seeds_run_apart_merge_into_a_paired_comparison(small_snapshot, tmp_path):
    """Issue 15: seeds as separate runs (--first-seed), merged; BC-Aligner against the other
    Keep-Latest methods seed by seed with a 95 % t-interval."""
    import subprocess
    import sys

    import numpy as np
    from bc_ray.experiments.seeds import paired_comparison, t_interval

    methods = ["non-bc", "bc-aligner", "fix-m0", "popularity", "bpr-mf", "counts"]
    parts = []
    for seed in (0, 1):
        result = run_benchmark(small_snapshot, methods, seeds=1, preset=TINY, first_seed=seed)
        assert {run["seed"] for run in result["runs"]} == {seed}
        assert all(run["stopped_epoch"] == 4 for run in result["runs"]
                   if run["version"] > 0 and run["method"] in ("keep-all", "non-bc", "bc-aligner"))
        result["code"] = {"commit": f"commit-of-seed-{seed}", "dirty": False}  # as the CLI's
        write_report(result, str(tmp_path / f"seed{seed}"))
        parts.append(result)
    merged = merge(parts)
    assert merged["seeds"] == 2
    [row] = paired_comparison(merged)
    assert row["method"] == "non-bc" and row["seeds"] == 2 and 0 <= row["wins"] <= 2
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    with pytest.raises(ConfigError, match="seed"):
        merge([parts[0], parts[0]])
    mean, low, high = t_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / 5 ** 0.5  # t(0.975, 4 df)
    assert mean == 3.0 and abs(high - 3.0 - half) < 1e-9 and abs(3.0 - low - half) < 1e-9
    printed = subprocess.run([sys.executable, str(REPO / "benchmarks" / "paper_seeds.py"),
                              str(tmp_path / "seed0"), str(tmp_path / "seed1"),
                              "--figure", str(tmp_path / "bars.png"),
                              "--save", str(tmp_path / "seeds.json")],
                             capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert "2 seed(s)" in printed.stdout and "| non-bc | 2 |" in printed.stdout
    assert "| bpr-mf |" in printed.stdout and "nan" not in printed.stdout  # saved NaN is null
    assert (tmp_path / "bars.png").stat().st_size > 0
    saved = json.loads((tmp_path / "seeds.json").read_text())
    interval = saved["intervals"]["bc-aligner"]["sum_pct"]
    assert interval["seeds"] == 2 and interval["ci_low"] <= interval["mean"] <= interval["ci_high"]
    assert saved["sum_vs_bc_aligner"][0]["method"] == "non-bc"
    assert saved["code"] == [part["code"] for part in parts]  # each run's code, traceable
    keep = [run for run in merged["runs"] if run["method"] == "keep-all" and run["version"] > 0]
    recall = saved["keep_all_absolute"]["recall_at_50"]
    assert recall["seeds"] == 2
    assert abs(recall["mean"] - 100 * np.mean([run["recall"] for run in keep])) < 1e-9
    assert f"Recall@50 {recall['mean']:.2f}" in printed.stdout
    # The last version alone, seed by seed (the tables average versions 1..K-1).
    from bc_ray.experiments.report import per_version

    last = saved["last_version"]["bc-aligner"]["unintended_deg_pct"]
    by_seed = [per_version(part)["bc-aligner"][2]["unintended_deg_pct"] for part in parts]
    assert last["seeds"] == 2 and abs(last["mean"] - np.mean(by_seed)) < 1e-9
    assert "The last version (v2) alone" in printed.stdout
    # Each consumer task apart: its mean over tasks is the unintended degradation, seed by seed.
    tasks = saved["per_task"]["bc-aligner"]
    assert set(tasks) == set(merged["tasks"])
    overall = saved["intervals"]["bc-aligner"]["unintended_deg_pct"]["mean"]
    assert abs(np.mean([cell["mean"] for cell in tasks.values()]) - overall) < 1e-9
    assert "| bc-aligner | " + tasks["user-activity"]["mean"].__format__("+.2f") in printed.stdout
    assert saved["reference"] == "bc-aligner"
    alone = {row["method"]: row for row in saved["unintended_vs_reference"]}["non-bc"]
    assert alone["metric"] == "unintended_deg_pct" and alone["seeds"] == 2
    unintended = {m: saved["intervals"][m]["unintended_deg_pct"]["mean"]
                  for m in ("bc-aligner", "non-bc")}
    assert abs(alone["mean_diff"] - (unintended["bc-aligner"] - unintended["non-bc"])) < 1e-9


def test_recent_past_validation_and_a_lambda_grid(small_snapshot, tmp_path):
    """Issues 15 and 28: models are selected and stopped on a window before t_k (never the test
    period); lambda is chosen on version 1's validation window only (before any test period it
    is applied to), as the largest lambda whose intended cost there stays within 2 %, then fixed;
    the report carries the grid, its rule and the sanity floor."""
    import dataclasses

    from bc_ray.experiments.lambdas import (
        LAM_RULE,
        choose_lambda,
        validation_sum,
        version_validation,
    )
    from bc_ray.experiments.paper import _validation_score, keep_all_rows, prepare_seed

    preset = dataclasses.replace(TINY, validation="recent-past", validation_window=0.05,
                                 lam_grid=(1.0, 16.0), refit=True,
                                 train=dataclasses.replace(TINY.train, patience=1))
    with pytest.raises(ConfigError, match="refit"):
        dataclasses.replace(TINY, refit=True)  # the paper's protocol has no window to refit on
    ctx = prepare_seed(small_snapshot, preset, 0)
    for version, (test, train) in enumerate(zip(ctx.splits, ctx.train_splits)):
        assert train.end == test.start  # validated on (t_k - 0.05, t_k], tested after t_k
        assert train.train_edges["t"].max() <= test.start
        assert test.eval_edges["t"].min() > train.end
        assert float(ctx.known[version].edge_t.max()) <= test.start  # refit: nothing after t_k
    keep_rows = keep_all_rows(ctx, preset)  # scored on the window by the model selected there
    selected, final = ctx.fresh_selected[1].model, ctx.fresh[1].model
    assert not torch.equal(selected.embed(ctx.train_splits[1].graph)[1],
                           final.embed(ctx.train_splits[1].graph)[1])
    assert keep_rows[1]["val_recall"] == _validation_score(ctx, preset, 1, selected,
                                                           None)["val_recall"]
    messages = []
    results = run_benchmark(small_snapshot, ["non-bc", "bc-aligner", "fix-m0"], seeds=1,
                            preset=preset, progress=messages.append)
    # Each lambda trains version 1 only; the chosen lineage alone goes on.
    assert sum("version 1 with lambda" in m for m in messages) == 2
    [grid] = results["lam_grid"]
    assert results["lam_rule"] == grid["rule"] == LAM_RULE
    assert grid["method"] == "bc-aligner" and set(grid["validation_intended"]) == {"1.0", "16.0"}
    intended = {float(lam): cost for lam, cost in grid["validation_intended"].items()}
    assert grid["chosen"] == choose_lambda(intended)
    chosen = [r for r in results["runs"] if r["method"] == "bc-aligner"]
    assert {r["lam"] for r in chosen} == {grid["chosen"]} and len(chosen) == 3
    keep = [r for r in results["runs"] if r["method"] == "keep-all"]
    first = version_validation(chosen[1], keep[1])
    assert first == (grid["validation_intended"][str(grid["chosen"])],
                     grid["validation_unintended"][str(grid["chosen"])])
    assert math.isfinite(validation_sum(chosen, keep))  # a diagnostic of the whole lineage
    assert all("val_recall" in r and "val_auc" in r for r in chosen if r["version"] > 0)
    write_report(results, str(tmp_path))
    table = (tmp_path / "table.md").read_text()
    assert "Sanity floor" in table and "bc-aligner: lambda chosen per seed" in table
    assert LAM_RULE in table and "selection sees the test period" not in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["sanity"]) >= {"keep_all_beats_fix_m0", "keep_all_auc", "passed"}

    # Later seeds reuse the lambda seed 0 chose on validation (no grid), and merge with it.
    assert chosen_lambdas(saved) == {"bc-aligner": grid["chosen"]}
    later = run_benchmark(small_snapshot, ["non-bc", "bc-aligner"], seeds=1, preset=preset,
                          first_seed=1, lam_chosen=chosen_lambdas(saved))
    [reused] = later["lam_grid"]
    assert reused["chosen_earlier"] and reused["validation_sum"] == {}
    assert {r["lam"] for r in later["runs"] if r["method"] == "bc-aligner"} == {grid["chosen"]}
    assert len(merge([results, later])["lam_grid"]) == 2
    with pytest.raises(ConfigError, match="no lambda"):
        chosen_lambdas(later)
    with pytest.raises(ConfigError, match="lam_rule"):  # a run by the old rule does not merge
        merge([results, {**later, "lam_rule": None}])


def test_a_floor_with_a_baseline_left_out_is_not_checked():
    from bc_ray.experiments.report import sanity

    keep = {"method": "keep-all", "intended_deg_pct": 0.0, "auc": 0.7}
    fixed = {"method": "fix-m0", "intended_deg_pct": -5.0}
    floor = sanity([keep, fixed])
    assert floor["passed"] is None and floor["baselines"]["bpr-mf"]["missing"]
    assert floor["keep_all_beats_fix_m0"] is True
    everything = [keep, fixed, {"method": "popularity", "intended_deg_pct": -20.0},
                  {"method": "bpr-mf", "intended_deg_pct": 0.5}]
    assert sanity(everything)["passed"] is False  # BPR-MF beats Keep-All
    everything[-1]["intended_deg_pct"] = -0.5
    assert sanity(everything)["passed"] is True
    assert sanity([{**keep, "auc": 0.55}, *everything[1:]])["passed"] is False


def test_the_rule_takes_the_largest_lambda_within_the_intended_budget():
    from bc_ray.experiments.lambdas import choose_lambda

    assert choose_lambda({1.0: -0.5, 4.0: -1.9, 16.0: -2.5, 64.0: -6.0}) == 4.0
    assert choose_lambda({1.0: 0.3, 16.0: 0.0}) == 16.0  # no cost at all: the most compatible
    assert choose_lambda({4.0: -3.0, 1.0: -2.1}) == 1.0  # none within: the least costly
    assert choose_lambda({1.0: -0.5, 4.0: -2.5, 16.0: -1.0}) == 16.0
    assert choose_lambda({1.0: -4.0, 4.0: -2.5, 16.0: -9.0}) == 4.0  # none within: least costly
    nan = float("nan")
    assert choose_lambda({1.0: nan, 4.0: -0.5, 16.0: nan}) == 4.0  # an unscored one is skipped
    assert choose_lambda({4.0: nan, 1.0: nan}) == 1.0


def test_user_task_consumers_stop_early_on_their_own_slice(small_snapshot):
    """Issue 28: no consumer is stopped on data of a period it is scored on. The consumers are
    trained from period 0 alone (version 1's period is never handed over), user tasks validated
    on a seeded 20 % of period 0's users."""
    from bc_ray.core.splits import period_split
    from bc_ray.experiments.paper import CONSUMER_HOLDOUT, train_consumers, user_holdout

    split = period_split(small_snapshot, 0.55, 0.7)
    z = (torch.randn(split.graph.num_users, 4), torch.randn(split.graph.num_items, 4))
    consumers = train_consumers(split, z, ConsumerConfig(epochs=2, patience=1))
    assert set(consumers) == set(TASKS)
    mask = user_holdout(5000, seed=3)
    assert torch.equal(mask, user_holdout(5000, seed=3))
    assert abs(float(mask.float().mean()) - CONSUMER_HOLDOUT) < 0.03


def test_refit_trains_the_selected_setting_on_the_validation_window_too(small_snapshot):
    """Issue 28: with recent-past validation the newest edges are held out to select M_k; with
    `refit`, the selected epoch count is trained again on every edge up to t_k (and none
    after), so an item seen only in the window gets learnt (its ID row is exactly zero in the
    selected model) and one first seen after t_k does not."""
    import dataclasses

    from bc_ray.core.graph import build_graph
    from bc_ray.core.methods import get_method
    from bc_ray.core.splits import period_split
    from bc_ray.data.timeline import edges_until
    from bc_ray.experiments.paper import fit_version

    preset = dataclasses.replace(TINY, validation="recent-past", validation_window=0.1,
                                 refit=True)
    known_edges = edges_until(small_snapshot, 0.7)
    known = build_graph(small_snapshot, known_edges, now=0.7)
    train = period_split(small_snapshot, 0.6, 0.7)
    final, selected = fit_version(preset, get_method("non-bc"), preset.spec_at(0), known, train,
                                  preset.train, None)
    window_only = sorted(set(known_edges["item_idx"].to_list())
                         - set(train.train_edges["item_idx"].to_list()))
    assert window_only
    rows = torch.tensor(window_only)
    assert torch.count_nonzero(selected.model.ids["item"].weight[rows]) == 0
    assert torch.count_nonzero(final.model.ids["item"].weight[rows]) > 0
    later = sorted(set(small_snapshot.edges["item_idx"].to_list())
                   - set(known_edges["item_idx"].to_list()))  # first seen after t_k
    assert later and torch.count_nonzero(final.model.ids["item"].weight[torch.tensor(later)]) == 0
    assert final.result.selected_epoch == selected.result.selected_epoch
    assert len(final.result.history) == selected.result.selected_epoch  # the same epoch count
    without, same = fit_version(dataclasses.replace(preset, refit=False), get_method("non-bc"),
                                preset.spec_at(0), known, train, preset.train, None)
    assert without is same
