"""The refresh's Ray Data work: one task per run of nodes, computing one layer (or a sampled
L-hop forward) chunk by chunk and streaming each chunk on as it is done.

Tasks rather than an actor pool per stage: Ray reuses a job's worker processes across tasks, so
every stage runs in processes that `warm.start_task_processes` started (torch imported) while
the driver imported or read the snapshot. An actor pool pays process start, imports and model
loading again for every layer (~5 s per stage at 10M edges).

A task maps its inputs (the graph, the previous layer) zero-copy from the object store and lets
them go when it ends: a layer nobody maps any more is freed, and the object store can place the
next layer in its pages instead of growing every process that wrote or read both. Only the
sampled stage's model, a copy, is kept by the process for the stage's next task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import torch

from bc_ray.core.family import EmbeddingModule, ModelFamily
from bc_ray.core.graph import GraphTensors, shared_tensor
from bc_ray.core.registry import get_family
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.inference import layer_for_nodes
from bc_ray.models.graphsage.model import LayerStack
from bc_ray.models.graphsage.sampler import NeighborSampler
from bc_ray.refresh.pack import unpack_graph
from bc_ray.store.parquet import embedding_array

_model: tuple[str, EmbeddingModule] | None = None  # (object id, model) of the last stage's


@dataclass(frozen=True)
class Runs:
    """The nodes a stage covers, split into runs (one task each) and chunks (one output block
    each): run i is nodes[bounds[i]:bounds[i+1]]."""

    graph: ray.ObjectRef  # pack.pack_graph
    nodes: ray.ObjectRef  # int64 node ids
    bounds: tuple[int, ...]
    chunk: int
    threads: int
    use_gpu: bool = False  # each task was given a GPU (`--use-gpu`) and computes on it

    def chunks(self, batch: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
        nodes = np.asarray(ray.get(self.nodes))
        for run in batch["id"]:
            part = nodes[self.bounds[run]:self.bounds[run + 1]]
            for start in range(0, part.size, self.chunk):
                yield part[start:start + self.chunk]

    def graph_tensors(self) -> GraphTensors:
        torch.set_num_threads(max(1, self.threads))
        return unpack_graph(ray.get(self.graph))

    def device(self) -> torch.device:
        """The task's GPU under `--use-gpu` (Ray makes the one it assigned the only visible)."""
        if not self.use_gpu:
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise ConfigError("--use-gpu: Ray gave this task a GPU, but torch sees no CUDA "
                               f"device (torch {torch.__version__}: a CPU build?)")
        return torch.device("cuda")


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
    family: str = "graphsage"


@dataclass(frozen=True)
class EntityStage:
    """Any family without a strategy of its own: `ModelFamily.embed` over runs of entities,
    reading what `embed_inputs` prepared on the driver. Incremental as `LayerStage`: with
    `carried`, only the nodes flagged in `recompute` are embedded."""

    runs: Runs
    model: ray.ObjectRef  # model bytes
    family: str  # as the version record names it
    inputs: ray.ObjectRef  # ModelFamily.embed_inputs
    carried: ray.ObjectRef | None = None
    recompute: ray.ObjectRef | None = None


def _timed(nodes: np.ndarray, values: np.ndarray, started: float) -> pa.Table:
    """A chunk's rows as a plain Arrow block (the vectors as fixed-size lists, not Ray Data's
    tensor type: the layer builder and the sink read them without Ray Data). Each row carries
    its share of the chunk's compute time, so sums over any set of rows give compute seconds
    without start-up or scheduling."""
    share = (time.perf_counter() - started) / max(len(nodes), 1)
    return pa.table({"node": nodes, "embedding": embedding_array(values),
                     "seconds": np.full(len(nodes), share)})


def layer_runs(batch: dict[str, np.ndarray], stage: LayerStage) -> Iterator[pa.Table]:
    device = stage.runs.device()
    graph = stage.runs.graph_tensors()
    recompute = _recompute_mask(stage, graph.num_nodes)
    carried = None if recompute is None else np.asarray(ray.get(stage.carried))
    # On a GPU the task copies the graph and the previous layer there once, for all its chunks.
    previous, layers = shared_tensor(ray.get(stage.previous)), stage.layers
    if device.type != "cpu":
        previous, graph, layers = previous.to(device), graph.to(device), layers.to(device)

    def computed(nodes: np.ndarray) -> np.ndarray:
        return layer_for_nodes(layers, graph, stage.layer, previous,
                               torch.from_numpy(nodes).to(device)).cpu().numpy()

    for nodes in stage.runs.chunks(batch):
        started = time.perf_counter()
        if carried is None:
            values = computed(nodes)
        else:
            values = carried[nodes].copy()
            fresh = recompute[nodes]
            if fresh.any():
                values[fresh] = computed(nodes[fresh])
        yield _timed(nodes, values, started)


def _stage_model(ref: ray.ObjectRef, family: ModelFamily) -> EmbeddingModule:
    """The stage's model, loaded once per process (a copy: ~0.3 GB of ID tables at 10M)."""
    global _model
    if _model is None or _model[0] != ref.hex():
        _model = None  # the last one goes before the next is loaded
        _model = (ref.hex(), family.from_bytes(ray.get(ref), light=True))
    return _model[1]


def _recompute_mask(stage: LayerStage | EntityStage, num_nodes: int) -> np.ndarray | None:
    if stage.carried is None:
        return None
    recompute = np.zeros(num_nodes, dtype=bool)
    recompute[np.asarray(ray.get(stage.recompute))] = True
    return recompute


def sampled_runs(batch: dict[str, np.ndarray], stage: SampledStage) -> Iterator[pa.Table]:
    device = stage.runs.device()
    graph = stage.runs.graph_tensors()
    model = _stage_model(stage.model, get_family(stage.family)).to(device)
    # The sampler walks the CPU graph; the model reads the features on its device.
    features = graph if device.type == "cpu" else graph.to(device, with_adjacency=False)
    for run in batch["id"]:
        # Seeded by run, not by process: the same refresh samples the same neighbourhoods
        # wherever its tasks land.
        sampler = NeighborSampler(graph.adjacency(), [stage.fanout] * model.spec.num_layers,
                                  torch.Generator().manual_seed(stage.seed + int(run)))
        for nodes in stage.runs.chunks({"id": [run]}):
            started = time.perf_counter()
            with torch.no_grad():
                values = model(features, sampler.sample(torch.from_numpy(nodes)).to(device))
            yield _timed(nodes, values.cpu().numpy(), started)


def entity_runs(batch: dict[str, np.ndarray], stage: EntityStage) -> Iterator[pa.Table]:
    family = get_family(stage.family)
    torch.set_num_threads(max(1, stage.runs.threads))
    model = _stage_model(stage.model, family)
    inputs = ray.get(stage.inputs)
    carried = None if stage.carried is None else np.asarray(ray.get(stage.carried))
    recompute = None if carried is None else _recompute_mask(stage, len(carried))
    for nodes in stage.runs.chunks(batch):
        started = time.perf_counter()
        with torch.no_grad():
            if carried is None:
                values = family.embed(model, inputs, nodes)
            else:
                values = carried[nodes].copy()
                fresh = recompute[nodes]
                if fresh.any():
                    values[fresh] = family.embed(model, inputs, nodes[fresh])
        yield _timed(nodes, np.asarray(values, dtype=np.float32), started)
