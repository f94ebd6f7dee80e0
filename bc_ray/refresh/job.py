"""The refresh driver: plan (full or incremental), run the Ray Data stages, publish atomically.

The version's model family decides the stages. A family without a strategy of its own (the
sequence model, plug-ins) is one Ray Data pass: `ModelFamily.embed` over runs of entities, reading
what `embed_inputs` prepared once on the driver, fused with the Parquet write; incrementally, only
the entities `ModelFamily.affected` names are embedded and the rest are copied from the previous
tables. GraphSAGE runs its own layer-wise strategy:

Layer-wise inference: the driver computes the input layer h_0 of every node once, then runs one
Ray Data stage per GraphSAGE layer. The stage's nodes are split into runs of about equal work
(one task each, `tasks.py`), each task computes the layer for its run from the previous layer
held in the object store, and an actor assembles the stage's blocks into the layer the next
stage reads (`assemble.py`; the driver only passes references). The last stage's tasks write their
rows to Parquet under a fresh prefix themselves (`EmbeddingSink`), and one log entry publishes
the user and item tables together. Inner layers are cached next to the tables, written while
the next stage runs, so the next refresh can be incremental.

A `RefreshRun` holds what every stage reads; each stage returns what it measured
(`StageResult`) and the final one the files its tasks wrote (`WrittenFile`), which add up to the
`RefreshOutcome`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import ray
import torch

from bc_ray.core.family import ModelFamily
from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.registry import version_family
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import edges_until
from bc_ray.exceptions import PlacementError
from bc_ray.memory import return_freed_memory
from bc_ray.models.graphsage.inference import balanced_bounds, layer_for_nodes, layer_frontiers
from bc_ray.models.graphsage.model import LayerStack
from bc_ray.models.on_cluster import check_loads_on_cluster
from bc_ray.partition.task_memory import slot_memory
from bc_ray.placement import Placement, Workers
from bc_ray.refresh.assemble import CachedLayer, PreviousTables, carried_rows, layer_builder
from bc_ray.refresh.config import WRITE_COST, RefreshConfig
from bc_ray.refresh.pack import pack_graph, unpack_graph
from bc_ray.refresh.passes import block_refs, stage_pass, write_pass
from bc_ray.refresh.plan import RefreshPlan, plan_refresh
from bc_ray.refresh.results import RefreshOutcome, StageResult, WrittenFile
from bc_ray.refresh.sink import EmbeddingSink, NodeIds, TableTarget
from bc_ray.refresh.sizing import (
    GraphSize,
    check_unpartitioned,
    choose_partitions,
    node_memory,
    node_store,
)
from bc_ray.refresh.tasks import (
    EntityStage,
    LayerStage,
    Runs,
    SampledStage,
    entity_runs,
    layer_runs,
    sampled_runs,
)
from bc_ray.refresh.warm import release, start_task_processes
from bc_ray.store.npy import npy_parts
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.state import FileRecord, StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, publish_refresh, table_prefix, table_refreshes
from bc_ray.store.versions import check_refreshable, load_model_bytes

logger = logging.getLogger(__name__)
RUNS_PER_SLOT = 2  # runs are balanced by edges, not by time: a spare run per slot evens it out


@dataclass(frozen=True)
class FinalPass:
    """The last Ray Data pass (fused with the Parquet write) and the entities it writes."""

    fn: Callable
    stage: LayerStage | SampledStage | EntityStage
    visible: np.ndarray  # bool by node: the entities the tables hold


@dataclass(frozen=True)
class InnerLayers:
    """What the stages before the last one leave: their layers, what they measured, and the
    final pass that reads them."""

    final: FinalPass
    layers: tuple[ray.ObjectRef, ...]  # h_1..h_{L-1}, to cache
    results: tuple[StageResult, ...]  # layer0..layer<L-1>
    affected_nodes: int | None  # nodes the final pass recomputes; None: sampled (all)

    @classmethod
    def final_only(cls, final: FinalPass, affected: int | None) -> InnerLayers:
        return cls(final, (), (), affected)


def share_graph(graph: GraphTensors) -> tuple[ray.ObjectRef, GraphTensors]:
    """The graph in the object store for the tasks, and the driver's view of that copy (its
    own arrays, edges and CSR, can then go: ~0.3 GB at 10M edges)."""
    graph_ref = ray.put(pack_graph(graph))
    return graph_ref, unpack_graph(ray.get(graph_ref))


def _measured(label: str, nodes: int, seconds: float, compute: float,
              config: RefreshConfig) -> StageResult:
    """A stage of Ray Data tasks: `compute` is their summed compute time, reported per slot."""
    return StageResult(label, int(nodes), seconds, compute / config.num_tasks).logged()


@dataclass(frozen=True)
class FamilyInputs:
    """What a family's embed step reads (in the object store), and, incrementally, the nodes it
    must embed again: both made on the driver from the full graph, edges included."""

    inputs: ray.ObjectRef
    affected: np.ndarray | None

    @classmethod
    def of(cls, family: ModelFamily, version: VersionRecord, graph: GraphTensors,
           plan: RefreshPlan) -> FamilyInputs:
        spec = family.spec_from_dict(version.spec)
        inputs = family.embed_inputs(spec, graph)
        affected = None
        if plan.mode == "incremental":
            affected = np.asarray(family.affected(spec, inputs, plan.changes), dtype=np.int64)
        return cls(ray.put(inputs), affected)


@dataclass(frozen=True)
class RefreshRun:
    """One refresh of the current version: what its stages read (the store, the plan, the graph
    and its object-store copy, the entities' ids), and the stages as methods."""

    config: RefreshConfig
    store: Store
    state: StoreState
    version: VersionRecord
    family: ModelFamily  # the version's
    snapshot: GraphSnapshot  # its entity tables (ids, visibility); the edges are in the graph
    graph: GraphTensors  # the driver's view of the object-store copy
    graph_ref: ray.ObjectRef
    plan: RefreshPlan
    ids: dict[str, ray.ObjectRef]  # entity -> pyarrow array of external ids, by idx
    builder: ray.actor.ActorHandle | None  # layer-wise inference only
    embedding: FamilyInputs | None = None  # families without a strategy of their own

    @classmethod
    def open(cls, config: RefreshConfig) -> RefreshRun:
        """Read the current snapshot, build its graph, plan, and share what the tasks read."""
        store = Store(config.store)
        state = store.state()
        check_refreshable(state)
        version = state.version()
        family = version_family(version)
        # The layer builder (kept from the job's last refresh, or starting now) gets ready while
        # the driver reads the snapshot; only GraphSAGE's layer-wise strategy uses it, and on a
        # 2-core node a process starting for nothing delays the tasks' own start.
        layerwise = family.refresh_strategy == "layerwise"
        if not layerwise:  # its tasks rebuild the model by the family's name
            check_loads_on_cluster([version.family])
        builder = layer_builder() if layerwise and config.inference == "layerwise" else None
        snapshot = load_snapshot(store, state=state)
        cutoff = snapshot.meta.cutoff
        graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
        plan = plan_refresh(config, state, version, snapshot, graph, family)
        logger.info("refresh of version %d: %s (%s)", version.version, plan.mode, plan.reason)
        embedding = None
        if not layerwise:
            embedding = FamilyInputs.of(family, version, graph, plan)
        # Edges are in the graph now; the entity tables stay for ids and visibility. Arrow's pool
        # keeps freed pages (0.4 GB at 10M edges) until told to return them.
        snapshot = dataclasses.replace(snapshot, edges=snapshot.edges.clear())
        return_freed_memory()
        graph_ref, graph = share_graph(graph)
        ids = {e: ray.put(snapshot.entities(e)["id"].to_arrow()) for e in ENTITIES}  # by idx
        return cls(config, store, state, version, family, snapshot, graph, graph_ref, plan, ids,
                   builder, embedding)

    @property
    def incremental(self) -> bool:
        return self.plan.mode == "incremental"

    @property
    def layerwise(self) -> bool:
        """GraphSAGE's own strategy (else one pass of the family's embed step)."""
        return self.family.refresh_strategy == "layerwise"

    def _model_bytes(self) -> bytes:
        """Read when a stage needs them, and not kept: the driver holds no copy after it."""
        return load_model_bytes(self.store, self.version.version, self.state)

    def _runs(self, nodes: np.ndarray, count: int, node_cost: int = 1) -> Runs:
        bounds = balanced_bounds(self.graph, torch.from_numpy(nodes),
                                 max(1, min(count, nodes.size)), node_cost)
        return Runs(self.graph_ref, ray.put(nodes), tuple(bounds), self.config.block_nodes,
                    int(max(1, self.config.cpus_per_task)), self.config.use_gpu)

    def _final_run_count(self, visible: np.ndarray) -> int:
        """Tasks of the final pass: one file per entity per task, so at most `rows_per_file`
        rows per task, and `RUNS_PER_SLOT` tasks per slot."""
        return max(RUNS_PER_SLOT * self.config.num_tasks,
                   -(-int(visible.sum()) // self.config.rows_per_file))

    def inner_layers(self) -> InnerLayers:
        """Run the stages h_1..h_{L-1} and describe the final one.

        h_0 (ID tables and feature bags, every node) is computed here once: the tasks then need
        only the GraphSAGE layers, not the model's tables."""
        visible = np.concatenate([self.snapshot.present("user"), self.snapshot.present("item")])
        final_runs = self._runs(np.flatnonzero(visible), self._final_run_count(visible),
                                WRITE_COST)
        if not self.layerwise:
            return self._entity_pass(final_runs, visible)
        if self.config.inference == "sampled":
            stage = SampledStage(final_runs, ray.put(self._model_bytes()), self.config.fanout)
            return InnerLayers.final_only(FinalPass(sampled_runs, stage, visible), None)
        layers, previous, input_result = self._input_layer()
        num_layers = layers.spec.num_layers
        # The builder reads the previous tables while the driver plans.
        carried = self._carried(layers.spec.output_dim) if self.incremental else None
        frontiers = self._frontiers(num_layers)
        outputs, results = [], [input_result]
        for layer in range(1, num_layers):
            runs = self._runs(frontiers[layer - 1], RUNS_PER_SLOT * self.config.num_tasks)
            previous, result = self._inner_stage(LayerStage(runs, layers, layer, previous))
            outputs.append(previous)
            results.append(result)
        recompute = ray.put(frontiers[-1]) if self.incremental else None
        final = LayerStage(final_runs, layers, num_layers, previous, carried, recompute)
        affected = int(frontiers[-1].size) if self.incremental else self.graph.num_nodes
        return InnerLayers(FinalPass(layer_runs, final, visible), tuple(outputs),
                           tuple(results), affected)

    def _entity_pass(self, runs: Runs, visible: np.ndarray) -> InnerLayers:
        """One pass of the family's embed step; incrementally, the affected entities only."""
        carried = recompute = None
        affected = self.embedding.affected
        if affected is not None:
            carried, recompute = self._carried(self.version.dim), ray.put(affected)
        stage = EntityStage(runs, ray.put(self._model_bytes()), self.version.family,
                            self.embedding.inputs, carried, recompute)
        count = self.graph.num_nodes if affected is None else int(affected.size)
        return InnerLayers.final_only(FinalPass(entity_runs, stage, visible), count)

    def _input_layer(self) -> tuple[LayerStack, ray.ObjectRef, StageResult]:
        """h_0 of every node into the object store, and the model's GraphSAGE layers."""
        model = self.family.from_bytes(self._model_bytes(), light=True)  # bytes go with the call
        layers, graph = model.layer_stack(), self.graph
        started = time.perf_counter()
        inputs = np.empty((graph.num_nodes, model.spec.hidden_dim), dtype=np.float32)
        for start in range(0, graph.num_nodes, self.config.block_nodes):  # no full-size temporaries
            nodes = torch.arange(start, min(start + self.config.block_nodes, graph.num_nodes))
            inputs[start:start + nodes.numel()] = layer_for_nodes(model, graph, 0, None, nodes)
        del model  # the ID tables, before h_0's copy in the object store: nothing else reads them
        values = ray.put(inputs)
        del inputs
        return layers, values, StageResult("layer0", graph.num_nodes,
                                           time.perf_counter() - started).logged()

    def _carried(self, dim: int) -> ray.ObjectRef:
        """The previous tables by node (an incremental final stage copies the rows of nodes it
        does not recompute), read by a task in one of the refresh's processes."""
        previous = PreviousTables(self.store.uri, self.store.io.options, self.plan.previous)
        reading = carried_rows.options(num_cpus=self.config.cpus_per_task)
        return reading.remote((self.graph.num_nodes, dim), self.graph.num_users, previous,
                              self.ids["user"], self.ids["item"])

    def _frontiers(self, num_layers: int) -> list[np.ndarray]:
        """The nodes each stage h_1..h_L computes: every node, or (incremental) those a change
        can reach by that layer (`layer_frontiers`)."""
        if self.incremental:
            changes = self.plan.changes
            return [f.numpy() for f in layer_frontiers(
                self.graph, torch.from_numpy(changes.touched),
                torch.from_numpy(changes.entities), num_layers)]
        return [np.arange(self.graph.num_nodes, dtype=np.int64)] * num_layers

    def _cached(self, layer: int) -> CachedLayer | None:
        """An incremental stage's base: rows it does not recompute stay as they were cached."""
        if not self.incremental:
            return None
        return CachedLayer(self.store.uri, self.store.io.options,
                           {e: self.plan.previous[e].cache[f"layer{layer}"] for e in ENTITIES})

    def _inner_stage(self, stage: LayerStage) -> tuple[ray.ObjectRef, StageResult]:
        """One pass over the stage's nodes, its blocks handed to the builder as they come; the
        layer (every node) as one object-store matrix."""
        started, key = time.perf_counter(), uuid.uuid4().hex
        shape = (self.graph.num_nodes, stage.layers.spec.hidden_dim)
        adding = [self.builder.start.remote(key, shape, self.graph.num_users,
                                            self._cached(stage.layer))]
        try:
            if stage.runs.bounds[-1]:
                for refs in block_refs(stage_pass(layer_runs, stage, self.config, stream=True)):
                    adding.append(self.builder.add.remote(key, *refs))
            ray.get(adding)  # a failed step raises here
        except BaseException:
            self.builder.drop.remote(key)
            raise
        layer, compute = self.builder.finish.remote(key)
        seconds = time.perf_counter() - started
        return layer, _measured(f"layer{stage.layer}", stage.runs.bounds[-1], seconds,
                                ray.get(compute), self.config)

    def write_final(self, final: FinalPass, refresh_id: str,
                    refreshed_at: datetime) -> tuple[StageResult, list[WrittenFile]]:
        """The last layer's tasks write their own rows to Parquet (Ray Data fuses the two)."""
        target = TableTarget.of(self.store, self.version.version, refresh_id, refreshed_at)
        sink = EmbeddingSink(target, NodeIds(self.ids, ray.put(final.visible),
                                             self.graph.num_users))
        started = time.perf_counter()
        write_pass(stage_pass(final.fn, final.stage, self.config), sink, self.config)
        files = sink.files()
        return _measured(f"{self._final_label()}+write", final.stage.runs.bounds[-1],
                         time.perf_counter() - started, sum(f.compute_seconds for f in files),
                         self.config), files

    @property
    def inference(self) -> str:
        """How the embeddings are computed: layerwise or sampled (GraphSAGE), else entities."""
        return self.config.inference if self.layerwise else "entities"

    def _final_label(self) -> str:
        if self.inference == "layerwise":
            return f"layer{self.version.spec['num_layers']}"
        return {"sampled": "sampled", "entities": "embed"}[self.inference]

    def write_caches(self, refresh_id: str,
                     layers: tuple[ray.ObjectRef, ...]) -> dict[str, dict[str, FileRecord]]:
        """Each layer's rows, users and items, as .npy files written from the object store's
        copy (the driver maps it; it holds no copy of its own)."""
        caches: dict[str, dict[str, FileRecord]] = {e: {} for e in ENTITIES}
        num_users = self.graph.num_users
        for index, ref in enumerate(layers, start=1):
            layer = ray.get(ref)
            for entity, rows in (("user", layer[:num_users]), ("item", layer[num_users:])):
                prefix = table_prefix(self.store, self.version.version, entity, refresh_id)
                caches[entity][f"layer{index}"] = self.store.put_parts(
                    f"{prefix}/cache/layer{index}.npy", npy_parts(rows))
        return caches

    def publish(self, outcome: RefreshOutcome, refreshed_at: datetime,
                caches: dict[str, dict[str, FileRecord]]) -> None:
        """One log entry publishes the user and item tables together."""
        publish_refresh(self.store, self.version.version, outcome.refresh_id,
                        outcome.tables(self.version.dim, caches),
                        self.state.current_snapshot, self.snapshot.meta.cutoff, self.plan.mode,
                        refreshed_at, over=table_refreshes(self.state, self.version.version))


def plan_partitions(config: RefreshConfig) -> int:
    """The node ranges this refresh runs over (0: unpartitioned), before anything is read but
    the log: as asked, or chosen so it fits the memory the nodes offer (`sizing.py`): the
    unpartitioned refresh while the whole graph fits a node. `--partitions 0` on nodes too small
    for it is refused, naming the count that fits."""
    if config.partitions:
        return config.partitions
    state = Store(config.store).state()
    check_refreshable(state)
    if config.inference != "layerwise" or config.use_gpu:
        return 0  # the partitioned stages compute on the CPU
    version = state.version()
    size = GraphSize.of(state, version)
    nodes = ray.nodes()
    node_budget, slot_budget = node_memory(nodes), slot_memory(config.cpus_per_task, nodes)
    layerwise = version_family(version).refresh_strategy == "layerwise"
    if (not layerwise or size is None
            or node_budget is None or slot_budget is None):
        return 0
    if config.partitions == 0:
        check_unpartitioned(size, node_budget, slot_budget, node_store(nodes))
        return 0
    partitions = choose_partitions(size, node_budget, slot_budget, node_store(nodes))
    if partitions:
        logger.warning(
            "the unpartitioned refresh (%.0f MB on one node) does not fit the largest node's "
            "%.0f MB twice over: a refresh over about %d node ranges",
            size.unpartitioned_bytes() / (1 << 20), node_budget / (1 << 20), partitions)
    return partitions


def check_task_placement(config: RefreshConfig, placement: Placement) -> None:
    """A refresh is sized by the nodes alive (`plan_partitions`): on a cluster that autoscales
    with none that can run a task (scaled to zero), its tasks' nodes are asked for and one is
    waited for; where none can and no autoscaler will start one, it is refused (Ray would
    leave its tasks waiting forever)."""
    if placement.wait(Workers(config.num_tasks, config.task_resources, "task"), enough=1):
        return
    gpu = " and a GPU" if config.use_gpu else ""
    raise PlacementError(f"no node of the cluster can run a refresh task of "
                         f"{config.cpus_per_task:g} CPU{gpu}, and no autoscaler is asked to start "
                         "one (none runs, or --placement-timeout is 0): lower --cpus-per-task, "
                         "or add such a node")


def run_refresh(config: RefreshConfig, before_commit: Callable[[], None] | None = None,
                warming: list[ray.ObjectRef] | None = None) -> RefreshOutcome:
    """Refresh the current version's tables and publish them in one log entry.

    `before_commit` runs after every file is written and before that entry (a test's fault
    injection: nothing written is visible until the commit). `warming`: the tasks' processes,
    already started by the caller (`start_task_processes`); else they start now and get ready
    while the driver reads the snapshot. A request made of the autoscaler for the tasks' nodes
    stands until the refresh is sized by them (`Placement`)."""
    with Placement(config.placement_timeout_s) as placement:
        return _run_refresh(config, placement, before_commit, warming)


def _run_refresh(config: RefreshConfig, placement: Placement,
                 before_commit: Callable[[], None] | None,
                 warming: list[ray.ObjectRef] | None) -> RefreshOutcome:
    started = time.perf_counter()
    if warming is None:
        warming = start_task_processes(config)
    try:
        check_task_placement(config, placement)
        partitions = plan_partitions(config)
        placement.release()  # sized: its tasks' own demand starts nodes from here
    except BaseException:
        release(warming)
        raise
    if partitions:
        from bc_ray.refresh.partitioned import run_partitioned

        return run_partitioned(dataclasses.replace(config, partitions=partitions), warming,
                               before_commit, adapt=config.partitions is None)
    try:
        run = RefreshRun.open(config)
        inner = run.inner_layers()
        refresh_id = run.store.new_prefix("refresh").split("/", 1)[1]
        refreshed_at = datetime.now(timezone.utc)
        with ThreadPoolExecutor(1, thread_name_prefix="layer-caches") as background:
            # The driver only waits on the final pass: it writes the inner layers meanwhile.
            caching = background.submit(run.write_caches, refresh_id, inner.layers)
            final, files = run.write_final(inner.final, refresh_id, refreshed_at)
            caches = caching.result()
    finally:
        release(warming)
    outcome = RefreshOutcome(run.version.version, refresh_id, run.plan.mode, run.plan.reason,
                             run.inference, run.graph.num_nodes, inner.results,
                             inner.affected_nodes, final, tuple(files),
                             time.perf_counter() - started)
    stats = outcome.stats
    logger.info("refresh done: %d rows in %.1fs (%.0f rows/s)", sum(stats["rows"].values()),
                stats["seconds"], stats["rows_per_second"])
    if before_commit is not None:
        before_commit()
    run.publish(outcome, refreshed_at, caches)
    return outcome
