"""Node ranges and their halos (no Ray): a range's rows are the whole graph's rows, and a layer
computed range by range from the pieces the ranges send each other equals the whole graph's."""

import numpy as np
import pytest
import torch

from bc_ray.core.graph import Adjacency, GraphTensors, build_graph
from bc_ray.core.node_rows import drained, range_rows, row_keys, rows_of_keys
from bc_ray.data.timeline import edges_until
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.inference import expand_hops, layerwise_embed
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.refresh.range_layer import RangeLayer
from bc_ray.refresh.ranges import (
    WHOLE_SHARE,
    NodeRanges,
    Outgoing,
    find_hubs,
    range_sources,
    split_range,
)


def _edges(seed: int = 0, users: int = 40, items: int = 15, count: int = 300):
    rng = np.random.default_rng(seed)
    # Skewed items (a few hubs), and repeats, which the CSR merges.
    items_drawn = np.minimum(rng.zipf(1.6, count) - 1, items - 1)
    return rng.integers(0, users, count), items_drawn.astype(np.int64), users, items


def test_a_range_holds_the_whole_graphs_rows():
    edge_user, edge_item, users, items = _edges()
    whole = Adjacency.bipartite(torch.from_numpy(edge_user), torch.from_numpy(edge_item), users,
                                items)
    for start, stop in ((0, users + items), (0, 7), (35, 48), (users, users + items)):
        crow, cols = range_rows(edge_user, edge_item, users, users + items, start, stop)
        expected = whole.crow[start:stop + 1] - whole.crow[start]
        assert np.array_equal(crow, expected.numpy())
        span = whole.cols[int(whole.crow[start]):int(whole.crow[stop])]
        assert np.array_equal(cols, span.numpy())


def test_rows_from_a_stream_of_keys_equal_the_rows_of_the_whole_edge_list():
    """What a worker or a range task keeps of a stream, a batch at a time: 8-byte keys of the
    ends in its rows; repeats across batches merged as the whole list's rows merge them."""
    edge_user, edge_item, users, items = _edges(seed=3)
    nodes = users + items
    for start, stop in ((0, nodes), (5, 30), (users - 3, users + 6), (users, nodes)):
        chunks = [row_keys(edge_user[at:at + 37], edge_item[at:at + 37], users, nodes, start,
                           stop) for at in range(0, edge_user.size, 37)]
        crow, cols = rows_of_keys(drained(chunks), stop - start, nodes)
        expected_crow, expected_cols = range_rows(edge_user, edge_item, users, nodes, start, stop)
        assert not chunks  # emptied as they were copied
        assert np.array_equal(crow, expected_crow) and np.array_equal(cols, expected_cols)
    # int32 indices, as Parquet gives them, do not overflow their keys.
    big = 3_000_000_000 // 2
    keys = row_keys(np.array([1], dtype=np.int32), np.array([2], dtype=np.int32), big, 2 * big,
                    0, 10)
    assert keys.tolist() == [1 * 2 * big + 2 + big]


def test_balanced_ranges_cover_every_node_once():
    degrees = np.array([1, 0, 50, 2, 2, 2, 0, 1, 40, 3])
    ranges = NodeRanges.balanced(degrees, 3)
    assert ranges.bounds[0] == 0 and ranges.bounds[-1] == degrees.size
    assert np.all(np.diff(ranges.bounds) >= 0) and len(ranges) == 3
    assert ranges.owner(np.arange(degrees.size)).tolist() == sorted(
        ranges.owner(np.arange(degrees.size)).tolist())
    many = NodeRanges.balanced(degrees, 25)  # more ranges than nodes: some are empty
    assert many.bounds[-1] == degrees.size and len(many) == 25
    with pytest.raises(ConfigError, match="--partitions"):
        NodeRanges.balanced(degrees, 0)


def _sent(outgoing: Outgoing, rows: np.ndarray) -> list[np.ndarray]:
    """What a range sends of its rows, read-only as the object store hands it out."""
    pieces = outgoing.pieces(np.array(rows))
    for piece in pieces:
        piece.setflags(write=False)
    return pieces


def _sources(graphs, sent, p: int) -> list:
    """Range p's sources from what every range sent: hubs, then pieces or whole blocks."""
    return range_sources(graphs[p].whole, [s[1] for s in sent], [s[0] for s in sent],
                         [s[2 + p] for s in sent])


