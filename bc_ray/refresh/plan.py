"""Which refresh to run: incremental when the previous refresh of the version kept what its
family's strategy needs (GraphSAGE: the inner layers' caches) and the graph has only grown since,
else full with the reason recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bc_ray.core.family import Changes, ModelFamily
from bc_ray.core.graph import GraphTensors
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import edges_between
from bc_ray.refresh.config import RefreshConfig
from bc_ray.store.state import StoreState, TableRecord, VersionRecord
from bc_ray.store.tables import ENTITIES

logger = logging.getLogger(__name__)


@dataclass
class RefreshPlan:
    mode: str
    reason: str
    changes: Changes | None = None  # what changed since the previous refresh (incremental only)
    previous: dict[str, TableRecord] = field(default_factory=dict)


@dataclass
class Growth:
    changes: Changes
    what: str


def plan_refresh(config: RefreshConfig, state: StoreState, version: VersionRecord,
                 snapshot: GraphSnapshot, graph: GraphTensors,
                 family: ModelFamily) -> RefreshPlan:
    """Incremental when the previous refresh of this version kept what the family needs and the
    graph has only grown since: by a later cutoff of the same files, or by batches ingested
    after it. Otherwise full, and the reason is recorded."""
    layerwise = family.refresh_strategy == "layerwise"
    if config.mode == "full" or (layerwise and config.inference == "sampled"):
        return RefreshPlan("full", "requested")
    spec = family.spec_from_dict(version.spec)
    previous = {e: state.table(version.version, e) for e in ENTITIES}
    growth: Growth | str
    if any(t is None for t in previous.values()):
        growth = f"no earlier refresh of version {version.version}"
    elif layerwise and any(len(t.cache) != family.cached_layers(spec)
                           for t in previous.values()):
        growth = "the earlier refresh kept no layer caches"
    elif (blocker := family.incremental_blocker(spec)) is not None:
        growth = blocker
    elif state.snapshot().batches is not None:
        growth = _batches_since(state, previous["item"], snapshot, graph)
    else:
        growth = _cutoff_since(state, previous["item"], snapshot, graph)
    if isinstance(growth, str):
        if config.mode == "incremental":
            logger.warning("incremental refresh not possible (%s): running a full one", growth)
        return RefreshPlan("full", growth)
    return RefreshPlan("incremental", growth.what, growth.changes, previous)


def _cutoff_since(state: StoreState, previous: TableRecord, snapshot: GraphSnapshot,
                  graph: GraphTensors) -> Growth | str:
    """A replayed timeline: the new edges are those between the two cutoffs."""
    if previous.snapshot_id.split("@", 1)[0] != state.current_snapshot.split("@", 1)[0]:
        return "the snapshot files changed since the earlier refresh"
    if previous.cutoff > snapshot.meta.cutoff:
        return "the snapshot moved backwards"
    new = edges_between(snapshot, previous.cutoff, snapshot.meta.cutoff)
    return Growth(Changes(_endpoints(new, graph), _appeared(snapshot, previous.cutoff, graph)),
                  f"{new.height} new edges")


def _appeared(snapshot: GraphSnapshot, since: float, graph: GraphTensors) -> np.ndarray:
    """Nodes of the entities present now but not at `since`: added to the tables, so a family
    must embed them even where new interactions alone would not say so (their rows have no
    earlier value to copy)."""
    before = snapshot.with_cutoff(since)
    users, items = (np.flatnonzero(snapshot.present(e) & ~before.present(e)) for e in ENTITIES)
    return np.concatenate([users, items + graph.num_users]).astype(np.int64)


def _batches_since(state: StoreState, previous: TableRecord, snapshot: GraphSnapshot,
                   graph: GraphTensors) -> Growth | str:
    """A grown snapshot: the edges of the batches ingested after the earlier refresh's snapshot,
    and the entities those batches added or changed (new ones may have no edge yet)."""
    before = state.snapshots.get(previous.snapshot_id)
    if before is None or before.batches is None:
        return "the earlier refresh was of a replayed snapshot"
    since = before.batches
    if since > state.snapshot().batches:
        return "the snapshot moved backwards"
    new = snapshot.edges.filter(pl.col("batch") >= since)
    users = snapshot.users.filter(pl.col("batch") >= since)["idx"].to_numpy().astype(np.int64)
    items = snapshot.items.filter(pl.col("batch") >= since)["idx"].to_numpy().astype(np.int64)
    entities = np.unique(np.concatenate([users, items + graph.num_users]))
    return Growth(Changes(_endpoints(new, graph), entities),
                  f"{state.snapshot().batches - since} new batch(es): "
                  f"{new.height} edges, {users.size} users and {items.size} items added or "
                  "changed")


def _endpoints(edges: pl.DataFrame, graph: GraphTensors) -> np.ndarray:
    return np.unique(np.concatenate([
        edges["user_idx"].to_numpy().astype(np.int64),
        edges["item_idx"].to_numpy().astype(np.int64) + graph.num_users]))
