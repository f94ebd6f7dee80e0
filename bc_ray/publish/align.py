"""B_k for embeddings made elsewhere: fitted post hoc on the entities the new tables share with the
current version's, and measured on a part of them it was not fitted on.

The pairs (z_k(x), z_{k-1}(x)) are every user and every item present in both (joined by
external id per entity, users and items together). A seeded random `holdout` fraction of each
entity's pairs (at least one) is held out; B_k is fitted on the rest (at most `max_fit_rows`,
sampled) by `bc_ray.core.posthoc.fit_posthoc`, and the gate reads the relative alignment error
on the held-out pairs of each entity, mean ||B_k z_k - z_{k-1}|| / mean ||z_{k-1}||, the measure
training's gate uses: pooled, users broken by a bad table could hide behind well-aligned items.
The B_k published is the one measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from bc_ray.chain import Affine
from bc_ray.core.evaluation import (
    alignment_breaches,
    relative_alignment_error,
    relative_error_by_entity,
)
from bc_ray.core.posthoc import fit_posthoc
from bc_ray.exceptions import DataError
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.current import Current, shared_ids
from bc_ray.publish.source import FLAGS, ExternalTable
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


def check_overlap(pairs: Pairs, tables: dict[str, ExternalTable], current: Current,
                  config: PublishConfig) -> None:
    """Enough pairs to fit B_k on, and some of each entity the current version holds: a table
    sharing none of its entity's ids (another entity's table, another id scheme) is refused."""
    version = current.record.version
    for entity in ENTITIES:
        held = len(current.tables[entity].ids)
        if pairs.counts[entity] or not held:
            continue
        other = ENTITIES[1 - ENTITIES.index(entity)]
        theirs = shared_ids(tables[entity].ids, current.tables[other].ids)
        hint = (f"; {theirs} are its {other} ids: is it the {other}s' table?" if theirs
                else f": check --id-col or --{entity}-id-col")
        raise DataError(f"{FLAGS[entity]}: none of its {tables[entity].rows} ids is one of "
                        f"version {version}'s {held} {entity}s, so B_k cannot be measured on "
                        f"{entity}s{hint}", path=tables[entity].uri)
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
    """B_k fitted on the pairs outside the held-out part, and its error on the held-out part
    of each entity and of both."""
    held, fitted = _split(pairs, config)
    z_new, z_old = torch.from_numpy(pairs.new), torch.from_numpy(pairs.old)
    transform = _fit(config, z_new[torch.from_numpy(fitted)], z_old[torch.from_numpy(fitted)])
    weight, bias = (torch.from_numpy(part) for part in transform)
    every = torch.cat(list(held.values()))  # users' pairs, then items'
    predicted, expected = z_new[every] @ weight.T + bias, z_old[every]
    error, relative = relative_alignment_error(predicted, expected)
    by_entity = relative_error_by_entity(predicted, expected, every < pairs.counts["user"])
    metrics = {"align_error": error, "align_error_rel": relative,
               "align_error_rel_by_entity": by_entity, "align_sample": int(len(every)),
               "align_sample_by_entity": {e: int(len(rows)) for e, rows in held.items()},
               "fit_rows": int(len(fitted)), "overlap": dict(pairs.counts)}
    return Alignment(transform, metrics)


def _split(pairs: Pairs, config: PublishConfig) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """(held-out pair indices by entity: a seeded `holdout` fraction of each entity's pairs,
    at least one where one more is left to fit; the others', at most `max_fit_rows`, to fit on).
    An entity of one pair is fitted on, not measured."""
    rng = np.random.default_rng(config.seed)
    held, rest, start = {}, [], 0
    for entity in ENTITIES:
        count = pairs.counts[entity]
        order = start + rng.permutation(count)
        start += count
        cut = min(count - 1, max(1, int(round(count * config.holdout)))) if count > 1 else 0
        if cut:
            held[entity] = torch.from_numpy(order[:cut])
        rest.append(order[cut:])
    fitted = rng.permutation(np.concatenate(rest))[:config.max_fit_rows]
    return held, fitted


def _fit(config: PublishConfig, z_new: torch.Tensor, z_old: torch.Tensor) -> Affine:
    if config.fit != "sgd":
        return fit_posthoc(config.fit, z_new, z_old, seed=config.seed)
    linear = config.linear
    steps_per_epoch = -(-z_new.shape[0] // linear.batch_size)
    epochs = max(1, min(linear.max_epochs, linear.max_steps // steps_per_epoch))
    return fit_posthoc("sgd", z_new, z_old, epochs=epochs, batch_size=linear.batch_size,
                       lr=linear.lr, seed=config.seed)


def gate(metrics: dict, config: PublishConfig) -> list[str]:
    """Reasons to reject (empty: publish): each entity's held-out error (where it has enough
    held-out rows to be read alone), and both together, within the bound."""
    bound = config.max_align_error_rel
    samples = {**metrics["align_sample_by_entity"], None: metrics["align_sample"]}
    return [f"relative alignment error {error:.3f} on {samples[entity]} held-out "
            f"{entity + 's' if entity else 'entities'} exceeds {bound} (--max-align-error-rel)"
            for entity, error in alignment_breaches(metrics, bound)]
