"""`bc-ray versions`, `bc-ray export`, `bc-ray gc`: the store as its users see it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import JsonOption, StoreOption, open_store, open_written_store
from bc_ray.cli.output import emit
from bc_ray.render import table


def versions_summary(state) -> list[dict]:
    rows = []
    for number, record in sorted(state.versions.items()):
        tables = {e: {"rows": t.rows, "refreshed_at": t.refreshed_at, "mode": t.mode}
                  for e in ("user", "item") if (t := state.table(number, e)) is not None}
        rows.append({"version": number, "status": record.status,
                     "current": number == state.current_version, "parent": record.parent,
                     "dim": record.dim, "family": record.family, "requires": record.requires,
                     "method": record.method,
                     "created_at": record.created_at,
                     "published_at": record.published_at,
                     "recall_at_50": record.metrics.get("recall_at_50"),
                     "align_error_rel": record.metrics.get("align_error_rel"),
                     "tables": tables,
                     "model_kept": "model" in record.files and not record.model_removed,
                     "reasons": record.reasons})
    return rows


def versions(store: StoreOption,
             as_json: JsonOption = False) -> None:
    """Every version: dimension, status, creation time, metrics, tables, which is current.

    The method is the one that made a version compatible with its parent (none for the
    first)."""
    rows = versions_summary(open_store(store).written_state())
    text = table([[("* " if r["current"] else "  ") + str(r["version"]), r["status"], r["dim"],
                   r["family"], r["method"] if r["parent"] is not None else "-",
                   r["created_at"][:19], r["recall_at_50"],
                   r["align_error_rel"],
                   ", ".join(f"{e}:{t['rows']}" for e, t in r["tables"].items()) or "-"]
                  for r in rows],
                 ["version", "status", "dim", "model", "method", "created", "Recall@50",
                  "align err (rel)", "tables"]) if rows else "no versions yet"
    emit(rows, as_json, text)


def export(store: StoreOption,
           out: Annotated[str, typer.Option(help="Where to write, outside the store: a "
                                                 "Parquet file, or a Delta table's folder (new, "
                                                 "empty or an earlier export's); path or s3:// "
                                                 "URI.")],
           entity: Annotated[Optional[str], typer.Option(
               help="user or item (default: item for parquet, both for delta).")] = None,
           version: Annotated[Optional[int], typer.Option(
               help="Version wanted (default: the latest).")] = None,
           fmt: Annotated[str, typer.Option(
               "--format", help="parquet (one file: id, embedding, source_version) or delta "
                                "(a Delta table partitioned by entity, both read from one "
                                "state of the store, replaced in one commit).")] = "parquet"
           ) -> None:
    """Materialise a ver-j compatible view (z~_j) for engines that cannot apply transforms."""
    from bc_ray.consumer.export import FORMATS, export_delta
    from bc_ray.consumer.reader import export_embeddings

    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    wanted = "latest" if version is None else version
    if fmt == "parquet":
        rows = export_embeddings(store, out, entity or "item", version)
        typer.echo(f"wrote {rows} {entity or 'item'} embeddings of version {wanted} to {out}")
        return
    counts = export_delta(store, out, version, (entity,) if entity else ("user", "item"))
    typer.echo(f"wrote a Delta table of version {wanted} embeddings to {out}: "
               + ", ".join(f"{n} {e}s" for e, n in counts.items()))


def gc(store: StoreOption,
       grace: Annotated[float, typer.Option(help="Only delete unreferenced run prefixes and "
                                                 "files older than this many seconds (finite; "
                                                 "at least 900 unless --force). What retention "
                                                 "unreferenced waits the store's own grace "
                                                 "(store config --grace-seconds).")
                        ] = 3600.0,
       force: Annotated[bool, typer.Option(
           "--force", help="Allow a grace below 900 s: only when no writer (refresh, "
                           "training, ingest) can be running.")] = False) -> None:
    """Apply retention and delete files no commit references.

    Those are crashed writers' run prefixes, and files left inside a referenced one by a
    retention or compaction that was killed."""
    from bc_ray.store.maintenance import apply_retention, collect_garbage

    target = open_store(store)  # also a first writer's staged files, before any commit
    orphans = collect_garbage(target, grace_seconds=grace, force=force)
    retention = apply_retention(target)
    typer.echo(f"retention: {len(retention.tables)} table(s), {len(retention.models)} "
               f"model(s) unreferenced, {len(retention.purged)} file(s) deleted; "
               f"{len(orphans)} unreferenced run prefix(es) or file(s) deleted")


def rollback(store: StoreOption,
             to: Annotated[Optional[int], typer.Option(
                 "--to", help="The version to make current again (default: the current "
                              "version's parent).")] = None,
             reason: Annotated[str, typer.Option(help="Recorded in the log.")] = "",
             as_json: JsonOption = False) -> None:
    """Make an earlier published version current again, when its model and tables are kept.

    Serve and readers follow on their next poll; the next bump trains against it."""
    from bc_ray.store.versions import rollback_version

    target = open_written_store(store)
    lineage = target.state().lineage()
    record = rollback_version(target, to, reason)
    undone = [v for v in lineage if v > record.version]
    emit({"current_version": record.version, "rolled_back": undone}, as_json,
         f"version {record.version} is current again (rolled back: "
         f"{', '.join(map(str, undone))}); Serve and readers follow on their next poll")


store_app = typer.Typer(help="The store's own settings, recorded in its log.",
                        no_args_is_help=True)


@store_app.command("config")
def config(store: StoreOption,
           keep_versions: Annotated[Optional[int], typer.Option(
               help="Published versions whose tables and models are kept (>= 1).")] = None,
           grace_seconds: Annotated[Optional[float], typer.Option(
               help="Seconds an unreferenced file is kept for readers of an older state "
                    "(finite, >= 0).")] = None,
           as_json: JsonOption = False) -> None:
    """Show the store's retention, or set it (recorded in the log).

    Every process (CLI, jobs, scheduler, gc) then applies the same policy whatever its
    environment says."""
    from bc_ray.store.store import RetentionPolicy, checked_keep_versions, checked_seconds

    if keep_versions is not None:
        checked_keep_versions(keep_versions, "--keep-versions")
    if grace_seconds is not None:
        checked_seconds(grace_seconds, "--grace-seconds")
    target = open_store(store)
    state = target.state()
    recorded = RetentionPolicy.of(state)
    if keep_versions is not None or grace_seconds is not None:
        current = recorded or RetentionPolicy()
        policy = RetentionPolicy(
            keep_versions=current.keep_versions if keep_versions is None else keep_versions,
            staging_grace_seconds=(current.staging_grace_seconds if grace_seconds is None
                                   else grace_seconds))
        state = target.configure(policy)
        recorded = RetentionPolicy.of(state)
    policy = recorded or RetentionPolicy.from_env() or RetentionPolicy()
    source = "log" if recorded else ("environment (recorded at the next write)"
                                     if RetentionPolicy.from_env() else "default")
    data = {"keep_versions": policy.keep_versions,
            "staging_grace_seconds": policy.staging_grace_seconds, "source": source}
    emit(data, as_json, f"keep_versions: {policy.keep_versions}\n"
                        f"staging_grace_seconds: {policy.staging_grace_seconds:g}\n"
                        f"source: {source}")


@store_app.command("mirror")
def mirror(store: StoreOption) -> None:
    """Bring the Delta Lake view of the current embedding tables (at STORE/delta) up to date.

    It follows every refresh and rollback by itself; this compares the actual Delta table (its
    version and files) with the current tables and repairs it: after a mirror that failed, a
    removed or overwritten table, or a store whose table was at the store root."""
    from bc_ray.store.delta import delta_uri
    from bc_ray.store.maintenance import mirror_embeddings

    target = open_written_store(store)
    version = mirror_embeddings(target)
    typer.echo("no embedding tables yet" if version is None
               else f"Delta table at {delta_uri(target)}: version {version}")
