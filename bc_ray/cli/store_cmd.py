"""`bc-ray versions`, `bc-ray export`, `bc-ray gc`: the store as its users see it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption, open_store
from bc_ray.cli.output import emit, table


def versions_summary(state) -> list[dict]:
    rows = []
    for number, record in sorted(state.versions.items()):
        tables = {e: {"rows": t.rows, "refreshed_at": t.refreshed_at, "mode": t.mode}
                  for e in ("user", "item") if (t := state.table(number, e)) is not None}
        rows.append({"version": number, "status": record.status,
                     "current": number == state.current_version, "parent": record.parent,
                     "dim": record.dim, "method": record.method, "created_at": record.created_at,
                     "published_at": record.published_at,
                     "recall_at_50": record.metrics.get("recall_at_50"),
                     "align_error_rel": record.metrics.get("align_error_rel"),
                     "tables": tables, "model_kept": not record.model_removed,
                     "reasons": record.reasons})
    return rows


def versions(store: StoreOption,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every version: dimension, status, creation time, metrics, tables, which is current."""
    rows = versions_summary(open_store(store).state())
    text = table([[("* " if r["current"] else "  ") + str(r["version"]), r["status"], r["dim"],
                   r["method"], r["created_at"][:19], r["recall_at_50"], r["align_error_rel"],
                   ", ".join(f"{e}:{t['rows']}" for e, t in r["tables"].items()) or "-"]
                  for r in rows],
                 ["version", "status", "dim", "method", "created", "Recall@50",
                  "align err (rel)", "tables"]) if rows else "no versions yet"
    emit(rows, as_json, text)


def export(store: StoreOption,
           out: Annotated[str, typer.Option(help="Parquet file to write.")],
           entity: Annotated[str, typer.Option(help="user or item.")] = "item",
           version: Annotated[Optional[int], typer.Option(
               help="Version wanted (default: the latest).")] = None) -> None:
    """Write a ver-j compatible table (id, embedding, source_version) to one Parquet file."""
    from bc_ray.consumer.reader import export_embeddings

    rows = export_embeddings(store, out, entity, version)
    typer.echo(f"wrote {rows} {entity} embeddings of version "
               f"{'latest' if version is None else version} to {out}")


def gc(store: StoreOption,
       grace: Annotated[float, typer.Option(help="Only delete what is older than this many "
                                                 "seconds.")] = 3600.0) -> None:
    """Apply retention and delete files no commit references (crashed or superseded writers)."""
    target = open_store(store)
    retention = target.apply_retention()
    orphans = target.collect_garbage(grace_seconds=grace)
    typer.echo(f"retention: {len(retention['tables'])} table(s), {len(retention['models'])} "
               f"model(s) unreferenced, {len(retention['purged'])} file(s) deleted; "
               f"{len(orphans)} orphaned run prefix(es) deleted")
