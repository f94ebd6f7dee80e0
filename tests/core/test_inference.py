"""Layer-wise inference pieces the refresh distributes: the layers without the input tables,
and the split of nodes into runs of equal work."""

import pickle

import torch

from bc_ray.core.graph import build_graph
from bc_ray.models.graphsage.inference import balanced_bounds, layer_for_nodes, layerwise_embed
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.serialization import model_from_bytes, model_to_bytes
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.data.timeline import edges_until


def _graph(snapshot, t=0.8):
    return build_graph(snapshot, edges_until(snapshot, t), now=t)


def test_layer_stack_from_given_inputs_equals_the_whole_model(small_snapshot):
    """Tasks get h_0 from the driver and only the GraphSAGE layers, shipped pickled."""
    graph = _graph(small_snapshot)
    torch.manual_seed(0)
    model = model_from_bytes(model_to_bytes(
        build_model(VersionSpec(num_layers=3, hidden_dim=8), graph)), light=True)
    stack = pickle.loads(pickle.dumps(model.layer_stack()))
    assert sum(p.numel() for p in stack.parameters()) < sum(p.numel() for p in
                                                             model.parameters()) / 10
    nodes = torch.arange(graph.num_nodes)
    with torch.no_grad():
        current = model.inputs(graph)
    for layer in (1, 2, 3):
        current = torch.cat([layer_for_nodes(stack, graph, layer, current, part)
                             for part in nodes.split(7)])
    [expected] = layerwise_embed(model, graph)
    assert torch.allclose(current, expected, atol=1e-5)
    assert torch.allclose(current, model(graph), atol=1e-5)


def test_runs_split_nodes_by_edges_not_by_count(small_snapshot):
    graph = _graph(small_snapshot)
    crow = graph.adjacency().crow
    nodes = torch.arange(graph.num_nodes)
    degree = crow[1:] - crow[:-1]
    for parts, node_cost in ((2, 1), (4, 1), (3, 16)):
        bounds = balanced_bounds(graph, nodes, parts, node_cost)
        assert bounds[0] == 0 and bounds[-1] == graph.num_nodes and len(bounds) == parts + 1
        assert bounds == sorted(bounds)
        cost = [int((degree[a:b] + node_cost).sum()) for a, b in zip(bounds, bounds[1:])]
        heaviest = int((degree + node_cost).max())
        # Each run is within one node's cost of an equal share.
        assert max(cost) - min(cost) <= 2 * heaviest, (parts, cost)
    # Items (higher degree here) get fewer nodes per run than users.
    users, items = balanced_bounds(graph, nodes, 2), graph.num_users
    assert degree[items:].float().mean() > degree[:items].float().mean()
    assert users[1] > graph.num_nodes / 2


def test_runs_of_a_small_or_empty_node_set(small_snapshot):
    """More runs than nodes leave empty runs (their tasks write nothing); no nodes, one run."""
    graph = _graph(small_snapshot)
    bounds = balanced_bounds(graph, torch.arange(2), 4)
    assert len(bounds) == 5 and bounds[0] == 0 and bounds[-1] == 2 and bounds == sorted(bounds)
    assert balanced_bounds(graph, torch.arange(0), 3) == [0, 0]


def test_a_refresh_tasks_csr_only_graph_moves_with_its_adjacency(small_snapshot):
    """A task's graph has no edge list (`unpack_graph`): a copy on another device (a GPU
    under `--use-gpu`) must carry the CSR, or the layer would aggregate over no neighbours."""
    from bc_ray.refresh.pack import pack_graph, unpack_graph

    graph = _graph(small_snapshot)
    model = build_model(VersionSpec(hidden_dim=16), graph).eval()
    task_graph = unpack_graph(pickle.loads(pickle.dumps(pack_graph(graph))))
    moved = task_graph.to("cpu")
    assert moved.num_edges == 0
    assert torch.equal(moved.adjacency().cols, graph.adjacency().cols)
    torch.testing.assert_close(layerwise_embed(model, moved)[-1], layerwise_embed(model, graph)[-1])
