"""Which refresh to run: incremental when the previous refresh of the version kept what its
family's strategy needs (GraphSAGE: the inner layers' caches) and the graph has only grown since,
else full with the reason recorded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bc_ray.core.family import Changes, ModelFamily
from bc_ray.core.graph import GraphTensors
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import appeared_nodes, edge_endpoints, edges_between
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.range_cache import keeps_range_caches
from bc_ray.store.state import StoreState, TableRecord, VersionRecord
from bc_ray.store.tables import ENTITIES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """What the previous refresh did not see: the edges with `column` past `since` (t, a
    replayed timeline's; or the ordinal of an ingested batch, from `since` on), and the nodes
    of entities added or changed since (new ones may have no edge yet)."""

    column: str  # "t" or "batch"
    since: float
    entities: np.ndarray
    batches: int | None = None  # ingested: the new batches, and the entities they added or changed
    users: int = 0
    items: int = 0

    def new_edges(self, snapshot: GraphSnapshot) -> pl.DataFrame:
        """Of a snapshot read whole (the unpartitioned refresh's)."""
        if self.column == "t":
            return edges_between(snapshot, self.since, snapshot.meta.cutoff)
        return snapshot.edges.filter(pl.col("batch") >= int(self.since))

    def describe(self, new_edges: int) -> str:
        """The plan's reason, once the new edges are counted."""
        if self.batches is None:
            return f"{new_edges} new edges"
        return (f"{self.batches} new batch(es): {new_edges} edges, {self.users} users and "
                f"{self.items} items added or changed")


@dataclass
class RefreshPlan:
    mode: str
    reason: str
    changes: Changes | None = None  # what changed since the previous refresh (incremental only)
    previous: dict[str, TableRecord] = field(default_factory=dict)
    window: Window | None = None  # incremental only


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
    inner = {f"layer{layer}" for layer in range(1, family.cached_layers(spec) + 1)}

    def missing(table: TableRecord) -> str | None:
        if not layerwise or set(table.cache) == inner:
            return None
        if any("@" in key for key in table.cache):
            return "the earlier refresh was over node ranges: its layer caches are by range"
        return "the earlier refresh kept no layer caches"

    plan = _window(config, state, version, snapshot, family, missing)
    if plan.window is not None:
        new = plan.window.new_edges(snapshot)
        plan.changes = Changes(edge_endpoints(new, graph.num_users), plan.window.entities)
        plan.reason = plan.window.describe(new.height)
    return plan


def plan_range_refresh(config: RefreshConfig, state: StoreState, version: VersionRecord,
                       snapshot: GraphSnapshot, family: ModelFamily) -> RefreshPlan:
    """As `plan_refresh`, for a refresh over node ranges, before any edge is read: the
    previous one must have cached every layer by range (`range_cache`). The nodes with new
    edges are then found by the tasks that read the edges (the plan's window says which)."""
    if config.mode == "full":
        return RefreshPlan("full", "requested")
    num_layers = family.spec_from_dict(version.spec).num_layers

    def missing(table: TableRecord) -> str | None:
        if keeps_range_caches(table, num_layers):
            return None
        return "the earlier refresh kept no layer caches by node range"

    return _window(config, state, version, snapshot, family, missing)


def _window(config: RefreshConfig, state: StoreState, version: VersionRecord,
            snapshot: GraphSnapshot, family: ModelFamily,
            missing: Callable[[TableRecord], str | None]) -> RefreshPlan:
    """Incremental (the window it covers) when the previous refresh of this version kept what
    the next needs (`missing` says what it lacks, if anything) and the graph has only grown
    since; else full with the reason."""
    spec = family.spec_from_dict(version.spec)
    previous = {e: state.table(version.version, e) for e in ENTITIES}
    growth: Window | str
    if any(t is None for t in previous.values()):
        growth = f"no earlier refresh of version {version.version}"
    elif (lacking := next(filter(None, map(missing, previous.values())), None)) is not None:
        growth = lacking
    elif (blocker := family.incremental_blocker(spec)) is not None:
        growth = blocker
    elif state.snapshot().batches is not None:
        growth = _batches_since(state, previous["item"], snapshot)
    else:
        growth = _cutoff_since(state, previous["item"], snapshot)
    if isinstance(growth, str):
        if config.mode == "incremental":
            logger.warning("incremental refresh not possible (%s): running a full one", growth)
        return RefreshPlan("full", growth)
    return RefreshPlan("incremental", growth.describe(0), None, previous, growth)


def _cutoff_since(state: StoreState, previous: TableRecord,
                  snapshot: GraphSnapshot) -> Window | str:
    """A replayed timeline: the new edges are those between the two cutoffs."""
    if previous.snapshot_id.split("@", 1)[0] != state.current_snapshot.split("@", 1)[0]:
        return "the snapshot files changed since the earlier refresh"
    if previous.cutoff > snapshot.meta.cutoff:
        return "the snapshot moved backwards"
    return Window("t", previous.cutoff, appeared_nodes(snapshot, previous.cutoff))


def _batches_since(state: StoreState, previous: TableRecord,
                   snapshot: GraphSnapshot) -> Window | str:
    """A grown snapshot: the edges of the batches ingested after the earlier refresh's snapshot,
    and the entities those batches added or changed (new ones may have no edge yet)."""
    before = state.snapshots.get(previous.snapshot_id)
    if before is None or before.batches is None:
        return "the earlier refresh was of a replayed snapshot"
    since = before.batches
    if since > state.snapshot().batches:
        return "the snapshot moved backwards"
    users = snapshot.users.filter(pl.col("batch") >= since)["idx"].to_numpy().astype(np.int64)
    items = snapshot.items.filter(pl.col("batch") >= since)["idx"].to_numpy().astype(np.int64)
    entities = np.unique(np.concatenate([users, items + snapshot.num_users]))
    return Window("batch", since, entities, state.snapshot().batches - since, int(users.size),
                  int(items.size))
