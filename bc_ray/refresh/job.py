"""The refresh driver: plan (full or incremental), run the Ray Data stages, publish atomically.

Layer-wise inference: the driver computes the input layer h_0 of every node once, then runs one
Ray Data stage per GraphSAGE layer. The stage's nodes are split into runs of about equal work
(one task each, `tasks.py`), each task computes the layer for its run from the previous layer
held in the object store, and an actor assembles the stage's blocks into the layer the next
stage reads (`assemble.py`; the driver only passes references). The last stage's tasks write their
rows to Parquet under a fresh prefix themselves (`EmbeddingSink`), and one log entry publishes
the user and item tables together. Inner layers are cached next to the tables, written while
the next stage runs, so the next refresh can be incremental.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import ray
import torch

from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.inference import balanced_bounds, expand_hops, layer_for_nodes
from bc_ray.core.serialization import model_from_bytes
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import edges_between, edges_until
from bc_ray.refresh.assemble import CachedLayer, PreviousTables, layer_builder
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.pack import pack_graph, unpack_graph
from bc_ray.refresh.sink import EmbeddingSink
from bc_ray.refresh.tasks import (LayerStage, Runs, SampledStage, layer_runs, sampled_runs,
                                  warm_workers)
from bc_ray.store.npy import npy_parts
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.state import FileRecord, StoreState, TableRecord, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, TableFiles, publish_refresh, table_prefix
from bc_ray.store.versions import load_model_bytes

logger = logging.getLogger(__name__)
WRITE_COST = 16  # writing a row to Parquet, in edges aggregated (measured at 10M edges)
STREAM_BLOCK_BYTES = 16 << 20
RUNS_PER_SLOT = 2  # runs are balanced by edges, not by time: a spare run per slot evens it out


@dataclass
class RefreshPlan:
    mode: str
    reason: str
    changed: torch.Tensor | None = None  # nodes with new edges (incremental only)
    previous: dict[str, TableRecord] = field(default_factory=dict)


@dataclass
class RefreshOutcome:
    version: int
    refresh_id: str
    mode: str
    stats: dict


def plan_refresh(config: RefreshConfig, state: StoreState, version: VersionRecord,
                 snapshot: GraphSnapshot, graph: GraphTensors) -> RefreshPlan:
    """Incremental when the previous refresh of this version kept layer caches and the graph has
    only grown since: by a later cutoff of the same files, or by batches ingested after it.
    Otherwise full, and the reason is recorded."""
    if config.mode == "full" or config.inference == "sampled":
        return RefreshPlan("full", "requested")
    previous = {e: state.table(version.version, e) for e in ENTITIES}
    growth: Growth | str
    if any(t is None for t in previous.values()):
        growth = f"no earlier refresh of version {version.version}"
    elif any(len(t.cache) != version.spec.get("num_layers", 2) - 1 for t in previous.values()):
        growth = "the earlier refresh kept no layer caches"
    elif version.spec.get("cold_start_mixing"):
        growth = "age-aware mixing changes every input as time passes"
    elif state.snapshot().batches is not None:
        growth = _batches_since(state, previous["item"], snapshot, graph)
    else:
        growth = _cutoff_since(state, previous["item"], snapshot, graph)
    if isinstance(growth, str):
        if config.mode == "incremental":
            logger.warning("incremental refresh not possible (%s): running a full one", growth)
        return RefreshPlan("full", growth)
    return RefreshPlan("incremental", growth.what, growth.changed, previous)


@dataclass
class Growth:
    changed: torch.Tensor  # nodes whose inputs or edges changed
    what: str


def _cutoff_since(state: StoreState, previous: TableRecord, snapshot: GraphSnapshot,
                  graph: GraphTensors) -> Growth | str:
    """A replayed timeline: the new edges are those between the two cutoffs."""
    if previous.snapshot_id.split("@", 1)[0] != state.current_snapshot.split("@", 1)[0]:
        return "the snapshot files changed since the earlier refresh"
    if previous.cutoff > snapshot.meta.cutoff:
        return "the snapshot moved backwards"
    new = edges_between(snapshot, previous.cutoff, snapshot.meta.cutoff)
    return Growth(_endpoints(new, graph), f"{new.height} new edges")


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
    nodes = torch.cat([_endpoints(new, graph), torch.from_numpy(users),
                       torch.from_numpy(items) + graph.num_users])
    return Growth(torch.unique(nodes), f"{state.snapshot().batches - since} new batch(es): "
                  f"{new.height} edges, {users.size} users and {items.size} items added or "
                  "changed")


def _endpoints(edges: pl.DataFrame, graph: GraphTensors) -> torch.Tensor:
    return torch.unique(torch.cat([
        torch.from_numpy(edges["user_idx"].to_numpy().astype(np.int64)),
        torch.from_numpy(edges["item_idx"].to_numpy().astype(np.int64)) + graph.num_users]))


def _runs(graph: GraphTensors, graph_ref, nodes: np.ndarray, count: int, config: RefreshConfig,
          node_cost: int = 1) -> Runs:
    bounds = balanced_bounds(graph, torch.from_numpy(nodes), max(1, min(count, nodes.size)),
                             node_cost)
    return Runs(graph_ref, ray.put(nodes), tuple(bounds), config.block_nodes,
                int(max(1, config.cpus_per_actor)))


def _map(fn, stage: LayerStage | SampledStage, config: RefreshConfig, stream: bool = False):
    """One Ray Data pass: a task per run, each yielding one batch per chunk of its nodes.

    Built from local items (`range` would add a read task per run) under its own context:
    without per-operator resource reservation, which with one operator only holds half the
    slots back (measured: the second task of a 2-CPU pass waited for the first), and with
    `stream`, blocks of about a chunk, so the builder assembles a layer while it is computed
    instead of receiving each task's rows as one block at its end."""
    count = len(stage.runs.bounds) - 1
    context = ray.data.DataContext.get_current()
    saved = context.op_resource_reservation_enabled, context.target_max_block_size
    context.op_resource_reservation_enabled = False
    if stream:
        context.target_max_block_size = STREAM_BLOCK_BYTES
    try:  # a dataset keeps a copy of the context it was created under
        runs = ray.data.from_items([{"id": run} for run in range(count)],
                                   override_num_blocks=count)
    finally:
        context.op_resource_reservation_enabled, context.target_max_block_size = saved
    return runs.map_batches(
        fn, fn_kwargs={"stage": stage}, batch_size=1, batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=config.num_actors),
        num_cpus=config.cpus_per_actor, num_gpus=1 if config.use_gpu else 0)


