"""Time on a snapshot: edge-fraction time as in the paper, and calendar windows for nightly jobs.

``t`` is the fraction of edges seen (0..1). E_k is the set of edges with ``t <= t_k``; "new edges in
(t_k, t_{k+1}]" and "entities first seen in that window" are the evaluation periods of the paper.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from bc_ray.data.snapshot import ENTITIES, GraphSnapshot
from bc_ray.exceptions import DataError

SECONDS_PER_DAY = 86_400


def paper_times(start: float = 0.5, step: float = 0.1, versions: int = 5) -> list[float]:
    """Training times of versions 0..K-1 followed by the end of the last period (0.5..0.9, 1.0)."""
    times = [round(start + i * step, 10) for i in range(versions + 1)]
    if times[-1] > 1.0 + 1e-9:
        raise DataError(f"{versions} versions from t={start} in steps of {step} pass t=1")
    return times


def edges_until(snapshot: GraphSnapshot, t: float) -> pl.DataFrame:
    edges = snapshot.edges.filter(pl.col("t") <= t)
    if edges.height == 0:
        raise DataError(f"no edges up to t={t}: the split is empty")
    return edges


def edges_between(snapshot: GraphSnapshot, start: float, end: float) -> pl.DataFrame:
    """Edges with start < t <= end (may be empty: callers that need some check it)."""
    if end < start:
        raise DataError(f"window end {end} is before its start {start}")
    return snapshot.edges.filter((pl.col("t") > start) & (pl.col("t") <= end))


def entity_count_at(snapshot: GraphSnapshot, entity: str, t: float) -> int:
    """How many entities exist at time t (indices are assigned in order of first appearance)."""
    first = snapshot.entities(entity)["first_t"]
    return int((first <= t).sum())


def new_entities(snapshot: GraphSnapshot, entity: str, start: float, end: float) -> pl.Series:
    """Indices of entities whose first interaction falls in (start, end]."""
    table = snapshot.entities(entity)
    mask = (table["first_t"] > start) & (table["first_t"] <= end)
    return table.filter(mask)["idx"]


def appeared_nodes(snapshot: GraphSnapshot, since: float) -> np.ndarray:
    """Nodes of the entities present now but not at `since`: added to the tables, so a family
    must embed them even where new interactions alone would not say so (their rows have no
    earlier value to copy)."""
    before = snapshot.with_cutoff(since)
    users, items = (np.flatnonzero(snapshot.present(e) & ~before.present(e)) for e in ENTITIES)
    return np.concatenate([users, items + snapshot.num_users]).astype(np.int64)


def edge_endpoints(edges: pl.DataFrame, num_users: int) -> np.ndarray:
    """The nodes (users, then items after `num_users`) that `edges` touch, sorted and unique."""
    return np.unique(np.concatenate([
        edges["user_idx"].to_numpy().astype(np.int64),
        edges["item_idx"].to_numpy().astype(np.int64) + num_users]))


def t_at_timestamp(snapshot: GraphSnapshot, timestamp: int) -> float:
    """The edge-fraction time reached at a calendar instant (0 before the first edge)."""
    ts = snapshot.edges["timestamp"].to_numpy()
    position = int(np.searchsorted(ts, timestamp, side="right"))
    if position == 0:
        return 0.0
    return float(snapshot.edges["t"][position - 1])


def days_before(end_timestamp: int, days: float) -> int:
    """The timestamp `days` days before `end_timestamp`: where a window of that many days
    starts (its edges are after it)."""
    return end_timestamp - int(days * SECONDS_PER_DAY)


def calendar_window(snapshot: GraphSnapshot, end_timestamp: int,
                    days: float) -> tuple[float, float]:
    """The (start, end] window in edge-fraction time covering `days` days before `end_timestamp`."""
    if days <= 0:
        raise DataError(f"a calendar window needs a positive number of days, got {days}")
    return (t_at_timestamp(snapshot, days_before(end_timestamp, days)),
            t_at_timestamp(snapshot, end_timestamp))
