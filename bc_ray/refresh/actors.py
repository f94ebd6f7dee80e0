"""Stateful `map_batches` callables: model and graph loaded once per actor, then one layer (or a
sampled L-hop forward) for each batch of node ids (the ``data`` column of `from_numpy`)."""

from __future__ import annotations

import time

import numpy as np
import ray
import torch

from bc_ray.core.inference import layer_for_nodes
from bc_ray.core.sampler import NeighborSampler
from bc_ray.core.serialization import model_from_bytes
from bc_ray.refresh.pack import shared_tensor, unpack_graph


def _resolve(value):
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _timed_output(nodes: np.ndarray, values: np.ndarray, started: float) -> dict:
    """Each row carries its share of the batch's compute time, so sums over any set of rows
    give compute seconds without actor start-up or scheduling."""
    share = (time.perf_counter() - started) / max(len(nodes), 1)
    return {"node": nodes, "embedding": values, "seconds": np.full(len(nodes), share)}


class LayerActor:
    """h_layer for a batch of nodes, reading h_{layer-1} of every node from the object store
    (layer 1 computes the cheap input layer h_0 of every node itself, once per actor).

    With `carried` (an incremental refresh's final stage), only the nodes in `recompute` are
    computed; the other rows are copied from `carried` (the previous table, by node)."""

    def __init__(self, model, graph, layer: int, previous=None, threads: int = 1,
                 carried=None, recompute=None) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = model_from_bytes(_resolve(model), light=True)
        self.graph = unpack_graph(_resolve(graph))
        self.layer = layer
        if layer == 1:
            with torch.no_grad():
                self.previous = self.model.inputs(self.graph)
        else:
            self.previous = shared_tensor(_resolve(previous))
        self.carried = None if carried is None else np.asarray(_resolve(carried))
        self.recompute = None
        if recompute is not None:
            self.recompute = np.zeros(self.graph.num_nodes, dtype=bool)
            self.recompute[np.asarray(_resolve(recompute))] = True

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        nodes = np.array(batch["data"], dtype=np.int64)
        if self.carried is None:
            values = layer_for_nodes(self.model, self.graph, self.layer, self.previous,
                                     torch.from_numpy(nodes)).numpy()
            return _timed_output(nodes, values, started)
        values = self.carried[nodes].copy()
        fresh = self.recompute[nodes]
        if fresh.any():
            values[fresh] = layer_for_nodes(self.model, self.graph, self.layer, self.previous,
                                            torch.from_numpy(nodes[fresh])).numpy()
        return _timed_output(nodes, values, started)


class SampledActor:
    """Every node of the batch from its own neighbour-sampled L-hop neighbourhood."""

    def __init__(self, model, graph, fanout: int, seed: int = 0, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = model_from_bytes(_resolve(model), light=True)
        self.graph = unpack_graph(_resolve(graph))
        self.sampler = NeighborSampler(self.graph.adjacency(),
                                       [fanout] * self.model.spec.num_layers,
                                       torch.Generator().manual_seed(seed))

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        nodes = np.array(batch["data"], dtype=np.int64)
        with torch.no_grad():
            values = self.model(self.graph, self.sampler.sample(torch.from_numpy(nodes)))
        return _timed_output(nodes, values.numpy(), started)
