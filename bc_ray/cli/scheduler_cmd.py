"""`bc-ray scheduler run|once` and `bc-ray status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from bc_ray.cli.common import (
    JsonOption,
    StoreOption,
    default_of,
    open_written_store,
    option_group,
)
from bc_ray.cli.landing_options import (
    LAllowOld,
    Landing,
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
from bc_ray.scheduler.config import KINDS, SchedulerConfig

app = typer.Typer(help="Run refreshes and version bumps as Ray jobs on a schedule.",
                  no_args_is_help=True)

AddressOption = Annotated[str, typer.Option("--ray-address", envvar="RAY_ADDRESS",
                                            help="Ray Jobs API address, e.g. http://HEAD:8265.")]
RefreshCron = Annotated[Optional[str], typer.Option(help="Cron for nightly refreshes, in UTC.")]
BumpCron = Annotated[Optional[str], typer.Option(help="Cron for version bumps, in UTC.")]


def _config(store, ray_address, refresh_cron, bump_cron, python, working_dir, train_args,
            refresh_args, max_attempts, backoff, landing: LandingConfig | None,
            publish_from: str | None = None, publish_args: str | None = None):
    return SchedulerConfig(store=store, ray_address=ray_address, refresh_cron=refresh_cron,
                           bump_cron=bump_cron, python=python, working_dir=working_dir,
                           train_args=_split(train_args, "--train-args"),
                           refresh_args=_split(refresh_args, "--refresh-args"),
                           max_attempts=max_attempts, backoff_s=backoff, landing=landing,
                           publish_from=publish_from,
                           publish_args=_split(publish_args, "--publish-args"))


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
Kind = Annotated[str, typer.Option(help="refresh, bump, or auto (whatever is due). A kind "
                                         "named runs its latest slot unless a run of it "
                                         "succeeded or was rejected: a failed slot runs again.")]
PublishFrom = Annotated[Optional[str], typer.Option(
    help="Bumps publish each new folder <URI>/<name>/users/ + items/ of embeddings computed "
         "elsewhere (bc-ray publish), in name order, once each, instead of training.")]
PublishArgs = Annotated[Optional[str], typer.Option(
    help="Extra flags for the publish job, e.g. '--method post-lowrank'.")]


@dataclass(frozen=True)
class Schedule:
    """The options `scheduler run` and `scheduler once` share (after --store and
    --ray-address), declared once; defaults are `SchedulerConfig`'s."""

    refresh_cron: RefreshCron = default_of(SchedulerConfig, "refresh_cron")
    bump_cron: BumpCron = default_of(SchedulerConfig, "bump_cron")
    python: Python = default_of(SchedulerConfig, "python")
    working_dir: WorkingDir = default_of(SchedulerConfig, "working_dir")
    train_args: TrainArgs = None
    refresh_args: RefreshArgs = None
    max_attempts: Attempts = default_of(SchedulerConfig, "max_attempts")
    backoff: Backoff = default_of(SchedulerConfig, "backoff_s")
    landing: Landing = None
    landing_config: LandingFile = None
    user_col: LUserCol = None
    item_col: LItemCol = None
    time_col: LTimeCol = None
    rating_col: LRatingCol = None
    time_unit: LTimeUnit = None
    input_format: LFormat = None
    require_success_marker: RequireSuccess = None
    settle_seconds: SettleSeconds = None
    allow_old_times: LAllowOld = None
    publish_from: PublishFrom = default_of(SchedulerConfig, "publish_from")
    publish_args: PublishArgs = None

    def config(self, store: str, ray_address: str) -> SchedulerConfig:
        return _config(store, ray_address, self.refresh_cron, self.bump_cron, self.python,
                       self.working_dir, self.train_args, self.refresh_args,
                       self.max_attempts, self.backoff,
                       landing_values(self.landing, self.landing_config, self.user_col,
                                      self.item_col, self.time_col, self.rating_col,
                                      self.time_unit, self.input_format,
                                      self.require_success_marker, self.settle_seconds,
                                      self.allow_old_times),
                       self.publish_from, self.publish_args)


# How often `scheduler run` looks again at a store nothing has written yet.
UNWRITTEN_POLL_SECONDS = 60.0


def _fills_itself(config: SchedulerConfig) -> bool:
    """Whether the schedule writes a new store itself (a landing zone, --publish-from)."""
    return config.landing is not None or config.publish_from is not None


def _scheduler(config: SchedulerConfig):
    """The scheduler of `config`; a store nothing has written is refused (a mistyped --store
    would become a new store of leases and failed runs) unless a landing zone or
    --publish-from is what fills it."""
    from bc_ray.scheduler.scheduler import Scheduler

    if not _fills_itself(config):
        open_written_store(config.store)
    return Scheduler(config)


def wait_until_written(uri: str, poll_seconds: float) -> None:
    """Block until something writes the store at `uri`, saying so once: a long-running
    scheduler started before the first ingest waits for it instead of crash-looping, and
    writes nothing meanwhile (a mistyped --store stays untouched, and named in the log)."""
    import logging
    import time

    from bc_ray.exceptions import NotFoundError

    said = False
    while True:
        try:
            open_written_store(uri)
            if said:
                logging.getLogger(__name__).info("store %s written: scheduling", uri)
            return
        except NotFoundError as exc:
            if not said:
                logging.getLogger(__name__).warning(
                    "%s; waiting for it, checking every %.0f s", exc, poll_seconds)
                said = True
        time.sleep(poll_seconds)


@app.command("run")
@option_group
def run(store: StoreOption, ray_address: AddressOption, schedule: Schedule) -> None:
    """Run forever: each cron slot once, one job at a time across all schedulers."""
    from bc_ray.scheduler.scheduler import Scheduler

    config = schedule.config(store, ray_address)
    if not _fills_itself(config):  # waited for, so not refused as `_scheduler` would
        wait_until_written(config.store, UNWRITTEN_POLL_SECONDS)
    Scheduler(config).serve_forever()


@app.command("once")
@option_group
def once(store: StoreOption, ray_address: AddressOption, kind: Kind = "auto", *,
         schedule: Schedule, as_json: JsonOption = False) -> None:
    """One pass (for cron or a Kubernetes CronJob): run what is due, or the given kind."""
    if kind not in ("auto", *KINDS):
        raise typer.BadParameter("choose refresh, bump or auto", param_hint="--kind")
    scheduler = _scheduler(schedule.config(store, ray_address))
    scheduler.configure()
    results = scheduler.once(kind)
    emit(results, as_json, "\n".join(key_values({k: v for k, v in r.items() if k != "attempts"})
                                     for r in results) or "nothing due")
    if any(r["status"] == "failed" for r in results):
        raise typer.Exit(code=4)


def status(store: StoreOption, as_json: JsonOption = False) -> None:
    """Current version, last refresh, last and next runs, failures, refused landing batches."""
    from bc_ray.scheduler.status import summarize

    summary = summarize(open_written_store(store))
    emit(summary, as_json, key_values(summary))
