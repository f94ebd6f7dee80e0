"""The landing zone's options, shared by `bc-ray data land` and `bc-ray scheduler run|once`; the
zone they describe (over a `--landing-config` file); and the rendering of one pass's report."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from bc_ray.cli.config_file import read_landing_file
from bc_ray.ingest.landing_config import (
    CHANGED_TABLE_HINT,
    DEFAULT_SETTLE_SECONDS,
    LandingConfig,
    LandingSettings,
)

Landing = Annotated[Optional[str], typer.Option(
    help="Landing zone of interactions (a folder or s3:// prefix that must exist): every "
         "complete file no batch took yet is ingested, one batch per file or partition folder.")]
LandingFile = Annotated[Optional[str], typer.Option(
    help="YAML with the landing zone's keys: edges, users, items, user_col, item_col, "
         "time_col, rating_col, time_unit, input_format, allow_old_times, require_success, "
         "settle_seconds (options override it).")]
LUserCol = Annotated[Optional[str], typer.Option(help="Landing: user id column.")]
LItemCol = Annotated[Optional[str], typer.Option(help="Landing: item id column.")]
LTimeCol = Annotated[Optional[str], typer.Option(help="Landing: time column.")]
LRatingCol = Annotated[Optional[str], typer.Option(help="Landing: rating column.")]
LTimeUnit = Annotated[Optional[str], typer.Option(help="Landing: s or ms.")]
LFormat = Annotated[Optional[str], typer.Option(help="Landing: parquet or csv.")]
RequireSuccess = Annotated[Optional[bool], typer.Option(
    "--require-success-marker",
    help="Landing: take a partition only once its folder holds _SUCCESS (Spark/Hadoop "
         "committers write it last).")]
LAllowOld = Annotated[Optional[bool], typer.Option(
    "--allow-old-times", help="Landing: accept interaction times before 1990.")]
SettleSeconds = Annotated[Optional[float], typer.Option(
    help="Landing: take a file only when it was not modified for this many seconds (default "
         f"{DEFAULT_SETTLE_SECONDS:g}), unless its folder holds _SUCCESS.")]


def load_landing(edges: str | None, config_file: str | None, **options: Any) -> LandingConfig:
    """The zone a `--landing-config` file and the command line describe: each option given (not
    None; `edges` is `--landing`) wins over the file's key. `options` are `LandingSettings`
    keys, checked like the file's."""
    settings = read_landing_file(config_file) if config_file else LandingSettings()
    given = LandingSettings.checked({"edges": edges or None, **options}, "landing options")
    return LandingConfig.of(settings.under(given))


def landing_values(landing: str | None, landing_config: str | None, user_col: str | None,
                   item_col: str | None, time_col: str | None, rating_col: str | None,
                   time_unit: str | None, input_format: str | None,
                   require_success: bool | None, settle_seconds: float | None,
                   allow_old_times: bool | None = None) -> LandingConfig | None:
    """The landing zone these option values describe, None when they name none (neither
    `--landing` nor `--landing-config`)."""
    if not (landing or landing_config):
        return None
    return load_landing(landing, landing_config, user_col=user_col, item_col=item_col,
                        time_col=time_col, rating_col=rating_col, time_unit=time_unit,
                        input_format=input_format, require_success=require_success,
                        settle_seconds=settle_seconds, allow_old_times=allow_old_times)


def report_text(report: dict) -> str:
    """The pass as four short sections: taken, skipped, refused, changed."""
    lines = [f"taken {len(report['taken'])}, skipped {report['skipped_count']}, refused "
             f"{len(report['refused'])}, changed {len(report['changed'])}"]
    for item in report["taken"]:
        lines.append(f"taken    {item['batch']}: {item['status']} as {item['batch_id']} "
                     f"({item['edges']} edges, {len(item['files'])} file(s))")
    lines += [f"skipped  {item['file']}: {item['reason']}" for item in report["skipped"]]
    for item in report["refused"]:
        where = item.get("file") or item["batch"]
        lines.append(f"refused  {where}: {item['error']}")
    for item in report["changed"]:
        hint = (f"; to ingest its new content as a corrected batch: {item['command']}"
                if item["command"] else f"; {CHANGED_TABLE_HINT}")
        lines.append(f"changed  {item['file']}: changed after it was ingested, not read "
                     f"again{hint}")
    return "\n".join(lines)
