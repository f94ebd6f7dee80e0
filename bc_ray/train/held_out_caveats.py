"""What a bump's held-out period cannot vouch for, said before training: stored alignment
targets that saw it, and a validation half with no users.

The stored ver-(k-1) tables (`--targets stored`, a published parent's only ones) are the
latest refresh of M_{k-1}, usually on a graph that already holds the held-out edges (the
nightly refresh runs after each ingest). For a graph model such a row aggregates the entity's
held-out neighbours, so aligning M_k to it carries those edges into training, and the gate's
Recall@50 on them reads optimistically. Running M_{k-1} on the training graph
(`--targets model`, in one process or sharded over the workers) does not. The bump records
which it was (`targets_see_held_out`).
"""

from __future__ import annotations

import logging
import math

from bc_ray.data.snapshot import ENTITIES
from bc_ray.store.state import StoreState, TableRecord

logger = logging.getLogger(__name__)


def stored_targets_see(state: StoreState, version: int, start: float, calendar: bool) -> bool:
    """Whether a stored table of `version` was refreshed on edges after `start`: a timestamp
    on an ingested store (`calendar`), an edge fraction on a replayed timeline."""
    tables = [t for e in ENTITIES if (t := state.table(version, e)) is not None]
    return any(_seen_until(state, table, calendar) > start for table in tables)


def _seen_until(state: StoreState, table: TableRecord, calendar: bool) -> float:
    """The latest time the graph of `table`'s refresh held (inf: cannot tell, so assume all)."""
    if not calendar:
        return table.cutoff
    snapshot = state.snapshots.get(table.snapshot_id)
    if snapshot is None or snapshot.batches is None:
        return math.inf
    ends = [b.stats.get("time_range", [None, math.inf])[1] for b in state.batches.values()
            if b.ordinal < snapshot.batches]
    return max(ends, default=-math.inf)


def say_if_seen(seen: bool, version: int, window: str, instead: str) -> None:
    """`instead`: what avoids the bias here, or why nothing does (a published parent has no
    model to run)."""
    if seen:
        logger.warning(
            "the stored embeddings of version %d were refreshed on a graph holding the held-out "
            "period %s: aligning to them carries those edges into M_k, so its Recall@50 there "
            "(and the relative gate) reads optimistically; %s (recorded as "
            "targets_see_held_out)", version, window, instead)


def say_if_no_validation(users: int, window: str) -> None:
    """A held-out period whose evaluated users all fell in the test half leaves model
    selection nothing to score (its Recall@50 is NaN): the latest evaluated state is kept."""
    if users == 0:
        logger.warning("no validation users in the held-out period %s (each evaluated user is "
                       "drawn into validation or test): model selection keeps the latest "
                       "evaluated state; a longer period (--holdout-days, --holdout) has more",
                       window)
