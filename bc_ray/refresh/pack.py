"""Graph tensors as plain numpy arrays, so one copy in Ray's object store serves every actor.

The adjacency travels as the driver built it (CSR row pointers and columns) and every array is
used in place: actors on one node map the same object-store pages instead of each copying the
graph and re-sorting its edges (which cost an actor seconds and twice the edges' memory at 10M
edges). Inference only reads the graph, so read-only views are safe.

The edge lists stay behind: inference reads only the adjacency, and the lists training samples
from would add 16 B per edge to every process that maps the graph. An unpacked graph's
`edge_user` and `edge_item` are empty.
"""

from __future__ import annotations

import torch

from bc_ray.core.graph import Adjacency, FeatureBag, GraphTensors, shared_tensor


def pack_graph(graph: GraphTensors) -> dict:
    def bags(features: dict[str, FeatureBag]) -> dict:
        return {name: (bag.values.numpy(), bag.lengths.numpy()) for name, bag in features.items()}

    adjacency = graph.adjacency()
    return {"num_users": graph.num_users, "num_items": graph.num_items, "now": graph.now,
            "crow": adjacency.crow.numpy(), "cols": adjacency.cols.numpy(),
            "user_features": bags(graph.user_features), "item_features": bags(graph.item_features),
            "user_first_t": graph.user_first_t.numpy(), "item_first_t": graph.item_first_t.numpy(),
            "user_vocab": graph.user_vocab, "item_vocab": graph.item_vocab}


def unpack_graph(packed: dict) -> GraphTensors:
    def bags(raw: dict) -> dict[str, FeatureBag]:
        return {name: FeatureBag(shared_tensor(values), shared_tensor(lengths))
                for name, (values, lengths) in raw.items()}

    nodes = packed["num_users"] + packed["num_items"]
    return GraphTensors(
        num_users=packed["num_users"], num_items=packed["num_items"],
        edge_user=torch.zeros(0, dtype=torch.long), edge_item=torch.zeros(0, dtype=torch.long),
        user_features=bags(packed["user_features"]), item_features=bags(packed["item_features"]),
        user_first_t=shared_tensor(packed["user_first_t"]),
        item_first_t=shared_tensor(packed["item_first_t"]),
        now=packed["now"], user_vocab=packed["user_vocab"], item_vocab=packed["item_vocab"],
        _adjacency=Adjacency.from_csr(shared_tensor(packed["crow"]),
                                      shared_tensor(packed["cols"]), nodes, nodes))
