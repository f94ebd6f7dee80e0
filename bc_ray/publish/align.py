"""B_k for embeddings made elsewhere: fitted post hoc on the entities the new tables share with the
current version's, and measured on a part of them it was not fitted on.

The pairs (z_k(x), z_{k-1}(x)) are every user and every item present in both (joined by
external id per entity, users and items together). A seeded random `holdout` fraction of them
(at least one pair) is held out; B_k is fitted on the rest (at most `max_fit_rows`, sampled) by
`bc_ray.core.posthoc.fit_posthoc`, and the gate reads the relative alignment error on the
held-out pairs, mean ||B_k z_k - z_{k-1}|| / mean ||z_{k-1}||, the measure training's gate uses.
The B_k published is the one measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from bc_ray.chain import Affine
from bc_ray.core.evaluation import alignment_error
from bc_ray.core.posthoc import fit_posthoc
from bc_ray.exceptions import DataError
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.current import Current
from bc_ray.publish.source import ExternalTable
from bc_ray.store.tables import ENTITIES


@dataclass(frozen=True)
class Pairs:
    """Rows of the same entities in both versions, users then items."""

    new: np.ndarray  # (n, d_k)
    old: np.ndarray  # (n, d_{k-1})
    counts: dict[str, int]  # pairs by entity


@dataclass(frozen=True)
class Alignment:
    transform: Affine  # B_k: d_k -> d_{k-1}
    metrics: dict


def paired_rows(tables: dict[str, ExternalTable], current: Current) -> Pairs:
    """The overlap of the new tables with the current version's, joined by external id."""
    new, old, counts = [], [], {}
    for entity in ENTITIES:
        stored = current.tables[entity]
        left = pl.DataFrame({"id": pl.Series(tables[entity].ids)}).with_row_index("new")
        right = pl.DataFrame({"id": pl.Series(stored.ids)}).with_row_index("old")
        joined = left.join(right, on="id", how="inner").sort("new")
        counts[entity] = joined.height
        new.append(tables[entity].matrix[joined["new"].to_numpy()])
        old.append(stored.matrix[joined["old"].to_numpy()])
    return Pairs(np.concatenate(new), np.concatenate(old), counts)


def check_overlap(pairs: Pairs, config: PublishConfig, version: int) -> None:
    needed = max(config.overlap_needed(pairs.new.shape[1]), MIN_PAIRS)
    if pairs.new.shape[0] < needed:
        raise DataError(f"only {pairs.new.shape[0]} entities ({pairs.counts['user']} users, "
                        f"{pairs.counts['item']} items) are in both the new tables and version "
                        f"{version}'s; B_k needs at least {needed} (--min-overlap, default 2 x "
                        "the dimension): publish tables that keep more of today's users and "
                        "items")


# The fewest pairs anything is fitted on: a held-out one to measure and two to fit.
MIN_PAIRS = 3


def fit_alignment(pairs: Pairs, config: PublishConfig) -> Alignment:
    """B_k fitted on the pairs outside the held-out part, and its error on the held-out part."""
    total = pairs.new.shape[0]
    order = np.random.default_rng(config.seed).permutation(total)
    held = torch.from_numpy(order[:max(1, int(round(total * config.holdout)))])
    fitted = torch.from_numpy(order[len(held):][:config.max_fit_rows])
    z_new, z_old = torch.from_numpy(pairs.new), torch.from_numpy(pairs.old)
    transform = _fit(config, z_new[fitted], z_old[fitted])
    weight, bias = (torch.from_numpy(part) for part in transform)
    predicted = z_new[held] @ weight.T + bias
    expected = z_old[held]
    error = alignment_error(predicted, expected)
    scale = max(float(expected.norm(dim=1).mean()), 1e-12)
    metrics = {"align_error": error, "align_error_rel": error / scale,
               "align_sample": int(len(held)), "fit_rows": int(len(fitted)),
               "overlap": dict(pairs.counts)}
    return Alignment(transform, metrics)


def _fit(config: PublishConfig, z_new: torch.Tensor, z_old: torch.Tensor) -> Affine:
    if config.fit != "sgd":
        return fit_posthoc(config.fit, z_new, z_old, seed=config.seed)
    linear = config.linear
    steps_per_epoch = -(-z_new.shape[0] // linear.batch_size)
    epochs = max(1, min(linear.max_epochs, linear.max_steps // steps_per_epoch))
    return fit_posthoc("sgd", z_new, z_old, epochs=epochs, batch_size=linear.batch_size,
                       lr=linear.lr, seed=config.seed)


def gate(metrics: dict, config: PublishConfig) -> list[str]:
    """Reasons to reject (empty: publish)."""
    if not metrics["align_error_rel"] <= config.max_align_error_rel:  # NaN is no pass
        return [f"relative alignment error {metrics['align_error_rel']:.3f} on "
                f"{metrics['align_sample']} held-out entities exceeds "
                f"{config.max_align_error_rel} (--max-align-error-rel)"]
    return []
