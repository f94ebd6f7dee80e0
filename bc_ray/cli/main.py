"""Entry point of the `bc-ray` console script."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated, Optional

import typer

from bc_ray.cli import (
    benchmark_cmd,
    config_file,
    data_cmd,
    demo_cmd,
    model_cmd,
    publish_cmd,
    refresh_cmd,
    scheduler_cmd,
    serve_cmd,
    store_cmd,
    train_cmd,
)
from bc_ray.cli.common import JsonOption
from bc_ray.cli.output import emit
from bc_ray.exceptions import BcRayError, exit_status
from bc_ray.redaction import RedactingFilter, redact
from bc_ray.render import table

app = typer.Typer(
    help="bc_ray: backward-compatible embeddings on Ray. Retrain the embedding model as often "
         "as you like; every consumer keeps working.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command("demo")(demo_cmd.demo)
app.add_typer(data_cmd.app, name="data")
app.add_typer(benchmark_cmd.app, name="benchmark")
app.command("train")(train_cmd.train)
app.command("refresh")(refresh_cmd.refresh)
app.command("publish")(publish_cmd.publish)
app.command("serve")(serve_cmd.serve)
app.add_typer(scheduler_cmd.app, name="scheduler")
app.command("status")(scheduler_cmd.status)
app.command("versions")(store_cmd.versions)
app.command("export")(store_cmd.export)
app.command("gc")(store_cmd.gc)
app.command("rollback")(store_cmd.rollback)
app.add_typer(store_cmd.store_app, name="store")
app.add_typer(model_cmd.app, name="model")

config_app = typer.Typer(help="The optional bc_ray.yaml (--config or BC_RAY_CONFIG).",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def main(ctx: typer.Context,
         config: Annotated[Optional[str], typer.Option(
             "--config", envvar=config_file.CONFIG_ENV,
             help="bc_ray.yaml with the store, S3 endpoint, retention, scheduler crons and "
                  "landing zone, and defaults of any command's options; options given on "
                  "the command line override it.")] = None) -> None:
    """bc_ray: backward-compatible embeddings on Ray."""
    if config:
        loaded = config_file.apply(config, ctx.command)
        ctx.default_map = config_file.default_map(loaded)
        ctx.obj = loaded


@config_app.command("show")
def show_config(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every setting bc_ray.yaml can hold: its value now and where it comes from."""
    rows = config_file.merged(ctx.find_root().obj)
    emit(rows, as_json, table([[r["setting"], r["value"], r["source"]] for r in rows],
                              ["setting", "value", "source"]))


def run() -> None:
    """Console entry: bc_ray errors are printed as one clear line, never a traceback, and exit
    2, or 75 where a later try may pass (`exit_status`; a scheduler retries those and crashes,
    exit 1); whatever is printed (errors, logs, a crash's traceback) has URI credentials hidden."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("bc_ray").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    try:
        app()
    except BcRayError as exc:
        typer.secho(redact(f"error: {exc}"), err=True, fg=typer.colors.RED)
        sys.exit(exit_status(exc))
    except Exception:  # noqa: BLE001 - a bug: its traceback, with credentials hidden
        sys.stderr.write(redact(traceback.format_exc()))
        sys.exit(1)


if __name__ == "__main__":
    run()
