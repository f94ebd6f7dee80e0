"""A layer-wise refresh partitioned by node range (`bc-ray refresh --partitions P`).

Task p of P holds only its range's rows of the adjacency and, per layer, its own rows; it reads
the previous layer's rows of its halo, which every range's task of the stage before sent it
through the object store, where they lie (`ranges.py`, `halo.py`): no process holds the whole
graph or a whole layer, and no layer builder assembles one. The driver plans and passes
references: it reads the entity tables (ids, features, visibility), adds up the degrees that
one task per edge file counts (`partition.edge_files`; for an age-aware model of an ingested
snapshot, tasks also find each entity's first interaction: `partition.first_seen`), cuts the
nodes into ranges of equal work and picks the hubs; tasks send each range its edge ends, every
file read once (`edge_shuffle.py`), build the range graphs from them (`range_graphs.py`) and run
the stages (`range_stages.py`); the last stage's tasks write their rows to Parquet, and one log
entry publishes the tables, as in the unpartitioned refresh (`job.py`), whose results these
equal to float rounding.

Every layer task caches its range's rows of h_1..h_L next to the tables (`range_cache`). The
next refresh is then incremental where the graph only grew: the range graph tasks name the
nodes with new edges, P small tasks per hop find the nodes a change reaches by each layer
(`RangeGraph.reached`), and each layer task recomputes only those of its range, reading the
rest from the cache (the ranges may be cut elsewhere this time). h_0 and the halo exchange are
whole each time: every recomputed row may read any neighbour.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import ray

from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.registry import version_family
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.model import LayerStack
from bc_ray.partition.edge_files import EdgeFiles, count_degrees_by_file
from bc_ray.partition.first_seen import ages_need_edges, first_interactions
from bc_ray.partition.model_source import ModelSource
from bc_ray.partition.task_memory import HEADROOM, MAX_PARTITIONS, slot_memory, too_big
from bc_ray.refresh.config import WRITE_COST, RefreshConfig
from bc_ray.refresh.edge_shuffle import shuffle_ends
from bc_ray.refresh.plan import RefreshPlan, plan_range_refresh
from bc_ray.refresh.range_cache import CachedRecompute, CacheTarget, RangeCache, merge_caches
from bc_ray.refresh.range_graphs import build_range_graphs
from bc_ray.refresh.range_layer import RangeLayer
from bc_ray.refresh.range_stages import (
    LayerPieces,
    RangeInputs,
    RangeRows,
    final_task,
    inner_task,
    input_task,
    outgoing_task,
    reach_task,
)
from bc_ray.refresh.ranges import NodeRanges, entity_bounds, find_hubs
from bc_ray.refresh.results import RefreshOutcome, StageResult, WrittenFile
from bc_ray.refresh.sink import TableTarget
from bc_ray.refresh.sizing import range_bytes
from bc_ray.refresh.warm import release, start_task_processes
from bc_ray.store.snapshots import load_entities
from bc_ray.store.state import FileRecord, StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, publish_refresh, table_refreshes
from bc_ray.store.versions import check_refreshable

logger = logging.getLogger(__name__)


def _whole_blocks(sizes: list[dict]) -> int:
    """How many (range, range) pairs read the other's whole block instead of a piece."""
    return int(sum(int(np.count_nonzero(s["whole"])) for s in sizes))


def _width(version: VersionRecord) -> int:
    """The widest layer's width (the input and inner layers', or the output's)."""
    return max(int(version.spec.get("hidden_dim", 0)), version.dim)


