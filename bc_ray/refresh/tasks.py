"""The refresh's Ray Data work: one task per run of nodes, computing one layer (or a sampled
L-hop forward) chunk by chunk and streaming each chunk on as it is done.

Tasks rather than an actor pool per stage: Ray reuses a job's worker processes across tasks, so
every stage runs in processes that `warm_workers` started (torch imported) while the driver read
the snapshot, and the later stages find the graph already mapped. An actor pool pays process
start, imports and model loading again for every layer (~5 s per stage at 10M edges).

Each process keeps the inputs it last resolved (`_held`): the graph and the current stage's
arrays, all zero-copy views of the object store, keyed by their object ids. A new stage or
refresh replaces them; `bc-ray refresh`'s workers exit with its job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import ray
import torch

from bc_ray.core.graph import GraphTensors
from bc_ray.core.inference import layer_for_nodes
from bc_ray.core.model import LayerStack
from bc_ray.core.sampler import NeighborSampler
from bc_ray.core.serialization import model_from_bytes
from bc_ray.refresh.pack import shared_tensor, unpack_graph

T = TypeVar("T")
_held: dict[str, tuple[tuple, Any]] = {}  # slot -> (key, value)


def _cached(slot: str, key: tuple, build: Callable[[], T]) -> T:
    held = _held.get(slot)
    if held is None or held[0] != key:
        _held.pop(slot, None)  # let the old views go before mapping new ones
        held = (key, build())
        _held[slot] = held
    return held[1]


def _key(*refs: ray.ObjectRef | None) -> tuple:
    return tuple(None if ref is None else ref.hex() for ref in refs)


@dataclass(frozen=True)
class Runs:
    """The nodes a stage covers, split into runs (one task each) and chunks (one output block
    each): run i is nodes[bounds[i]:bounds[i+1]]."""

    graph: ray.ObjectRef  # pack.pack_graph
    nodes: ray.ObjectRef  # int64 node ids
    bounds: tuple[int, ...]
    chunk: int
    threads: int

    def chunks(self, batch: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
        nodes = _cached("nodes", _key(self.nodes), lambda: np.asarray(ray.get(self.nodes)))
        for run in batch["id"]:
            part = nodes[self.bounds[run]:self.bounds[run + 1]]
            for start in range(0, part.size, self.chunk):
                yield part[start:start + self.chunk]

    def graph_tensors(self) -> GraphTensors:
        torch.set_num_threads(max(1, self.threads))
        return _cached("graph", _key(self.graph), lambda: unpack_graph(ray.get(self.graph)))


@dataclass(frozen=True)
class LayerStage:
    """h_layer of the runs' nodes from h_{layer-1} of every node (`previous`). With `carried`
    (an incremental refresh's final stage) only nodes flagged in `recompute` are computed and
    the others copy their row of `carried` (the previous tables, by node)."""

    runs: Runs
    layers: LayerStack
    layer: int
    previous: ray.ObjectRef
    carried: ray.ObjectRef | None = None
    recompute: ray.ObjectRef | None = None


@dataclass(frozen=True)
class SampledStage:
    """Every node of the runs from its own neighbour-sampled L-hop neighbourhood."""

    runs: Runs
    model: ray.ObjectRef  # model bytes
    fanout: int
    seed: int = 0


def _timed(nodes: np.ndarray, values: np.ndarray, started: float) -> dict:
    """Each row carries its share of the chunk's compute time, so sums over any set of rows
    give compute seconds without start-up or scheduling."""
    share = (time.perf_counter() - started) / max(len(nodes), 1)
    return {"node": nodes, "embedding": values, "seconds": np.full(len(nodes), share)}


def layer_runs(batch: dict[str, np.ndarray], stage: LayerStage) -> Iterator[dict]:
    graph = stage.runs.graph_tensors()

    def inputs() -> tuple:
        previous = shared_tensor(ray.get(stage.previous))
        if stage.carried is None:
            return previous, None, None
        recompute = np.zeros(graph.num_nodes, dtype=bool)
        recompute[np.asarray(ray.get(stage.recompute))] = True
        return previous, np.asarray(ray.get(stage.carried)), recompute

    previous, carried, recompute = _cached(
        "stage", _key(stage.previous, stage.carried, stage.recompute), inputs)
    for nodes in stage.runs.chunks(batch):
        started = time.perf_counter()
        if carried is None:
            values = layer_for_nodes(stage.layers, graph, stage.layer, previous,
                                     torch.from_numpy(nodes)).numpy()
        else:
            values = carried[nodes].copy()
            fresh = recompute[nodes]
            if fresh.any():
                values[fresh] = layer_for_nodes(stage.layers, graph, stage.layer, previous,
                                                torch.from_numpy(nodes[fresh])).numpy()
        yield _timed(nodes, values, started)


def sampled_runs(batch: dict[str, np.ndarray], stage: SampledStage) -> Iterator[dict]:
    graph = stage.runs.graph_tensors()
    model = _cached("stage", _key(stage.model),
                    lambda: model_from_bytes(ray.get(stage.model), light=True))
    for run in batch["id"]:
        # Seeded by run, not by process: the same refresh samples the same neighbourhoods
        # wherever its tasks land.
        sampler = NeighborSampler(graph.adjacency(), [stage.fanout] * model.spec.num_layers,
                                  torch.Generator().manual_seed(stage.seed + int(run)))
        for nodes in stage.runs.chunks({"id": [run]}):
            started = time.perf_counter()
            with torch.no_grad():
                values = model(graph, sampler.sample(torch.from_numpy(nodes)))
            yield _timed(nodes, values.numpy(), started)


@ray.remote
def _warm() -> str:
    import ray.data  # noqa: F401  (the stages' task code)

    return ray.get_runtime_context().get_node_id()


def warm_workers(count: int, cpus: float, gpus: int) -> list[ray.ObjectRef]:
    """Start the processes the stages will run in, and their imports (torch, this module,
    Ray Data: ~2 s each), while the driver is busy reading the snapshot."""
    return [_warm.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD").remote()
            for _ in range(count)]
