"""A graph's rows by node range, in numpy alone: what the partitioned refresh's range tasks and
the sharded training workers each build of the graph, so neither ever holds its whole CSR."""

from __future__ import annotations

import numpy as np


def balanced_bounds(degrees: np.ndarray, parts: int, node_cost: int = 1) -> np.ndarray:
    """`parts` + 1 bounds cutting the rows into ranges of about equal work: a row costs its
    degree plus `node_cost` edges' worth for itself, so ranges of equal length would leave
    items (a tenth of the nodes with half the edges) in a few slow ranges."""
    cost = np.cumsum(np.asarray(degrees, dtype=np.int64) + node_cost)
    total = int(cost[-1]) if cost.size else 0
    inner = np.searchsorted(cost, total * np.arange(1, parts) / parts, side="left") + 1
    bounds = np.concatenate([[0], np.minimum(inner, cost.size), [cost.size]])
    return np.maximum.accumulate(bounds).astype(np.int64)


def range_rows(edge_user: np.ndarray, edge_item: np.ndarray, num_users: int, num_nodes: int,
               start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(CSR row pointers, neighbours as global node ids) of nodes start:stop, from the edge
    lists (global entity indices; repeats merged, each row's neighbours ascending)."""
    keys = []
    if start < num_users:  # user rows: their items
        mask = (edge_user >= start) & (edge_user < min(stop, num_users))
        keys.append((edge_user[mask] - start) * num_nodes + edge_item[mask] + num_users)
    if stop > num_users:  # item rows: their users
        first = max(start, num_users) - num_users
        mask = (edge_item >= first) & (edge_item < stop - num_users)
        keys.append((edge_item[mask] + num_users - start) * num_nodes + edge_user[mask])
    rows = stop - start
    crow = np.zeros(rows + 1, dtype=np.int64)
    if not keys:
        return crow, np.zeros(0, dtype=np.int64)
    pairs = sorted_unique(np.concatenate(keys))
    np.cumsum(np.bincount(pairs // num_nodes, minlength=rows), out=crow[1:])
    return crow, pairs % num_nodes


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: a sort and a comparison (numpy's own `unique` hashes
    first, 7x slower on a range's millions of edge keys)."""
    values = np.sort(values.astype(np.int64, copy=False))
    keep = np.ones(values.size, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]
