"""Inference over a whole graph: layer-wise, neighbour-sampled, and incremental.

Layer-wise: compute layer l for every node (in chunks of destination nodes), then layer l+1 from
those. Each layer costs one pass over the edges, whereas computing every node from its own
sampled L-hop neighbourhood repeats the shared lower layers for every node.

Incremental: a new edge (u, i) changes layer 1 of u and i, layer 2 of their neighbours as well,
and so on: with L layers every node within L-1 hops of a changed node changes. Given the cached
layers h_1..h_{L-1} of the previous refresh, only those nodes are recomputed, layer by layer;
everything else is carried over and equals a full recomputation to float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bc_ray.core.graph import Adjacency, GraphTensors
from bc_ray.exceptions import ShapeError
from bc_ray.models.graphsage.model import EmbeddingModel, LayerStack
from bc_ray.models.graphsage.sampler import NeighborSampler

DEFAULT_CHUNK = 65_536


def _row_entries(graph: GraphTensors, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, neighbour) of every adjacency entry in the rows of `nodes`, row by row; owner
    indexes `nodes`."""
    full = graph.adjacency()
    start, degree = full.crow[nodes], full.crow[nodes + 1] - full.crow[nodes]
    owner = torch.repeat_interleave(torch.arange(nodes.numel(), device=degree.device), degree)
    offset = (torch.arange(int(degree.sum()), device=degree.device)
              - (torch.cumsum(degree, 0) - degree)[owner])
    return owner, full.cols[start[owner] + offset]


def rows_adjacency(graph: GraphTensors, nodes: torch.Tensor) -> Adjacency:
    """Operator from all nodes to `nodes` (row r = neighbours of nodes[r])."""
    owner, neighbours = _row_entries(graph, nodes)
    # Rows of a CSR, in order: already sorted and distinct.
    return Adjacency(owner, neighbours, nodes.numel(), graph.num_nodes, distinct=True)


@torch.no_grad()
def layer_for_nodes(model: EmbeddingModel | LayerStack, graph: GraphTensors, layer: int,
                    previous: torch.Tensor | None, nodes: torch.Tensor) -> torch.Tensor:
    """h_layer for `nodes`: layer 0 is the input embedding (a full model only); layer l >= 1
    aggregates h_{l-1} (`previous`, every node) over the nodes' neighbours."""
    model.eval()
    if layer == 0:
        assert isinstance(model, EmbeddingModel), "layer 0 needs the model's input tables"
        return model.inputs(graph, nodes)
    return model.layer(layer - 1, previous, rows_adjacency(graph, nodes), previous[nodes])


def _chunks(nodes: torch.Tensor, chunk: int):
    for start in range(0, nodes.numel(), chunk):
        yield nodes[start:start + chunk]


@torch.no_grad()
def layerwise_embed(model: EmbeddingModel, graph: GraphTensors, chunk: int = DEFAULT_CHUNK,
                    keep_layers: bool = False) -> list[torch.Tensor]:
    """[h_1, ..., h_L] if `keep_layers` else [h_L], each for every node (users then items), on
    the graph's device."""
    nodes = torch.arange(graph.num_nodes, device=graph.adjacency().crow.device)
    layers: list[torch.Tensor] = []
    current = None
    for layer in range(model.spec.num_layers + 1):
        current = torch.cat([layer_for_nodes(model, graph, layer, current, part)
                             for part in _chunks(nodes, chunk)])
        if layer > 0 and (keep_layers or layer == model.spec.num_layers):
            layers.append(current)
    return layers


@torch.no_grad()
def sampled_embed(model: EmbeddingModel, graph: GraphTensors, fanout: int = 10,
                  chunk: int = 4_096, seed: int = 0) -> torch.Tensor:
    """Every node from its own sampled L-hop neighbourhood (the approach layer-wise replaces)."""
    model.eval()
    sampler = NeighborSampler(graph.adjacency(), [fanout] * model.spec.num_layers,
                              torch.Generator().manual_seed(seed))
    parts = [model(graph, sampler.sample(part))
             for part in _chunks(torch.arange(graph.num_nodes), chunk)]
    return torch.cat(parts)


