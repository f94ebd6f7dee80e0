"""`bc-ray data`: ingest a team's own interactions (one batch, or a pass over a landing zone),
import public formats, generate synthetic data, describe and compact the current snapshot."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import JsonOption, StoreOption, open_store
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
    report_text,
)
from bc_ray.cli.output import emit
from bc_ray.data.mapping import ColumnMapping
from bc_ray.render import iso_time, key_values

app = typer.Typer(help="Ingest, create and inspect graph snapshots in a store.",
                  no_args_is_help=True)

UserCol = Annotated[str, typer.Option(help="Column holding the user id (edges and --users).")]
ItemCol = Annotated[str, typer.Option(help="Column holding the item id (edges and --items).")]
TimeCol = Annotated[str, typer.Option(help="Column holding the interaction time: integer "
                                           "seconds or milliseconds, or a date-time.")]
RatingCol = Annotated[Optional[str], typer.Option(help="Column holding a numeric rating "
                                                       "(default: every edge weighs 1).")]
TimeUnit = Annotated[str, typer.Option(help="Unit of an integer time column: s or ms.")]
InputFormat = Annotated[Optional[str], typer.Option(help="parquet or csv (default: by file "
                                                         "extension).")]
AllowOldTimes = Annotated[bool, typer.Option(
    "--allow-old-times", help="Accept interaction times before 1990 (from 1970). Without it they "
                              "are refused: they are nearly always a wrong --time-unit.")]


@app.command("ingest")
def ingest(
    store: StoreOption,
    edges: Annotated[str, typer.Option(help="Interactions: a file, a folder or a glob, local or "
                                            "s3://, Parquet or CSV.")],
    user_col: UserCol,
    item_col: ItemCol,
    time_col: TimeCol,
    users: Annotated[Optional[str], typer.Option(help="User table keyed by --user-col; other "
                                                      "columns are categorical features.")] = None,
    items: Annotated[Optional[str], typer.Option(help="Item table keyed by --item-col; other "
                                                      "columns are categorical features.")] = None,
    rating_col: RatingCol = ColumnMapping.rating_col,
    time_unit: TimeUnit = ColumnMapping.time_unit,
    input_format: InputFormat = ColumnMapping.input_format,
    allow_old_times: AllowOldTimes = ColumnMapping.allow_old_times,
    batch_id: Annotated[Optional[str], typer.Option(help="Id of this batch (default: a hash of "
                                                         "the inputs' content and of the column "
                                                         "mapping, time unit and the format each "
                                                         "file is read as). Ingesting an "
                                                         "id already in the log changes "
                                                         "nothing.")] = None,
    corrects: Annotated[Optional[list[str]], typer.Option(
        "--corrects", metavar="BATCH_ID",
        help="A batch that took earlier content of these files (repeatable; the landing "
             "report's command names it): interactions equal in user, item, time and rating to "
             "one of that batch are dropped (counted as already_in_corrected_batch), so each "
             "lands once.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add one batch of your own interactions (and user/item tables) to the store's snapshot."""
    from bc_ray.ingest.batch import ingest as ingest_batch
    from bc_ray.ingest.read import BatchInput
    from bc_ray.ingest.sources import local_or_uri

    mapping = ColumnMapping(user_col=user_col, item_col=item_col, time_col=time_col,
                            rating_col=rating_col, time_unit=time_unit, input_format=input_format,
                            allow_old_times=allow_old_times)
    request = BatchInput(edges=local_or_uri(edges), users=users and local_or_uri(users),
                         items=items and local_or_uri(items))
    outcome = ingest_batch(open_store(store), request, mapping, batch_id=batch_id,
                           corrects=tuple(corrects or ()))
    summary = outcome.to_dict()
    if outcome.status == "already ingested":
        headline = f"batch {outcome.batch_id} is already in the store: nothing changed"
    else:
        headline = f"ingested batch {outcome.batch_id} as snapshot {outcome.snapshot_id}"
    shown = dict(summary)  # unix seconds in JSON, as the log keeps them; dates as `data info`
    if "time_range" in shown:
        shown["time_range"] = [iso_time(t) for t in shown["time_range"]]
    emit(summary, as_json, f"{headline}\n{key_values(shown)}")


