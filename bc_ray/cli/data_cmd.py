"""`bc-ray data`: import real formats, generate synthetic data, describe the current snapshot."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import StoreOption, open_store
from bc_ray.cli.output import emit, key_values

app = typer.Typer(help="Create and inspect graph snapshots in a store.", no_args_is_help=True)


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Option("--format", help="movielens-100k, movielens-latest or amazon")],
    path: Annotated[str, typer.Option(help="Folder (or reviews file for amazon) to read.")],
    store: StoreOption,
    cutoff: Annotated[float, typer.Option(help="Visible fraction of the timeline (t_0).")] = 1.0,
) -> None:
    """Read a public data set into a snapshot and publish it to the store."""
    from bc_ray.data import build_snapshot, load_raw
    from bc_ray.store.snapshots import publish_snapshot

    if fmt == "synthetic":
        raise typer.BadParameter("use `bc-ray data synth` for synthetic data", param_hint="--format")
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    snapshot_id: Annotated[Optional[str], typer.Option("--snapshot", help="Snapshot id.")] = None,
) -> None:
    """Counts, time range, rating histogram and feature vocabularies of a snapshot."""
    from bc_ray.data.info import summarize
    from bc_ray.store.snapshots import load_snapshot

    summary = summarize(load_snapshot(open_store(store), snapshot_id))
    emit(summary, as_json, key_values(summary))
