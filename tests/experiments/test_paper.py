"""A tiny run of the whole paper protocol: every stage, every output file."""

import json

import pytest

from bc_ray.core.consumers import ConsumerConfig
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError
from bc_ray.experiments.paper import Preset, chosen_lambdas, run_benchmark
from bc_ray.experiments.report import write_report
from bc_ray.experiments.seeds import merge
from tests.conftest import REPO

TINY = Preset("tiny", VersionSpec(num_layers=1, hidden_dim=8), 4,
              TrainConfig(epochs=4, batch_size=1024, lr=1e-2, eval_every=2, warmup_epochs=2,
                          posthoc_epochs=20),
              ConsumerConfig(epochs=5, patience=3), start=0.55, step=0.15, versions=3)


def test_tiny_benchmark_writes_every_output(small_snapshot, tmp_path):
    methods = ["non-bc", "post-lin-sloss", "bc-aligner", "fix-m0", "finetune-m0", "post-procrustes"]
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
    assert "| BC-Aligner |" in (tmp_path / "table.md").read_text()
    versions = {(r["method"], r["version"]) for r in results["runs"]}
    assert ("bc-aligner", 2) in versions and ("keep-all", 0) in versions


def test_seeds_run_apart_merge_into_a_paired_comparison(small_snapshot, tmp_path):
    """Issue 15: seeds as separate runs (--first-seed), merged; BC-Aligner against the other
    Keep-Latest methods seed by seed with a 95 % t-interval."""
    import subprocess
    import sys

    import numpy as np
    from bc_ray.experiments.seeds import paired_comparison, t_interval

    methods = ["non-bc", "bc-aligner"]
    parts = []
    for seed in (0, 1):
        result = run_benchmark(small_snapshot, methods, seeds=1, preset=TINY, first_seed=seed)
        assert {run["seed"] for run in result["runs"]} == {seed}
        assert all(run["stopped_epoch"] == 4 for run in result["runs"] if run["version"] > 0)
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
    assert (tmp_path / "bars.png").stat().st_size > 0
    saved = json.loads((tmp_path / "seeds.json").read_text())
    interval = saved["intervals"]["bc-aligner"]["sum_pct"]
    assert interval["seeds"] == 2 and interval["ci_low"] <= interval["mean"] <= interval["ci_high"]
    assert saved["sum_vs_bc_aligner"][0]["method"] == "non-bc"
    keep = [run for run in merged["runs"] if run["method"] == "keep-all" and run["version"] > 0]
    recall = saved["keep_all_absolute"]["recall_at_50"]
    assert recall["seeds"] == 2
    assert abs(recall["mean"] - 100 * np.mean([run["recall"] for run in keep])) < 1e-9
    assert f"Recall@50 {recall['mean']:.2f}" in printed.stdout


def test_recent_past_validation_and_a_lambda_grid(small_snapshot, tmp_path):
    """Issue 15: models are selected and stopped on a window before t_k (never the test period),
    lambda is chosen per method and seed from the grid by the validation sum, and the report
    carries the grid and the sanity floor."""
    import dataclasses

    from bc_ray.experiments.paper import prepare_seed, validation_sum

    preset = dataclasses.replace(TINY, validation="recent-past", validation_window=0.05,
                                 lam_grid=(1.0, 16.0),
                                 train=dataclasses.replace(TINY.train, patience=1))
    ctx = prepare_seed(small_snapshot, preset, 0)
    for version, (test, train) in enumerate(zip(ctx.splits, ctx.train_splits)):
        assert train.end == test.start  # validated on (t_k - 0.05, t_k], tested after t_k
        assert train.train_edges["t"].max() <= test.start
        assert test.eval_edges["t"].min() > train.end
    results = run_benchmark(small_snapshot, ["non-bc", "bc-aligner", "fix-m0"], seeds=1,
                            preset=preset)
    [grid] = results["lam_grid"]
    assert grid["method"] == "bc-aligner" and set(grid["validation_sum"]) == {"1.0", "16.0"}
    assert grid["chosen"] == max((1.0, 16.0), key=lambda lam: grid["validation_sum"][str(lam)])
    chosen = [r for r in results["runs"] if r["method"] == "bc-aligner"]
    assert {r["lam"] for r in chosen} == {grid["chosen"]}
    keep = [r for r in results["runs"] if r["method"] == "keep-all"]
    assert abs(validation_sum(chosen, keep) - grid["validation_sum"][str(grid["chosen"])]) < 1e-9
    assert all("val_recall" in r and "val_auc" in r for r in chosen if r["version"] > 0)
    write_report(results, str(tmp_path))
    table = (tmp_path / "table.md").read_text()
    assert "Sanity floor" in table and "bc-aligner: lambda chosen per seed" in table
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
