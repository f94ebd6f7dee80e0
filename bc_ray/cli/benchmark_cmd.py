"""`bc-ray benchmark`: reproduce the paper's protocol on a data set."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from bc_ray.cli.common import DATASET_HELP, ModelOption, model_family
from bc_ray.core.registry import DEFAULT_FAMILY

app = typer.Typer(help="Reproduce the paper's benchmark.", no_args_is_help=True)


Out = Annotated[str, typer.Option(
    help="Folder for results.json, summary.json, table.md and metrics.png.")]
Dataset = Annotated[str, typer.Option(help=DATASET_HELP)]
Methods = Annotated[Optional[str], typer.Option(
    help="Comma-separated method names (default: the six variants, the baselines, the post-hoc "
         "alternatives, the simple recommenders popularity and bpr-mf, and the counts "
         "reference).")]
Seeds = Annotated[int, typer.Option(help="Seeds to average over.")]
FirstSeed = Annotated[int, typer.Option(
    help="The first seed (runs on disjoint seeds, e.g. separate processes, merge with "
         "benchmarks/paper_seeds.py).")]
Quick = Annotated[bool, typer.Option(
    "--quick", help="Small models, short training: a few minutes on 2 cores.")]
Preset = Annotated[Optional[str], typer.Option(
    "--preset", help="full (the paper's sizes, 500 epochs), quick (same as --quick), or "
                     "converged (small models trained until validation stops improving, "
                     "selected on a window of the recent past before each version's time, "
                     "lambda from a grid on version 1's validation window).")]
Epochs = Annotated[Optional[int], typer.Option(
    help="Training epochs per version instead of the preset's (to check how a result depends "
         "on training length).")]
LamFrom = Annotated[Optional[str], typer.Option(
    help="Folder (or results.json) of an earlier run of the same preset and data set: reuse the "
         "lambda it chose per method on validation data instead of searching the grid again "
         "(later seeds then cost a third as much).")]
LamGrid = Annotated[Optional[str], typer.Option(
    help="Comma-separated lambdas to choose from on validation data instead of the preset's "
         "grid (converged preset).")]
Threads = Annotated[int, typer.Option(help="Torch threads.")]
Spec = Annotated[Optional[str], typer.Option(
    help="Version 0's spec in the family's key=value form (default: the preset's for "
         "graphsage, the family's default spec otherwise; keys not named keep that spec's "
         "values); later versions grow from it.")]


@app.command("paper")
def paper(
    out: Out,
    dataset: Dataset = "synthetic",
    methods: Methods = None,
    seeds: Seeds = 1,
    first_seed: FirstSeed = 0,
    quick: Quick = False,
    preset_name: Preset = None,
    epochs: Epochs = None,
    lam_from: LamFrom = None,
    lam_grid: LamGrid = None,
    threads: Threads = 2,
    model: ModelOption = DEFAULT_FAMILY,
    spec: Spec = None,
) -> None:
    """Versions at t = 0.5..0.9 with growing models; Table 3, summary.json and Figure 3."""
    import torch

    from bc_ray.data import load_dataset
    from bc_ray.experiments.benchmark import run_benchmark
    from bc_ray.experiments.paper import DEFAULT_METHODS
    from bc_ray.experiments.provenance import code_version
    from bc_ray.experiments.report import markdown_table, write_report

    _check_seeds(seeds, first_seed)
    torch.set_num_threads(threads)
    names = [m for m in (methods.split(",") if methods else DEFAULT_METHODS) if m.strip()]
    preset = _preset(quick, preset_name, epochs, lam_grid, model, spec)
    earlier = _earlier_run(lam_from, preset, model) if lam_from else None
    started, code = time.perf_counter(), code_version()  # the code as it started

    def progress(message: str) -> None:
        typer.echo(f"[{time.perf_counter() - started:7.1f}s] {message}", err=True)

    progress(f"loading {dataset}")
    snapshot = load_dataset(dataset)
    lam_chosen = None
    if earlier is not None:
        if earlier[0] != snapshot.meta.name:
            raise typer.BadParameter(f"that run is on data set {earlier[0]!r}, not "
                                     f"{snapshot.meta.name!r}", param_hint="--lam-from")
        lam_chosen = earlier[1]
        progress(f"lambda chosen earlier: {lam_chosen}")
    results = run_benchmark(snapshot, names, seeds, preset, progress, first_seed=first_seed,
                            lam_chosen=lam_chosen)
    words = ["bc-ray benchmark paper", f"--dataset {dataset}", f"--seeds {seeds}",
             f"--first-seed {first_seed}" if first_seed else "",
             "--quick" if quick else "", f"--preset {preset_name}" if preset_name else "",
             f"--epochs {epochs}" if epochs else "",
             f"--model {model}" if model != DEFAULT_FAMILY else "",
             f"--spec {spec}" if spec else "",
             f"--methods {methods}" if methods else "",
             f"--lam-grid {lam_grid}" if lam_grid else "",
             f"--lam-from {lam_from}" if lam_from else "", f"--out {out}"]
    results["command"] = " ".join(word for word in words if word)
    results["code"] = code
    results["model"] = {"family": model, "spec": preset.spec.to_dict()}
    results["seconds"] = time.perf_counter() - started
    summary = write_report(results, out)
    typer.echo(markdown_table(results, summary))


def _check_seeds(seeds: int, first_seed: int) -> None:
    if seeds < 1:
        raise typer.BadParameter("needs at least one seed", param_hint="--seeds")
    if first_seed < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--first-seed")


def _preset(quick: bool, name: str | None, epochs: int | None, lam_grid: str | None,
            model: str, spec: str | None):
    """The preset the options name, with their overrides, checked before any work starts."""
    import dataclasses

    from bc_ray.experiments.paper import PRESETS

    if name is not None and name not in PRESETS:
        raise typer.BadParameter(f"must be one of {sorted(PRESETS)}", param_hint="--preset")
    if quick and name not in (None, "quick"):
        raise typer.BadParameter("--quick is --preset quick", param_hint="--preset")
    preset = PRESETS[name or ("quick" if quick else "full")]
    if epochs is not None:
        if epochs < 1:
            raise typer.BadParameter("needs at least one epoch", param_hint="--epochs")
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, epochs=epochs))
    if lam_grid is not None:
        preset = _with_lam_grid(preset, lam_grid)
    model_family(model)
    return preset.with_model(model, spec)


def _with_lam_grid(preset, text: str):
    """The preset choosing lambda from `text`'s values (a preset with validation windows)."""
    import dataclasses

    from bc_ray.exceptions import ConfigError

    try:
        grid = tuple(sorted({float(value) for value in text.split(",") if value.strip()}))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint="--lam-grid") from None
    if not grid or any(not 0 < value < float("inf") for value in grid):
        raise typer.BadParameter("needs one or more lambdas > 0", param_hint="--lam-grid")
    try:
        return dataclasses.replace(preset, lam_grid=grid)
    except ConfigError as error:
        raise typer.BadParameter(f"{error} (use --preset converged)",
                                 param_hint="--lam-grid") from None


