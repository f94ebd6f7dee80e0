"""`bc-ray publish`: embeddings computed outside bc_ray become the next version (the same
code `jobs/publish.py` runs)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import JsonOption, StoreOption, default_of
from bc_ray.cli.output import emit
from bc_ray.publish.config import FITS, PublishConfig
from bc_ray.render import key_values


def _default(name: str):
    return default_of(PublishConfig, name)


GATED_AS = ("publish_settings", "parent_tables")  # how a version was gated: long, rarely read
TABLE_HELP = ("a Parquet file, a folder of them or a glob, local or s3://; one row per entity "
              "with its id and a list of floats")


def publish(
    store: StoreOption,
    users: Annotated[str, typer.Option(help=f"User embeddings: {TABLE_HELP}.")],
    items: Annotated[str, typer.Option(help=f"Item embeddings: {TABLE_HELP}.")],
    id_col: Annotated[str, typer.Option(help="Column holding the external id (integer or "
                                             "text, as the store's).")] = _default("id_col"),
    user_id_col: Annotated[Optional[str], typer.Option(
        help="The users' table's id column, where it is not --id-col's.")
                           ] = _default("user_id_col"),
    item_id_col: Annotated[Optional[str], typer.Option(
        help="The items' table's id column, where it is not --id-col's.")
                           ] = _default("item_id_col"),
    embedding_col: Annotated[str, typer.Option(
        help="Column holding the vector (list or fixed-size list of floats).")
                             ] = _default("embedding_col"),
    method: Annotated[str, typer.Option(
        help=f"Post-hoc fit of B_k: {', '.join(FITS)}. Procrustes for a rotation-like change "
             "(semi-orthogonal when the dimensions differ); low-rank affine when few entities "
             "overlap; lin (a linear map trained by Adam) otherwise.")] = _default("method"),
    max_align_error_rel: Annotated[float, typer.Option(
        help="Gate: max mean ||B_k z_k - z_{k-1}|| / mean ||z_{k-1}|| on the "
             f"{_default('holdout'):.0%} of the overlap held out from the fit, users and "
             "items each.")
                                   ] = _default("max_align_error_rel"),
    min_overlap: Annotated[Optional[int], typer.Option(
        help="Entities (users and items) needed in both the new tables and the current "
             "version's (default: twice the new dimension).")] = _default("min_overlap"),
    as_json: JsonOption = False,
    fail_on_reject: Annotated[bool, typer.Option(
        help="Exit with status 3 when the gate rejects the new version.")] = True,
) -> None:
    """Publish embeddings computed outside bc_ray as the next version, with a post-hoc B_k.

    B_k is fitted on the entities shared with the current version and gated; the version and
    its tables become current in one commit. Bad input is refused with nothing written; the
    current version's own tables published again change nothing (status: already published,
    exit 0), nor do tables rejected before, gated the same way (status: rejected, the version
    that recorded them)."""
    from bc_ray.publish.job import run_publish

    config = PublishConfig(store=store, users=users, items=items, id_col=id_col,
                           user_id_col=user_id_col, item_id_col=item_id_col,
                           embedding_col=embedding_col, method=method,
                           max_align_error_rel=max_align_error_rel, min_overlap=min_overlap)
    outcome = run_publish(config)
    summary = outcome.summary()
    shown = {k: v for k, v in summary.items() if k not in GATED_AS}  # in --json and the log
    emit(summary, as_json, key_values(shown))
    if outcome.status == "rejected" and fail_on_reject:
        raise typer.Exit(code=3)
