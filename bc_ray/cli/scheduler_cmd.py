"""`bc-ray scheduler run|once` and `bc-ray status`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption, open_store
from bc_ray.cli.output import emit, key_values

app = typer.Typer(help="Run refreshes and version bumps as Ray jobs on a schedule.",
                  no_args_is_help=True)

AddressOption = Annotated[str, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                            help="Ray Jobs API address, e.g. http://HEAD:8265.")]
RefreshCron = Annotated[Optional[str], typer.Option(help="Cron for nightly refreshes.")]
BumpCron = Annotated[Optional[str], typer.Option(help="Cron for version bumps.")]


def _config(store, ray_address, refresh_cron, bump_cron, python, working_dir, train_args,
            refresh_args, max_attempts, backoff):
    from bc_ray.scheduler.config import SchedulerConfig

    return SchedulerConfig(store=store, ray_address=ray_address, refresh_cron=refresh_cron,
                           bump_cron=bump_cron, python=python, working_dir=working_dir,
                           train_args=(train_args or "").split(),
                           refresh_args=(refresh_args or "").split(),
                           max_attempts=max_attempts, backoff_s=backoff)


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
        backoff: Backoff = 60.0) -> None:
    """Run forever: each cron slot once, one job at a time across all schedulers."""
    from bc_ray.scheduler.scheduler import Scheduler

    config = _config(store, ray_address, refresh_cron, bump_cron, python, working_dir,
                     train_args, refresh_args, max_attempts, backoff)
    Scheduler(config).serve_forever()


@app.command("once")
def once(store: StoreOption, ray_address: AddressOption,
         kind: Annotated[str, typer.Option(help="refresh, bump, or auto (whatever is due).")
                         ] = "auto",
         refresh_cron: RefreshCron = "0 2 * * *", bump_cron: BumpCron = "0 3 * * 0",
         python: Python = "python", working_dir: WorkingDir = None, train_args: TrainArgs = None,
         refresh_args: RefreshArgs = None, max_attempts: Attempts = 3, backoff: Backoff = 60.0,
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """One pass (for cron or a Kubernetes CronJob): run what is due, or the given kind."""
    from bc_ray.scheduler.scheduler import Scheduler

    if kind not in ("auto", "refresh", "bump"):
        raise typer.BadParameter("choose refresh, bump or auto", param_hint="--kind")
    config = _config(store, ray_address, refresh_cron, bump_cron, python, working_dir,
                     train_args, refresh_args, max_attempts, backoff)
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