def plan_ranges(degrees: np.ndarray, parts: int, width: int, budget: int | None,
                adapt: bool) -> NodeRanges:
    """`parts` ranges of equal work. With `adapt` (a count chosen by estimate), as many more as
    it takes for every range's tasks to fit `budget` (its degrees bound them: `range_bytes`);
    otherwise a range that does not fit is refused before any task asks Ray for more memory than
    a node has (it would wait forever)."""
    while True:
        ranges = NodeRanges.balanced(degrees, parts, WRITE_COST)
        need = max(range_bytes(int(degrees[start:stop].sum()), stop - start, width, degrees.size)
                   for start, stop in (ranges.range(p) for p in range(parts)))
        if budget is None or HEADROOM * need <= budget:
            return ranges
        if not adapt or parts >= MAX_PARTITIONS:
            raise too_big(f"over {parts} node ranges the largest range's task", need, budget,
                          adapt)
        parts = min(MAX_PARTITIONS, max(parts + 1, int(parts * HEADROOM * need / budget) + 1))


@dataclass
class PartitionedRefresh:
    """One partitioned refresh of the current version: its plan, then its stages as methods."""

    config: RefreshConfig
    store: Store
    state: StoreState
    version: VersionRecord
    inputs: GraphTensors  # the entities' features and first-seen times; no edges
    visible: np.ndarray  # bool by node: the entities the tables hold
    ids: dict[str, pa.Array]  # entity -> external ids by idx
    ranges: NodeRanges
    hubs: np.ndarray
    sizes: list[dict]  # per range: sources (halo rows, hubs included), graph bytes and the
    # ranges whose whole block it reads (`RangeGraph.whole`)
    graphs: list[ray.ObjectRef]
    outgoing: list[ray.ObjectRef]
    width: int  # the widest layer's
    source: ModelSource
    adapt: bool  # the count was chosen, not given
    plan: RefreshPlan
    frontiers: list[np.ndarray] | None  # incremental: bool by node, the rows layer l recomputes
    layers: LayerStack | None = None
    caches: list[dict[str, dict[str, FileRecord]]] = dataclasses.field(default_factory=list)

    @classmethod
    def open(cls, config: RefreshConfig, adapt: bool = False) -> PartitionedRefresh:
        """Plan and build the range graphs. `adapt` (a count chosen by estimate): more ranges
        while the degrees say a range's graph build would not fit a task's memory."""
        store = Store(config.store)
        state = store.state()
        check_refreshable(state)
        version = state.version()
        family = version_family(version)
        if family.refresh_strategy != "layerwise":
            raise ConfigError(f"--partitions splits GraphSAGE's layer-wise refresh; version "
                              f"{version.version} is {version.family!r}: leave --partitions out")
        snapshot = load_entities(store, state)
        plan = plan_range_refresh(config, state, version, snapshot, family)
        window = plan.window
        files = EdgeFiles.of(store, state, snapshot.num_users, snapshot.num_items,
                             None if window is None else window.since)
        budget = slot_memory(config.cpus_per_task, ray.nodes())
        degrees, file_edges = count_degrees_by_file(files, config.cpus_per_task, budget)
        if ages_need_edges(bool(version.spec.get("cold_start_mixing")), state):
            snapshot = first_interactions(
                files, degrees, file_edges, config.cpus_per_task, budget, config.partitions or 1,
                remedy="give the nodes more memory, or the tasks more CPUs (--cpus-per-task)"
            ).applied(snapshot)
        inputs = build_graph(snapshot, snapshot.edges.head(0), now=snapshot.meta.cutoff)
        visible = np.concatenate([snapshot.present("user"), snapshot.present("item")])
        ids = {e: snapshot.entities(e)["id"].to_arrow() for e in ENTITIES}
        width = _width(version)
        ranges = plan_ranges(degrees, config.partitions, width, budget, adapt)
        hubs = find_hubs(degrees, ranges)
        ends = shuffle_ends(files, ranges, file_edges, config.cpus_per_task, budget)
        new_edges = ends.new_edges
        sizes, graphs, pieces = build_range_graphs(ends.pieces, ranges, hubs,
                                                   config.cpus_per_task, degrees)
        del degrees, ends  # the keys' pieces go from the object store once the graphs are built
        touched = np.concatenate([ranges.range(p)[0] + s.pop("touched")
                                  for p, s in enumerate(sizes)])
        if window is not None:
            plan.reason = window.describe(new_edges)
        hubs_ref = ray.put(hubs)
        outgoing = [outgoing_task.remote(*ranges.range(q), hubs_ref,
                                         *(pieces[p][q] for p in range(len(ranges))))
                    for q in range(len(ranges))]
        logger.info("refresh of version %d: %s (%s) over %d node ranges of %d edge file(s); %d "
                    "hubs, halo rows per range %d..%d, %d of %d blocks read whole",
                    version.version, plan.mode, plan.reason, len(ranges), len(files.files),
                    hubs.size, min(s["sources"] for s in sizes),
                    max(s["sources"] for s in sizes), _whole_blocks(sizes), len(ranges) ** 2)
        run = cls(config, store, state, version, inputs, visible, ids, ranges, hubs, sizes,
                  graphs, outgoing, width, ModelSource.of(store, version), adapt, plan,
                  None)
        run.check_layers_fit(budget)
        if window is not None:
            num_layers = family.spec_from_dict(version.spec).num_layers
            run.frontiers = run.reach(touched, window.entities, num_layers)
        return run

    def reach(self, touched: np.ndarray, entities: np.ndarray,
              num_layers: int) -> list[np.ndarray]:
        """bool by node, for each layer l = 1..L: the nodes whose layer l may change, those
        within l-1 hops of a node with new edges or within l hops of an entity whose own row
        changed (as `inference.layer_frontiers` on the whole graph). A hop distributes over a
        union, so that is l-1 hops of (the nodes with new edges, and one hop of the entities):
        L rounds of range tasks."""
        changed = np.zeros(self.num_nodes, dtype=bool)
        changed[entities] = True
        frontier = self._hop(changed)
        frontier[touched] = True
        frontiers = [frontier]
        for _ in range(num_layers - 1):
            frontiers.append(self._hop(frontiers[-1]))
        return frontiers

    def _hop(self, nodes: np.ndarray) -> np.ndarray:
        """The nodes in `nodes` (a bool mask) or one hop from them: a round of range tasks."""
        if not nodes.any():
            return nodes.copy()
        ref = ray.put(nodes)
        return np.concatenate(ray.get([
            reach_task.options(**self._options(self.sizes[p]["bytes"] + 2 * self.num_nodes))
            .remote(self.graphs[p], ref) for p in range(self.parts)]))

    def check_layers_fit(self, budget: int | None) -> None:
        """Every range's layer and input tasks fit a task's memory, by their sizes now known
        (and what an input task reads of the model), or a clear error."""
        need = max(max(self._layer_bytes(p), self._input_bytes(p)) for p in range(self.parts))
        if budget is not None and HEADROOM * need > budget:
            raise too_big(f"over {self.parts} node ranges the largest range's layer task", need,
                          budget, self.adapt)

    @property
    def parts(self) -> int:
        return len(self.ranges)

    @property
    def slots(self) -> int:
        """Tasks that run at once: the ranges, or the cluster's CPUs over a task's."""
        cpus = ray.cluster_resources().get("CPU", 1.0)
        return max(1, min(self.parts, int(cpus // self.config.cpus_per_task)))

    @property
    def num_nodes(self) -> int:
        return self.inputs.num_nodes

    def _options(self, memory: int, returns: int = 1) -> dict:
        """A task's resources: its CPUs and GPUs, and the memory it must hold with headroom
        (Ray places it on a node with that much left: `sizing.py`), spread over the nodes (the
        ranges share out the cluster's memory, not one node's)."""
        return {"num_cpus": self.config.cpus_per_task, "num_gpus": self.config.gpus_per_task,
                "num_returns": returns, "memory": max(1, int(HEADROOM * memory)),
                "scheduling_strategy": "SPREAD"}

    def _input_bytes(self, part: int) -> int:
        """What range `part`'s input task holds: its rows (twice, as computed and as sent), and
        what it reads of the model."""
        start, stop = self.ranges.range(part)
        return 2 * (stop - start) * 4 * self.width + self.source.holds(stop - start)

    def _layer_bytes(self, part: int) -> int:
        """What range `part`'s layer task must hold: its graph (its sources' node ids among
        it), its own rows in and out (float32 of the widest layer; incrementally, the rows out
        start as the cached ones, read a chunk at a time). Its sources' rows it reads in place
        from the object store (`halo.Halo`)."""
        start, stop = self.ranges.range(part)
        return self.sizes[part]["bytes"] + 2 * (stop - start) * 4 * self.width

    def _work(self, layer: int, part: int, target: TableTarget) -> dict:
        """The keyword arguments of range `part`'s layer task: the rows to recompute with the
        cache of the others (incrementally), and where to cache the rows it computes."""
        start, stop = self.ranges.range(part)
        redo = None
        if self.frontiers is not None:
            rows = np.flatnonzero(self.frontiers[layer - 1][start:stop]).astype(np.int64)
            redo = CachedRecompute(rows, RangeCache.of(self.store, self.plan.previous, layer,
                                                 self.inputs.num_users))
        return {"redo": redo, "cache": CacheTarget(target.store_uri, target.options,
                                                   target.prefixes, self.inputs.num_users)}

    def _sources(self, previous: LayerPieces, layer: int, part: int) -> list[ray.ObjectRef]:
        """What range `part`'s task of `layer` reads of the layer before: its hubs and pieces
        or whole blocks; nothing where an incremental refresh recomputes none of its rows."""
        if self.frontiers is not None:
            start, stop = self.ranges.range(part)
            if stop > start and not self.frontiers[layer - 1][start:stop].any():
                return []  # an empty range takes the usual path: nothing to skip there
        return previous.sources(part, self.sizes[part]["whole"])

    def _recomputed(self, layer: int) -> int:
        if self.frontiers is None:
            return self.num_nodes
        return int(self.frontiers[layer - 1].sum())

    @property
    def _threads(self) -> int:
        return int(max(1, self.config.cpus_per_task))

    def _stage(self, label: str, nodes: int, outputs: list,
               began: float) -> tuple[LayerPieces, StageResult]:
        done = ray.get([o[0] for o in outputs])
        self.caches.extend(caches for _, caches in done)
        return LayerPieces.of([o[1:] for o in outputs]), StageResult(
            label, nodes, time.perf_counter() - began,
            sum(seconds for seconds, _ in done) / self.slots).logged()

    def input_stage(self) -> tuple[LayerPieces, StageResult]:
        """h_0 by range: each task looks up its range's ID rows and features."""
        began = time.perf_counter()
        # The layers alone: a few KB of weights (the whole model where it is read whole).
        self.layers = self.source.load().layer_stack()
        outputs = []
        for p in range(self.parts):
            task = input_task.options(**self._options(self._input_bytes(p), self.parts + 3))
            outputs.append(task.remote(self.source, RangeInputs.of(self.inputs,
                                                                   *self.ranges.range(p)),
                                       self.outgoing[p], self._threads))
        return self._stage("layer0", self.num_nodes, outputs, began)

    def inner_stage(self, layer: int, previous: LayerPieces,
                    target: TableTarget) -> tuple[LayerPieces, StageResult]:
        began = time.perf_counter()
        step = RangeLayer(self.layers, layer, self.parts, self.config.block_nodes, self._threads)
        outputs = [inner_task.options(**self._options(self._layer_bytes(p), self.parts + 3))
                   .remote(step, self.outgoing[p], self.graphs[p], previous.own[p],
                           *self._sources(previous, layer, p), **self._work(layer, p, target))
                   for p in range(self.parts)]
        return self._stage(f"layer{layer}", self._recomputed(layer), outputs, began)

    def final_stage(self, previous: LayerPieces,
                    target: TableTarget) -> tuple[StageResult, list[WrittenFile]]:
        """The last layer; each range's task writes its visible rows (at most `rows_per_file`
        per file)."""
        began = time.perf_counter()
        last = self.layers.spec.num_layers
        step = RangeLayer(self.layers, last, self.parts, self.config.block_nodes, self._threads)
        writes = [final_task.options(**self._options(self._layer_bytes(p)))
                  .remote(step, self._range_rows(target, p), self.graphs[p], previous.own[p],
                          *self._sources(previous, last, p), **self._work(last, p, target))
                  for p in range(self.parts)]
        done = ray.get(writes)
        files = [f for _, written, _ in done for f in written]
        self.caches.extend(caches for _, _, caches in done)
        result = StageResult(f"layer{last}+write", self._recomputed(last),
                             time.perf_counter() - began,
                             sum(seconds for seconds, _, _ in done) / self.slots).logged()
        return result, files

    def _range_rows(self, target: TableTarget, part: int) -> RangeRows:
        start, stop = self.ranges.range(part)
        bounds = entity_bounds(start, stop, self.inputs.num_users)
        # A copy of the range's ids: a pickled slice would carry the whole buffer.
        ids = {e: self.ids[e].take(pa.array(np.arange(*bounds[e]))) for e in ENTITIES}
        return RangeRows(target, self.visible[start:stop], ids,
                         {e: first for e, (first, _) in bounds.items()}, self.inputs.num_users,
                         self.config.rows_per_file, part)

    def summary(self) -> dict:
        """The ranges as the refresh's stats record them: how many, the hubs, the largest halo,
        the pairs of ranges that read each other's whole block, and at most what one layer task
        must hold (its graph, its own rows in and out; its sources it reads in place) and one
        range graph task while it builds its graph (`sizing.build_bytes`)."""
        must_hold = max(self._layer_bytes(p) for p in range(self.parts))
        build = max(s["build_bytes"] for s in self.sizes)
        return {"count": self.parts, "hubs": int(self.hubs.size),
                "halo_rows_max": int(max(s["sources"] for s in self.sizes)),
                "whole_blocks": _whole_blocks(self.sizes),
                "task_must_hold_mb_max": round(must_hold / (1 << 20), 3),
                "build_must_hold_mb_max": round(build / (1 << 20), 3)}

    def publish(self, outcome: RefreshOutcome, refreshed_at: datetime) -> None:
        publish_refresh(self.store, self.version.version, outcome.refresh_id,
                        outcome.tables(self.version.dim, merge_caches(self.caches)),
                        self.state.current_snapshot, self.inputs.now, outcome.mode, refreshed_at,
                        over=table_refreshes(self.state, self.version.version))


def run_partitioned(config: RefreshConfig, warming: list[ray.ObjectRef] | None = None,
                    before_commit: Callable[[], None] | None = None,
                    adapt: bool = False) -> RefreshOutcome:
    """A layer-wise refresh over `config.partitions` node ranges (more with `adapt`, where a
    range would not fit), incremental where the previous one cached its layers by range,
    published in one entry (`before_commit` as in `job.run_refresh`)."""
    started = time.perf_counter()
    if warming is None:
        warming = start_task_processes(config)
    try:
        began = time.perf_counter()
        run = PartitionedRefresh.open(config, adapt)
        planned = StageResult("ranges", run.num_nodes, time.perf_counter() - began).logged()
        refresh_id = run.store.new_prefix("refresh").split("/", 1)[1]
        refreshed_at = datetime.now(timezone.utc)
        target = TableTarget.of(run.store, run.version.version, refresh_id, refreshed_at)
        previous, result = run.input_stage()
        results = [planned, result]
        for layer in range(1, run.layers.spec.num_layers):
            previous, result = run.inner_stage(layer, previous, target)
            results.append(result)
        final, files = run.final_stage(previous, target)
    finally:
        release(warming)
    outcome = RefreshOutcome(run.version.version, refresh_id, run.plan.mode,
                             f"{run.plan.reason}; partitioned into {run.parts} node ranges",
                             "layerwise", run.num_nodes, tuple(results), final.nodes, final,
                             tuple(files), time.perf_counter() - started, run.summary())
    logger.info("refresh done: %d rows in %.1fs over %d ranges", sum(outcome.rows.values()),
                outcome.seconds, run.parts)
    if before_commit is not None:
        before_commit()
    run.publish(outcome, refreshed_at)
    return outcome
