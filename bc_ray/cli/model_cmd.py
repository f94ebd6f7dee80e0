"""`bc-ray model list` and `bc-ray model check`: which model families this installation has,
and whether one keeps bc_ray's contract, in seconds and without a cluster."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import JsonOption
from bc_ray.cli.output import emit, emit_json
from bc_ray.render import table

app = typer.Typer(help="Model families: which this installation has, and whether one keeps "
                       "bc_ray's model contract.", no_args_is_help=True)


@app.command("list")
def list_families(as_json: JsonOption = False) -> None:
    """Every installed family, where it comes from, and whether it loads here.

    The built-ins and every bc_ray.models entry point, each imported (a module:Class is named
    to --model directly and is not listed)."""
    from bc_ray.core.registry import family_names, family_source, get_family
    from bc_ray.exceptions import ConfigError

    rows = []
    for name in family_names():
        row = {"family": name, "source": family_source(name), "loads": True, "error": None,
               "refresh_strategy": None, "api_version": None}
        try:
            family = get_family(name)
            row.update(refresh_strategy=family.refresh_strategy, api_version=family.api_version)
        except ConfigError as error:
            row.update(loads=False, error=str(error))
        rows.append(row)
    text = table([[r["family"], r["source"], "yes" if r["loads"] else f"no: {r['error']}",
                   r["refresh_strategy"] or "-", r["api_version"] or "-"] for r in rows],
                 ["family", "source", "loads", "refresh", "model API"])
    emit(rows, as_json, text)


@app.command("check")
def check(
    family: Annotated[str, typer.Argument(
        help="The family as --model names it: graphsage, sequence, an entry point's name, or "
             "package.module:Class.", show_default=False)],
    spec: Annotated[Optional[str], typer.Option(
        help="The spec to check, as --spec takes it (default: the family's default).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic graph and training.",
                                      min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """Check a model family against bc_ray's contract, in seconds, without Ray.

    On a small synthetic graph, in one process: its spec through a version record, build and
    embed, equal steps on every rank, every weight trained, BC-Aligner against an earlier
    version, the model as bytes, fine-tune and warm start, refresh runs and incremental
    refresh. Exits 1 if a check fails."""
    from bc_ray.models.check import check_family

    def say(result) -> None:
        typer.echo(f"{result.status:>7}  {result.check:<11} {result.seconds:6.2f} s  "
                   f"{result.detail}")

    report = check_family(family, spec, seed=seed, on_check=None if as_json else say)
    if as_json:
        emit_json(report.to_dict())
    else:
        failed = sum(c.status == "failed" for c in report.checks)
        passed = sum(c.status == "passed" for c in report.checks)
        source = "" if report.source == family else f" ({report.source})"
        typer.echo(f"{family}{source}: {passed} passed, {failed} failed, "
                   f"{len(report.checks) - passed - failed} skipped")
    if not report.ok:
        raise typer.Exit(1)
