"""A graph after a change an incremental refresh must follow: new interactions of a few users and
one item with a changed feature row (shared by the families' `affected` tests)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bc_ray.core.family import Changes
from bc_ray.core.graph import FeatureBag


def grown_graph(graph, split, users: int, item: int):
    """`graph` plus the held-out interactions of a few users, and item `item` with one more
    feature code."""
    eu, ei = split.eval_pairs
    keep = torch.isin(eu, torch.unique(eu)[:users])
    later = graph.edge_t.max() + torch.linspace(0.01, 0.02, int(keep.sum()))
    field, bag = next(iter(graph.item_features.items()))
    codes = [list(row) for row in torch.split(bag.values, bag.lengths.tolist())]
    codes[item].append(graph.item_vocab[field] - 1)
    changed = FeatureBag(torch.tensor([c for row in codes for c in row], dtype=torch.long),
                         torch.tensor([len(row) for row in codes]))
    grown = dataclasses.replace(
        graph, edge_user=torch.cat([graph.edge_user, eu[keep]]),
        edge_item=torch.cat([graph.edge_item, ei[keep]]), edge_t=torch.cat([graph.edge_t, later]),
        item_features={**graph.item_features, field: changed}, _adjacency=None)
    touched = np.union1d(eu[keep].numpy(), ei[keep].numpy() + graph.num_users)
    return grown, Changes(touched=touched, entities=np.array([graph.num_users + item]))