def _record(stats: dict, label: str, nodes: int, seconds: float, compute: float,
            config: RefreshConfig) -> None:
    stats[label] = {"nodes": int(nodes), "seconds": round(seconds, 3),
                    "compute_seconds": round(compute / config.num_actors, 3)}
    logger.info("%s: %d nodes in %.1fs (%.0f nodes/s; %.2fs of compute per task slot)", label,
                nodes, seconds, nodes / seconds if seconds else 0.0, compute / config.num_actors)


def _assembled_stage(stage: LayerStage, config: RefreshConfig, builder: ray.actor.ActorHandle,
                     shape: tuple[int, int], num_users: int, base: CachedLayer | None,
                     label: str, stats: dict) -> ray.ObjectRef:
    """One pass over the stage's nodes, its blocks handed to the builder as they come; the
    layer (every node) as one object-store matrix."""
    started, key = time.perf_counter(), uuid.uuid4().hex
    adding = [builder.start.remote(key, shape, num_users, base)]
    try:
        if stage.runs.bounds[-1]:
            for bundle in _map(layer_runs, stage, config, stream=True).iter_internal_ref_bundles():
                adding.append(builder.add.remote(key, *bundle.block_refs))
        ray.get(adding)  # a failed step raises here
    except BaseException:
        builder.drop.remote(key)
        raise
    layer, compute = builder.finish.remote(key)
    _record(stats, label, stage.runs.bounds[-1], time.perf_counter() - started, ray.get(compute),
            config)
    return layer


@dataclass
class FinalStage:
    """The last Ray Data pass (fused with the Parquet write), and the inner layers to cache."""

    fn: Callable
    stage: LayerStage | SampledStage
    inner_layers: list[ray.ObjectRef]  # h_1..h_{L-1}, to cache
    visible: np.ndarray  # bool by node: the entities the tables hold