def _earlier_run(path: str, preset, model: str) -> tuple[str, dict[str, float]]:
    """(data set, method -> lambda) of an earlier run, checked before any work starts."""
    import os

    import orjson

    from bc_ray.exceptions import ConfigError
    from bc_ray.experiments.lambdas import LAM_RULE, chosen_lambdas

    file = os.path.join(path, "results.json") if os.path.isdir(path) else path
    try:
        with open(file, "rb") as handle:
            earlier = orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError) as error:
        raise typer.BadParameter(f"cannot read {file}: {error}", param_hint="--lam-from") from None
    if earlier.get("preset") != preset.name:
        raise typer.BadParameter(f"{file} is a {earlier.get('preset')!r} run, not "
                                 f"{preset.name!r}", param_hint="--lam-from")
    family = earlier.get("model", {}).get("family", DEFAULT_FAMILY)
    if family != model:
        raise typer.BadParameter(f"{file} is a run of model {family!r}, not {model!r}",
                                 param_hint="--lam-from")
    grid = [float(value) for value in earlier.get("lam_values", preset.lam_grid)]
    if grid != list(preset.lam_grid):
        raise typer.BadParameter(f"{file} chose lambda from {grid}, this run's grid is "
                                 f"{list(preset.lam_grid)} (give the same --lam-grid)",
                                 param_hint="--lam-from")
    if earlier.get("lam_rule") != LAM_RULE:
        raise typer.BadParameter(f"{file} chose lambda by rule {earlier.get('lam_rule')!r}, "
                                 f"not this version's {LAM_RULE!r}; run the grid again",
                                 param_hint="--lam-from")
    try:
        return earlier.get("dataset"), chosen_lambdas(earlier)
    except ConfigError as error:
        raise typer.BadParameter(f"{file}: {error}", param_hint="--lam-from") from None