@app.command("land")
def land(
    store: StoreOption, landing: Landing = None, landing_config: LandingFile = None,
    user_col: LUserCol = None, item_col: LItemCol = None, time_col: LTimeCol = None,
    rating_col: LRatingCol = None, time_unit: LTimeUnit = None, input_format: LFormat = None,
    require_success_marker: RequireSuccess = None, settle_seconds: SettleSeconds = None,
    allow_old_times: LAllowOld = None,
    as_json: JsonOption = False,
) -> None:
    """One pass of landing-zone ingestion, without Ray (backfills, a plain cron).

    Prints what it took, skipped, refused and found changed; exits 4 when a batch was
    refused."""
    from bc_ray.ingest.landing import ingest_landing
    from bc_ray.ingest.sources import local_or_uri

    config = landing_values(
        landing and local_or_uri(landing), landing_config, user_col, item_col, time_col,
        rating_col, time_unit, input_format, require_success_marker, settle_seconds,
        allow_old_times)
    if config is None:
        raise typer.BadParameter("give the landing zone (--landing or --landing-config)",
                                 param_hint="--landing")
    report = ingest_landing(open_store(store), config).to_dict()
    emit(report, as_json, report_text(report))
    if report["refused"]:
        raise typer.Exit(code=4)


@app.command("compact")
def compact(
    store: StoreOption,
    target_rows: Annotated[int, typer.Option(help="Edges per merged segment (batches are never "
                                                  "split).")] = 5_000_000,
    as_json: JsonOption = False,
) -> None:
    """Merge many small ingested batches into fewer files, in one commit.

    The old files are deleted after the grace period."""
    from bc_ray.store.batches import compact as compact_batches

    summary = compact_batches(open_store(store), target_rows)
    emit(summary, as_json, key_values(summary))


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Option(
        "--format", help="movielens-100k, movielens-latest or amazon")],
    path: Annotated[str, typer.Option(help="Folder (or reviews file for amazon) to read.")],
    store: StoreOption,
    cutoff: Annotated[float, typer.Option(help="Visible fraction of the timeline (t_0).")] = 1.0,
) -> None:
    """Read a public data set into a snapshot and publish it to the store."""
    from bc_ray.data import build_snapshot, load_raw
    from bc_ray.store.snapshots import publish_snapshot

    if fmt == "synthetic":
        raise typer.BadParameter("use `bc-ray data synth` for synthetic data",
                                 param_hint="--format")
    snapshot = build_snapshot(load_raw(fmt, path)).with_cutoff(cutoff)
    record = publish_snapshot(open_store(store), snapshot)
    typer.echo(f"published snapshot {record.id}\n{key_values(record.stats)}")


@app.command("synth")
def synth(
    store: StoreOption,
    users: Annotated[int, typer.Option(help="Number of users.")] = 2_000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 1_500,
    edges: Annotated[int, typer.Option(help="Number of distinct user-item edges.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    cutoff: Annotated[float, typer.Option(help="Visible fraction of the timeline (t_0).")] = 1.0,
) -> None:
    """Generate a synthetic evolving marketplace and publish it as a snapshot."""
    from bc_ray.data import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate
    from bc_ray.store.snapshots import publish_snapshot

    config = SyntheticConfig(num_users=users, num_items=items, num_edges=edges, seed=seed)
    snapshot = build_snapshot(generate(config)).with_cutoff(cutoff)
    record = publish_snapshot(open_store(store), snapshot)
    typer.echo(f"published snapshot {record.id}\n{key_values(record.stats)}")


@app.command("info")
def info(
    store: StoreOption,
    as_json: JsonOption = False,
    snapshot_id: Annotated[Optional[str], typer.Option("--snapshot", help="Snapshot id.")] = None,
) -> None:
    """Counts, batches, time range, rating histogram and feature vocabularies of a snapshot."""
    from bc_ray.data.info import summarize
    from bc_ray.store.batches import batches_summary
    from bc_ray.store.snapshots import load_snapshot

    opened = open_store(store)
    state = opened.written_state()
    snapshot = load_snapshot(opened, snapshot_id, state=state)
    summary = summarize(snapshot)
    if snapshot.grows:
        summary.update(batches_summary(state, state.snapshot(snapshot_id)))
    emit(summary, as_json, key_values(summary))