def _final_run_count(visible: np.ndarray, config: RefreshConfig) -> int:
    """Tasks of the final pass: one file per entity per task, so at most `rows_per_file` rows
    per task, and `RUNS_PER_SLOT` tasks per slot."""
    return max(RUNS_PER_SLOT * config.num_actors, -(-int(visible.sum()) // config.rows_per_file))


def share_graph(graph: GraphTensors) -> tuple[ray.ObjectRef, GraphTensors]:
    """The graph in the object store for the tasks, and the driver's view of that copy (its
    own arrays, edges and CSR, can then go: ~0.3 GB at 10M edges)."""
    graph_ref = ray.put(pack_graph(graph))
    return graph_ref, unpack_graph(ray.get(graph_ref))


def inner_layers(config: RefreshConfig, plan: RefreshPlan, store: Store, snapshot: GraphSnapshot,
                 graph: GraphTensors, graph_ref: ray.ObjectRef, ids: dict[str, ray.ObjectRef],
                 model_bytes: list[bytes], builder: ray.actor.ActorHandle | None,
                 stats: dict) -> FinalStage:
    """Run the stages h_1..h_{L-1} and describe the final one.

    h_0 (ID tables and feature bags, every node) is computed here once: the tasks then need
    only the GraphSAGE layers, not the model's tables."""
    visible = np.concatenate([snapshot.present("user"), snapshot.present("item")])
    final_runs = _runs(graph, graph_ref, np.flatnonzero(visible), _final_run_count(visible, config),
                       config, WRITE_COST)
    if config.inference == "sampled":
        return FinalStage(sampled_runs, SampledStage(final_runs, ray.put(model_bytes.pop()),
                                                     config.fanout), [], visible)
    model = model_from_bytes(model_bytes.pop(), light=True)  # the bytes go with the call
    layers_only, num_layers = model.layer_stack(), model.spec.num_layers
    started = time.perf_counter()
    inputs = np.empty((graph.num_nodes, model.spec.hidden_dim), dtype=np.float32)
    for start in range(0, graph.num_nodes, config.block_nodes):  # no full-size temporaries
        nodes = torch.arange(start, min(start + config.block_nodes, graph.num_nodes))
        inputs[start:start + nodes.numel()] = layer_for_nodes(model, graph, 0, None, nodes)
    del model  # the ID tables, before h_0's copy in the object store: nothing else reads them
    previous = ray.put(inputs)
    del inputs
    stats["layer0"] = {"nodes": graph.num_nodes, "seconds": round(time.perf_counter() - started, 3)}
    extra = {}
    if plan.mode == "incremental":  # the builder reads the previous tables while the driver plans
        extra["carried"] = builder.carried.remote(
            (graph.num_nodes, layers_only.spec.output_dim), graph.num_users,
            PreviousTables(store.uri, store.io.options, plan.previous), ids["user"], ids["item"])
        frontiers = [f.numpy() for f in expand_hops(graph, plan.changed, num_layers - 1)]
    else:
        frontiers = [np.arange(graph.num_nodes, dtype=np.int64)] * (num_layers - 1)
    layers = []
    for layer in range(1, num_layers):
        runs = _runs(graph, graph_ref, frontiers[layer - 1], RUNS_PER_SLOT * config.num_actors,
                     config)
        base = None
        if plan.mode == "incremental":  # rows the stage does not recompute stay as they were
            base = CachedLayer(store.uri, store.io.options,
                               {e: plan.previous[e].cache[f"layer{layer}"] for e in ENTITIES})
        previous = _assembled_stage(LayerStage(runs, layers_only, layer, previous), config,
                                    builder, (graph.num_nodes, layers_only.spec.hidden_dim),
                                    graph.num_users, base, f"layer{layer}", stats)
        layers.append(previous)
    if plan.mode == "incremental":
        extra["recompute"] = ray.put(frontiers[-1])
        stats["affected_nodes"] = int(frontiers[-1].size)
    else:
        stats["affected_nodes"] = graph.num_nodes
    return FinalStage(layer_runs,
                      LayerStage(final_runs, layers_only, num_layers, previous, **extra),
                      layers, visible)


def final_stage_and_write(config: RefreshConfig, final: FinalStage, store: Store,
                          version: VersionRecord, refresh_id: str, ids: dict[str, ray.ObjectRef],
                          graph: GraphTensors, refreshed_at: datetime,
                          stats: dict) -> dict[str, list[FileRecord]]:
    """The last layer's tasks write their own rows to Parquet (Ray Data fuses the two)."""
    prefixes = {e: table_prefix(store, version.version, e, refresh_id) for e in ENTITIES}
    sink = EmbeddingSink(store.uri, store.io.options, prefixes, ids, ray.put(final.visible),
                         graph.num_users, version.version, refreshed_at)
    started = time.perf_counter()
    # The same concurrency and resources as the map, or Ray Data will not fuse the two.
    _map(final.fn, final.stage, config).write_datasink(
        sink, concurrency=config.num_actors,
        ray_remote_args={"num_cpus": config.cpus_per_actor,
                         "num_gpus": 1 if config.use_gpu else 0})
    files: dict[str, list[FileRecord]] = {e: [] for e in ENTITIES}
    rows = {e: 0 for e in ENTITIES}
    compute, worker_nodes = 0.0, set()
    for record in sink.files():
        files[record["entity"]].append(FileRecord(record["path"], record["size"], record["sha256"]))
        rows[record["entity"]] += record["rows"]
        compute += record["compute_seconds"]
        worker_nodes.add(record["worker_node"])
    label = "sampled" if config.inference == "sampled" else f"layer{version.spec['num_layers']}"
    _record(stats, f"{label}+write", final.stage.runs.bounds[-1], time.perf_counter() - started,
            compute, config)
    stats["rows"] = rows
    stats["worker_nodes"] = sorted(worker_nodes)
    return files


def _write_caches(store: Store, version: int, refresh_id: str, num_users: int,
                  layers: list[ray.ObjectRef]) -> dict[str, dict[str, FileRecord]]:
    """Each layer's rows, users and items, as .npy files written from the object store's copy
    (the driver maps it; it holds no copy of its own)."""
    caches: dict[str, dict[str, FileRecord]] = {e: {} for e in ENTITIES}
    for index, ref in enumerate(layers, start=1):
        layer = ray.get(ref)
        for entity, rows in (("user", layer[:num_users]), ("item", layer[num_users:])):
            path = f"{table_prefix(store, version, entity, refresh_id)}/cache/layer{index}.npy"
            caches[entity][f"layer{index}"] = store.put_parts(path, npy_parts(rows))
    return caches


def run_refresh(config: RefreshConfig) -> RefreshOutcome:
    started = time.perf_counter()
    # The layer builder (kept from the job's last refresh, or starting now) and the tasks'
    # processes get ready while the driver reads the snapshot.
    builder = layer_builder() if config.inference == "layerwise" else None
    warming = warm_workers(config.num_actors, config.cpus_per_actor, 1 if config.use_gpu else 0)
    store = Store(config.store)
    state = store.state()
    version = state.version()
    snapshot = load_snapshot(store, state=state)
    cutoff = snapshot.meta.cutoff
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    plan = plan_refresh(config, state, version, snapshot, graph)
    logger.info("refresh of version %d: %s (%s)", version.version, plan.mode, plan.reason)
    stats: dict = {"mode": plan.mode, "reason": plan.reason, "inference": config.inference,
                   "nodes": graph.num_nodes}
    # Edges are in the graph now; the entity tables stay for ids and visibility. Arrow's pool
    # keeps freed pages (0.4 GB at 10M edges) until told to return them.
    snapshot = dataclasses.replace(snapshot, edges=snapshot.edges.clear())
    pa.default_memory_pool().release_unused()
    graph_ref, graph = share_graph(graph)
    model_bytes = [load_model_bytes(store, version.version, state)]  # handed over, not kept
    ids = {e: ray.put(snapshot.entities(e)["id"].to_arrow()) for e in ENTITIES}  # by idx
    stage = inner_layers(config, plan, store, snapshot, graph, graph_ref, ids, model_bytes,
                         builder, stats)
    refresh_id = store.new_prefix("refresh").split("/", 1)[1]
    refreshed_at = datetime.now(timezone.utc)
    with ThreadPoolExecutor(1, thread_name_prefix="layer-caches") as background:
        # The driver only waits on the final pass: it writes the inner layers meanwhile.
        caching = background.submit(_write_caches, store, version.version, refresh_id,
                                    graph.num_users, stage.inner_layers)
        files = final_stage_and_write(config, stage, store, version, refresh_id, ids, graph,
                                      refreshed_at, stats)
        caches = caching.result()
    for ref in ray.wait(warming, num_returns=len(warming), timeout=0)[1]:
        ray.cancel(ref)  # still waiting for resources: the work is done without them
    stats["affected_fraction"] = round(stats.get("affected_nodes", graph.num_nodes)
                                       / graph.num_nodes, 4)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    rows = sum(stats["rows"].values())
    stats["rows_per_second"] = round(rows / stats["seconds"], 1)
    logger.info("refresh done: %d rows in %.1fs (%.0f rows/s)", rows, stats["seconds"],
                stats["rows_per_second"])
    tables = [TableFiles(entity, files[entity], stats["rows"][entity], version.dim,
                         stats={k: v for k, v in stats.items() if k != "rows"},
                         cache=caches[entity]) for entity in ENTITIES]
    if config.chaos == "kill-before-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    publish_refresh(store, version.version, refresh_id, tables, state.current_snapshot, cutoff,
                    plan.mode, refreshed_at)
    return RefreshOutcome(version.version, refresh_id, plan.mode, stats)

