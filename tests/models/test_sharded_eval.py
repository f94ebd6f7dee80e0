"""The sharded layer-wise pass in one process (no group: every exchange is the worker's own)
against the full-graph forward, with runs so small that hubs are aggregated a slice of their
neighbours at a time: the same rows, for each aggregation."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bc_ray.core.row_shards import RowOwners
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import ModelFile, SpanTable
from bc_ray.models.graphsage.serialization import model_from_file, model_to_bytes
from bc_ray.models.graphsage.sharded_eval import OneHop, _chunks, sharded_layerwise
from bc_ray.models.graphsage.sharded_task import (
    LocalRows,
    ShardedLinkPredictionTask,
    sharded_model,
)
from bc_ray.models.graphsage.spec import VersionSpec

CONFIG = TrainConfig(batch_size=16, mode="sampled", fanout=-1, sparse_ids_min_nodes=0)
MAX_ENDS = 4


@dataclass
class OneWorker:
    """A model over the snapshot's training graph and the sharded task of one worker owning
    every row: what `sharded_layerwise` runs without a process group."""

    graph: object
    model: EmbeddingModel
    owners: RowOwners
    rows: LocalRows
    task: ShardedLinkPredictionTask


def _one_worker(snapshot, aggregation: str, light: bool) -> OneWorker:
    graph = period_split(snapshot, 0.6, 0.8).graph
    spec = VersionSpec(num_layers=2, hidden_dim=8, batch_norm=False, aggregation=aggregation)
    torch.manual_seed(0)
    model = EmbeddingModel(spec, graph.num_users, graph.num_items, graph.user_vocab,
                           graph.item_vocab, light=light)
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), 1)
    rows = LocalRows.from_edges(owners, 0, graph.edge_user.numpy(), graph.edge_item.numpy())
    task = ShardedLinkPredictionTask(sharded_model(spec, graph), graph, rows, CONFIG,
                                     torch.zeros(graph.num_nodes, spec.hidden_dim))
    return OneWorker(graph, model, owners, rows, task)


@pytest.mark.parametrize("aggregation,light,sliced", [
    ("mean", False, True), ("sum", True, True), ("max", True, True),
    ("max", False, False),  # PyG's own max conv: a hub stays a run alone
])
def test_hubs_aggregated_in_slices_give_the_full_graph_forwards_rows(small_snapshot, aggregation,
                                                                     light, sliced):
    one = _one_worker(small_snapshot, aggregation, light)
    graph, model, owners, rows, task = one.graph, one.model, one.owners, one.rows, one.task
    runs = _chunks(owners.nodes_of(0), rows.crow, 64, MAX_ENDS,
                   split_hubs=model.aggregation() is not None)
    slices = sum(run.ends is not None for run in runs)
    assert (slices > np.count_nonzero(np.diff(rows.crow) > MAX_ENDS)) == sliced
    z_user, z_item = model.embed(graph)
    z = sharded_layerwise(task, model, chunk=64, max_ends=MAX_ENDS)
    reference = torch.cat([z_user, z_item])
    # Float rounding alone, against the rows' scale: a hub's sum is taken slice by slice, and
    # summed rows run into the hundreds.
    assert (z - reference).abs().max() <= 1e-6 * reference.abs().max()
    # The last layer of some rows alone, hubs among them.
    scored = torch.from_numpy(np.flatnonzero(np.diff(rows.crow) > 2 * MAX_ENDS))
    partial = sharded_layerwise(task, model, scored, chunk=64, max_ends=MAX_ENDS)
    assert scored.numel() > 0
    assert (partial - z[scored]).abs().max() <= 1e-6 * reference.abs().max()


@pytest.mark.parametrize("subset", [False, True])
def test_a_runs_neighbourhood_is_its_rows_over_their_neighbours_in_owner_order(small_snapshot,
                                                                              subset):
    graph = period_split(small_snapshot, 0.6, 0.8).graph
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), 3)
    num_nodes = graph.num_users + graph.num_items
    for rank in range(3):
        rows = LocalRows.from_edges(owners, rank, graph.edge_user.numpy(), graph.edge_item.numpy())
        local = torch.arange(owners.num_rows(rank))  # its users and items: both kinds
        if subset:
            local = local[::3]
        hop = OneHop.of(rows, local)
        # Each source once, sorted by owner then id: what `gather` sends without reordering.
        key = owners.owner(hop.sources) * num_nodes + hop.sources
        assert bool((key[1:] > key[:-1]).all())
        # Every row lists its own neighbours, its columns ascending (as CSR keeps them).
        adjacency = hop.adjacency
        assert adjacency.num_dst == local.numel() and adjacency.num_src == hop.sources.numel()
        for position, row in enumerate(local.tolist()):
            columns = adjacency.cols[adjacency.crow[position]:adjacency.crow[position + 1]]
            assert bool((columns[1:] > columns[:-1]).all())
            expected = rows.neighbours[rows.crow[row]:rows.crow[row + 1]]
            assert hop.sources[columns].tolist() == expected.tolist()
    empty = OneHop.of(rows, local[:0])  # a padding run
    assert empty.sources.numel() == 0 and empty.adjacency.crow.tolist() == [0]


@pytest.mark.parametrize("aggregation,light", [("mean", False), ("max", True), ("max", False)])
def test_runs_of_one_node_nodes_without_neighbours_among_them_give_the_forwards_rows(
        small_snapshot, aggregation, light):
    one = _one_worker(small_snapshot, aggregation, light)
    user_degree, item_degree = one.graph.degrees()
    assert (user_degree == 0).any() and (item_degree == 0).any()  # runs with no sources
    reference = torch.cat(one.model.embed(one.graph))
    z = sharded_layerwise(one.task, one.model, chunk=1)
    assert (z - reference).abs().max() <= 1e-6 * reference.abs().max()


def test_a_parent_read_in_parts_scores_as_its_mapped_file(small_snapshot, tmp_path):
    """The gate's M_{k-1} on object storage (`ModelFile`: the worker's own span of each ID
    table) embeds the worker's rows as the mapped file does. One worker's span is every row:
    spans that start past row 0 and refuse other rows are test_model_file.py's."""
    one = _one_worker(small_snapshot, "mean", light=True)
    path = tmp_path / "model.pt"
    path.write_bytes(model_to_bytes(one.model))
    with open(path, "rb") as handle:
        parent = ModelFile(handle).model({e: (a, b) for e, a, b, _ in one.owners.spans(0)})
    assert isinstance(parent.ids["item"], SpanTable)
    expected = sharded_layerwise(one.task, model_from_file(str(path)), chunk=64)
    assert torch.equal(sharded_layerwise(one.task, parent, chunk=64), expected)