# 600: more ranges than nodes, some empty. Whole blocks read where a range needs at least half
# of another's rows (the default), for every range needed (0), or never (2: pieces only). Each
# aggregation, as the halo sums (or takes the max of) its sources one by one.
@pytest.mark.parametrize("parts,share,aggregation", [
    (1, WHOLE_SHARE, "mean"), (3, WHOLE_SHARE, "mean"), (8, WHOLE_SHARE, "mean"),
    (600, WHOLE_SHARE, "mean"), (8, 0.0, "mean"), (8, 2.0, "mean"),
    (8, WHOLE_SHARE, "sum"), (8, WHOLE_SHARE, "max")])
def test_a_layer_by_ranges_equals_the_whole_graphs(parts, share, aggregation, small_snapshot):
    snapshot = small_snapshot.with_cutoff(0.7)
    graph: GraphTensors = build_graph(snapshot, edges_until(snapshot, 0.7), now=0.7)
    torch.manual_seed(0)
    spec = VersionSpec(num_layers=3, hidden_dim=16, out_dim=12, aggregation=aggregation)
    model = build_model(spec, graph).eval()
    layers = layerwise_embed(model, graph, keep_layers=True)  # h_1..h_3, every node
    with torch.no_grad():
        h0 = model.inputs(graph)
    edge_user, edge_item = graph.edge_user.numpy(), graph.edge_item.numpy()
    nodes = graph.num_nodes
    degrees = np.concatenate([np.bincount(edge_user, minlength=graph.num_users),
                              np.bincount(edge_item, minlength=graph.num_items)])
    ranges = NodeRanges.balanced(degrees, parts)
    hubs = find_hubs(degrees, ranges)
    assert (hubs.size > 0) == (parts in (3, 8))  # none below 3 ranges, nor of degree >= 300
    split = [split_range(*range_rows(edge_user, edge_item, graph.num_users, nodes,
                                     *ranges.range(p)), *ranges.range(p), hubs, ranges, share)
             for p in range(parts)]
    graphs = [g for g, _ in split]
    reads_block = np.array([g.whole for g in graphs])  # [p, q]: p reads q's whole block
    if parts == 8:  # both ways occur by default; a range that reads a whole block gets no piece
        assert {0.0: reads_block.any(), WHOLE_SHARE: reads_block.any() and not reads_block.all(),
                2.0: not reads_block.any()}[share]
        assert all(pieces[q].size == 0 for p, (_, pieces) in enumerate(split)
                   for q in np.flatnonzero(reads_block[p]))
    outgoing = [Outgoing.of(*ranges.range(q), hubs, [pieces[q] for _, pieces in split])
                for q in range(parts)]
    sent = [_sent(outgoing[p], h0[slice(*ranges.range(p))].numpy()) for p in range(parts)]
    for layer in (1, 2, 3):
        step = RangeLayer(model.layer_stack(), layer, parts, chunk=50, threads=1)
        sent = [_sent(outgoing[p], step.compute(graphs[p], sent[p][0],
                                                 _sources(graphs, sent, p))[0])
                for p in range(parts)]
        whole = np.concatenate([s[0] for s in sent])
        assert whole.shape == tuple(layers[layer - 1].shape)
        expected = layers[layer - 1].numpy()
        assert np.abs(whole - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    if parts > 1:  # no range receives the whole graph
        assert max(g.num_sources for g in graphs) < nodes

    # Incremental: a layer's rows a change reaches, recomputed over a cache of other values
    # (stale rows where nothing reaches), equal the whole graph's; the rest stay as cached.
    changed = np.zeros(nodes, dtype=bool)
    changed[[3, graph.num_users + 1]] = True
    reached = np.concatenate([g.reached(changed) for g in graphs])
    hops = expand_hops(graph, torch.from_numpy(np.flatnonzero(changed)), 1)[1].numpy()
    assert np.array_equal(np.flatnonzero(reached), hops)
    stale = np.full((nodes, 16), 7.0, dtype=np.float32)
    step = RangeLayer(model.layer_stack(), 1, parts, chunk=5, threads=1)
    h0_sent = [_sent(outgoing[p], h0[slice(*ranges.range(p))].numpy()) for p in range(parts)]
    for p in range(parts):
        start, stop = ranges.range(p)
        redo = _Redo(np.flatnonzero(reached[start:stop]), stale)
        rows, _ = step.compute(graphs[p], h0_sent[p][0], _sources(graphs, h0_sent, p), redo)
        mine = reached[start:stop]
        assert np.allclose(rows[mine], layers[0][start:stop][mine].numpy(), atol=1e-5)
        assert (rows[~mine] == 7.0).all()


class _Redo:
    """A `range_layer.Recompute` with its cached rows in memory."""

    def __init__(self, rows: np.ndarray, cached: np.ndarray) -> None:
        self.rows, self.cached = rows.astype(np.int64), cached

    def base(self, start: int, stop: int, width: int) -> np.ndarray:
        return self.cached[start:stop, :width].copy()
