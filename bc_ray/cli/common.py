"""Options shared by every command."""

from __future__ import annotations

from typing import Annotated

import typer

StoreOption = Annotated[str, typer.Option(
    "--store", envvar="BC_RAY_STORE",
    help="Store URI: file:///path or s3://bucket/prefix (S3 settings and credentials from "
         "AWS_* variables, never in the URI).")]


def open_store(uri: str):
    from bc_ray.store.store import Store

    return Store(uri)