def expand_hops(graph: GraphTensors, nodes: torch.Tensor, hops: int,
                chunk: int = 8_192) -> list[torch.Tensor]:
    """[A_0, A_1, ..., A_hops]: A_0 = nodes, A_{h+1} = A_h plus its neighbours (sorted, unique).

    Marked in a flag per node, a chunk of A_h at a time: a few popular items reach millions of
    entries, which listed all at once cost ~0.4 GB at 10M edges."""
    frontiers = [torch.unique(nodes)]
    for _ in range(hops):
        reached = torch.zeros(graph.num_nodes, dtype=torch.bool)
        reached[frontiers[-1]] = True
        for part in _chunks(frontiers[-1], chunk):
            reached[_row_entries(graph, part)[1]] = True
        frontiers.append(torch.nonzero(reached).flatten())
    return frontiers


def layer_frontiers(graph: GraphTensors, touched: torch.Tensor, entities: torch.Tensor,
                    num_layers: int) -> list[torch.Tensor]:
    """The nodes whose layer l = 1..L may change: within l-1 hops of a node with new edges
    (layer 1 of both endpoints aggregates the new edge), and within l hops of an entity whose
    own row changed (its input h_0 changed, so its neighbours' layer 1 did too)."""
    by_edges = expand_hops(graph, touched, num_layers - 1)
    by_inputs = expand_hops(graph, entities, num_layers)
    return [torch.from_numpy(np.union1d(by_edges[layer - 1].numpy(), by_inputs[layer].numpy()))
            for layer in range(1, num_layers + 1)]


@dataclass
class IncrementalResult:
    layers: list[torch.Tensor]  # h_1..h_L for every node
    affected: torch.Tensor  # nodes whose final embedding was recomputed


@torch.no_grad()
def incremental_embed(model: EmbeddingModel, graph: GraphTensors, cached: list[torch.Tensor],
                      changed: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> IncrementalResult:
    """Update the cached layers h_1..h_L of the previous refresh after the nodes in `changed`
    gained edges or appeared (rows of new nodes in `cached` are ignored: they are in `changed`).

    Layer l is recomputed for the nodes within l-1 hops of `changed`; every other row is carried
    over, and the result equals `layerwise_embed(keep_layers=True)` on the new graph.
    """
    num_layers = model.spec.num_layers
    if len(cached) != num_layers:
        raise ShapeError(f"expected {num_layers} cached layers, got {len(cached)}")
    frontiers = expand_hops(graph, changed, num_layers)
    # Layer 1 of the targets reads layer 0 (the inputs, cheap) of their neighbours.
    previous = torch.zeros(graph.num_nodes, model.spec.hidden_dim)
    for part in _chunks(frontiers[1], chunk):
        previous[part] = layer_for_nodes(model, graph, 0, None, part)
    layers: list[torch.Tensor] = []
    for layer in range(1, num_layers + 1):
        current = cached[layer - 1].clone()
        for part in _chunks(frontiers[layer - 1], chunk):
            current[part] = layer_for_nodes(model, graph, layer, previous, part)
        layers.append(current)
        previous = current
    return IncrementalResult(layers=layers, affected=frontiers[num_layers - 1])


def balanced_bounds(graph: GraphTensors, nodes: torch.Tensor, parts: int,
                    node_cost: int = 1) -> list[int]:
    """Split `nodes` into `parts` contiguous runs of about equal work: bounds b with run i =
    nodes[b[i]:b[i+1]]. A node's layer costs about its degree (measured at 10M edges: items,
    a tenth of the nodes, hold half the edges and take 58 % of the time), so runs of equal
    length would leave the worker with the items finishing last. `node_cost` adds work per
    node, in edges (writing a row costs about as much as aggregating 16 edges)."""
    crow = graph.adjacency().crow
    cost = torch.cumsum(crow[nodes + 1] - crow[nodes] + node_cost, 0)
    targets = cost[-1] * torch.arange(1, parts) / parts if nodes.numel() else cost[:0]
    inner = (torch.searchsorted(cost, targets) + 1).clamp(max=nodes.numel()).tolist()
    return [0, *inner, nodes.numel()]
