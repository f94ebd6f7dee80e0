"""Graph tensors as plain numpy arrays, so one copy in Ray's object store serves every actor."""

from __future__ import annotations

import numpy as np
import torch

from bc_ray.core.graph import FeatureBag, GraphTensors


def pack_graph(graph: GraphTensors) -> dict:
    def bags(features: dict[str, FeatureBag]) -> dict:
        return {name: (bag.values.numpy(), bag.lengths.numpy()) for name, bag in features.items()}

    return {"num_users": graph.num_users, "num_items": graph.num_items, "now": graph.now,
            "edge_user": graph.edge_user.numpy(), "edge_item": graph.edge_item.numpy(),
            "user_features": bags(graph.user_features), "item_features": bags(graph.item_features),
            "user_first_t": graph.user_first_t.numpy(), "item_first_t": graph.item_first_t.numpy(),
            "user_vocab": graph.user_vocab, "item_vocab": graph.item_vocab}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))  # object-store arrays are read-only


def unpack_graph(packed: dict) -> GraphTensors:
    def bags(raw: dict) -> dict[str, FeatureBag]:
        return {name: FeatureBag(_tensor(values), _tensor(lengths))
                for name, (values, lengths) in raw.items()}

    return GraphTensors(
        num_users=packed["num_users"], num_items=packed["num_items"],
        edge_user=_tensor(packed["edge_user"]), edge_item=_tensor(packed["edge_item"]),
        user_features=bags(packed["user_features"]), item_features=bags(packed["item_features"]),
        user_first_t=_tensor(packed["user_first_t"]), item_first_t=_tensor(packed["item_first_t"]),
        now=packed["now"], user_vocab=packed["user_vocab"], item_vocab=packed["item_vocab"])
