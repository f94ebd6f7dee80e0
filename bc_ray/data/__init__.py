"""Graph snapshots: real-data loaders, the synthetic marketplace generator, and time splits."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bc_ray.exceptions import ConfigError

if TYPE_CHECKING:
    from bc_ray.data.snapshot import GraphSnapshot, RawGraph

DATASET_FORMATS = ("synthetic", "movielens-100k", "movielens-latest", "amazon")
# Loaded on first use: a light module of this package (the column mapping, which the command
# line builds) must not pull in polars.
_SNAPSHOT_NAMES = ("GraphSnapshot", "RawGraph", "SnapshotMeta", "build_snapshot")


def load_raw(fmt: str, path: str | None = None, **synthetic_options) -> RawGraph:
    """Read one of the supported formats into a RawGraph. Synthetic data takes no path but its
    generator's settings as `KEY=VALUE,...` text (`seed=1`: another draw of the same
    marketplace), over `synthetic_options`."""
    if fmt == "synthetic":
        from bc_ray.key_values import parse_fields
        from bc_ray.data.synthetic import SyntheticConfig, generate

        config = SyntheticConfig(**synthetic_options)
        if path:
            config = parse_fields(SyntheticConfig, path, "synthetic data set", base=config)
        return generate(config)
    if path is None:
        raise ConfigError(f"dataset format {fmt!r} needs a path")
    if fmt == "movielens-100k":
        from bc_ray.data.movielens import load_movielens_100k

        return load_movielens_100k(path)
    if fmt == "movielens-latest":
        from bc_ray.data.movielens import load_movielens_latest

        return load_movielens_latest(path)
    if fmt == "amazon":
        from bc_ray.data.amazon import load_amazon

        return load_amazon(path)
    raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {DATASET_FORMATS}")


def load_dataset(spec: str, **synthetic_options) -> GraphSnapshot:
    """`synthetic`, `synthetic:KEY=VALUE,...` (`load_raw`) or `FORMAT:PATH` (e.g.
    `movielens-100k:../shared/data/ml-100k`)."""
    from bc_ray.data.snapshot import build_snapshot

    fmt, _, path = spec.partition(":")
    return build_snapshot(load_raw(fmt, path or None, **synthetic_options))


def __getattr__(name: str) -> Any:
    if name in _SNAPSHOT_NAMES:
        return getattr(import_module("bc_ray.data.snapshot"), name)
    raise AttributeError(f"module 'bc_ray.data' has no attribute {name!r}")


__all__ = ["GraphSnapshot", "RawGraph", "SnapshotMeta", "build_snapshot", "load_raw",
           "load_dataset", "DATASET_FORMATS"]
