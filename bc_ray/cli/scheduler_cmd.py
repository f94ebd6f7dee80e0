"""`bc-ray scheduler run|once` and `bc-ray status`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption, open_store
from bc_ray.cli.landing_options import (
    Landing,
    LAllowOld,
    LandingFile,
    LFormat,
    LItemCol,
    LRatingCol,
    LTimeCol,
    LTimeUnit,
    LUserCol,
    RequireSuccess,
    SettleSeconds,
    landing_values,
)
from bc_ray.cli.output import emit
from bc_ray.ingest.landing_config import LandingConfig
from bc_ray.render import key_values

app = typer.Typer(help="Run refreshes and version bumps as Ray jobs on a schedule.",
                  no_args_is_help=True)

AddressOption = Annotated[str, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                            help="Ray Jobs API address, e.g. http://HEAD:8265.")]
RefreshCron = Annotated[Optional[str], typer.Option(help="Cron for nightly refreshes.")]
BumpCron = Annotated[Optional[str], typer.Option(help="Cron for version bumps.")]


def _config(store, ray_address, refresh_cron, bump_cron, python, working_dir, train_args,
            refresh_args, max_attempts, backoff, landing: LandingConfig | None):
    from bc_ray.scheduler.config import SchedulerConfig

    return SchedulerConfig(store=store, ray_address=ray_address, refresh_cron=refresh_cron,
                           bump_cron=bump_cron, python=python, working_dir=working_dir,
                           train_args=_split(train_args, "--train-args"),
                           refresh_args=_split(refresh_args, "--refresh-args"),
                           max_attempts=max_attempts, backoff_s=backoff, landing=landing)


def _split(args: str | None, hint: str) -> list[str]:
    """Shell words, so a quoted value with spaces stays one argument."""
    import shlex

    from bc_ray.redaction import redact

    try:
        return shlex.split(args or "")
    except ValueError as exc:
        raise typer.BadParameter(f"cannot split {redact(args or '')!r} into arguments: {exc}",
                                 param_hint=hint) from None


Python = Annotated[str, typer.Option(help="Interpreter on the cluster.")]
WorkingDir = Annotated[Optional[str], typer.Option(
    help="Upload this folder as the jobs' working_dir (default: bc_ray installed in the image).")]
TrainArgs = Annotated[Optional[str], typer.Option(help="Extra flags for the train job.")]
RefreshArgs = Annotated[Optional[str], typer.Option(help="Extra flags for the refresh job.")]
Attempts = Annotated[int, typer.Option(help="Attempts per job before the run is failed.")]
Backoff = Annotated[float, typer.Option(help="Seconds before the first retry (doubles).")]

@app.command("run")
def run(store: StoreOption, ray_address: AddressOption,
        refresh_cron: RefreshCron = "0 2 * * *", bump_cron: BumpCron = "0 3 * * 0",
        python: Python = "python", working_dir: WorkingDir = None, train_args: TrainArgs = None,
        refresh_args: RefreshArgs = None, max_attempts: Attempts = 3,
        backoff: Backoff = 60.0, landing: Landing = None, landing_config: LandingFile = None,
        user_col: LUserCol = None, item_col: LItemCol = None, time_col: LTimeCol = None,
        rating_col: LRatingCol = None, time_unit: LTimeUnit = None,
        input_format: LFormat = None, require_success_marker: RequireSuccess = None,
        settle_seconds: SettleSeconds = None, allow_old_times: LAllowOld = None) -> None:
    """Run forever: each cron slot once, one job at a time across all schedulers."""
    from bc_ray.scheduler.scheduler import Scheduler

    config = _config(store, ray_address, refresh_cron, bump_cron, python, working_dir,
                     train_args, refresh_args, max_attempts, backoff,
                     landing_values(landing, landing_config, user_col, item_col, time_col,
                                    rating_col, time_unit, input_format, require_success_marker,
                                    settle_seconds, allow_old_times))
    Scheduler(config).serve_forever()


@app.command("once")
def once(store: StoreOption, ray_address: AddressOption,
         kind: Annotated[str, typer.Option(help="refresh, bump, or auto (whatever is due).")
                         ] = "auto",
         refresh_cron: RefreshCron = "0 2 * * *", bump_cron: BumpCron = "0 3 * * 0",
         python: Python = "python", working_dir: WorkingDir = None, train_args: TrainArgs = None,
         refresh_args: RefreshArgs = None, max_attempts: Attempts = 3, backoff: Backoff = 60.0,
         landing: Landing = None, landing_config: LandingFile = None, user_col: LUserCol = None,
         item_col: LItemCol = None, time_col: LTimeCol = None, rating_col: LRatingCol = None,
         time_unit: LTimeUnit = None, input_format: LFormat = None,
         require_success_marker: RequireSuccess = None, settle_seconds: SettleSeconds = None,
         allow_old_times: LAllowOld = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One pass (for cron or a Kubernetes CronJob): run what is due, or the given kind."""
    from bc_ray.scheduler.scheduler import Scheduler

    if kind not in ("auto", "refresh", "bump"):
        raise typer.BadParameter("choose refresh, bump or auto", param_hint="--kind")
    config = _config(store, ray_address, refresh_cron, bump_cron, python, working_dir,
                     train_args, refresh_args, max_attempts, backoff,
                     landing_values(landing, landing_config, user_col, item_col, time_col,
                                    rating_col, time_unit, input_format, require_success_marker,
                                    settle_seconds, allow_old_times))
    scheduler = Scheduler(config)
    scheduler.configure()
    results = scheduler.once(kind)
    emit(results, as_json, "\n".join(key_values({k: v for k, v in r.items() if k != "attempts"})
                                     for r in results) or "nothing due")
    if any(r["status"] == "failed" for r in results):
        raise typer.Exit(code=4)


def status(store: StoreOption,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Current version, last refresh, last and next scheduled runs, recent failures."""
    from bc_ray.scheduler.status import summarize

    summary = summarize(open_store(store))
    emit(summary, as_json, key_values(summary))
