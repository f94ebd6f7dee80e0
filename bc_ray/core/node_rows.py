"""A graph's rows by node range, in numpy alone: what the partitioned refresh's range tasks and
the sharded training workers each build of the graph, so neither ever holds its whole CSR."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def balanced_bounds(degrees: np.ndarray, parts: int, node_cost: int = 1,
                    base: np.ndarray | None = None) -> np.ndarray:
    """`parts` + 1 bounds cutting the rows into ranges of about equal work: a row costs its
    degree plus `node_cost` edges' worth for itself, so ranges of equal length would leave
    items (a tenth of the nodes with half the edges) in a few slow ranges. `base`: the work
    each part holds already (a training worker's users, when its items are cut), which the
    ranges top up towards equal totals (`top_up`)."""
    cost = np.cumsum(np.asarray(degrees, dtype=np.int64) + node_cost)
    total = int(cost[-1]) if cost.size else 0
    if base is None:
        inner = np.searchsorted(cost, total * np.arange(1, parts) / parts, side="left") + 1
    else:
        base = np.asarray(base, dtype=np.float64)
        if base.shape != (parts,):
            raise ValueError(f"base must hold one value per part ({parts}), got {base.shape}")
        targets = np.cumsum(top_up(total, base))[:-1]
        inner = np.searchsorted(cost, targets, side="left") + (targets > 0)  # 0: none at all
    bounds = np.concatenate([[0], np.minimum(inner, cost.size), [cost.size]])
    return np.maximum.accumulate(bounds).astype(np.int64)


def top_up(total: float, base: np.ndarray) -> np.ndarray:
    """Shares of `total` that bring each part's `base` + share to one level where they can
    (water filling): a part whose base is above the level gets nothing, the rest reach it."""
    active = np.ones(base.size, dtype=bool)
    while True:
        level = (total + base[active].sum()) / active.sum()
        over = active & (base > level)
        if not over.any():
            return np.where(active, level - base, 0.0)
        active &= ~over


def row_keys(edge_user: np.ndarray, edge_item: np.ndarray, num_users: int, num_nodes: int,
             start: int, stop: int) -> np.ndarray:
    """Every end of the edges (global entity indices) in rows start:stop, as one int64 key
    `local row x num_nodes + neighbour` (8 bytes an end): a stream keeps these, not the edges,
    and `rows_of_keys` makes the rows."""
    keys = []
    if start < num_users:  # user rows: their items
        mask = (edge_user >= start) & (edge_user < min(stop, num_users))
        row = edge_user[mask].astype(np.int64) - start
        keys.append(row * num_nodes + edge_item[mask] + num_users)
    if stop > num_users:  # item rows: their users
        first = max(start, num_users) - num_users
        mask = (edge_item >= first) & (edge_item < stop - num_users)
        row = edge_item[mask].astype(np.int64) + (num_users - start)
        keys.append(row * num_nodes + edge_user[mask])
    if not keys:
        return np.zeros(0, dtype=np.int64)
    return keys[0] if len(keys) == 1 else np.concatenate(keys)


def end_keys(edge_user: np.ndarray, edge_item: np.ndarray, num_users: int,
             bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every end of the edges (global entity indices) as (the range of its row, its key in that
    range as `row_keys` makes it), rows cut into ranges by `bounds` (P + 1 node ids): one pass
    keys the ends for every range at once, where `row_keys` keeps one range's."""
    num_nodes = int(bounds[-1])
    users = edge_user.astype(np.int64, copy=False)
    items = edge_item.astype(np.int64) + num_users  # int64 first: int32 ids do not overflow
    rows = np.concatenate([users, items])
    neighbours = np.concatenate([items, users])
    owner = np.searchsorted(bounds, rows, side="right") - 1
    rows -= bounds[owner]
    rows *= num_nodes
    rows += neighbours
    return owner.astype(np.int16 if len(bounds) <= 1 << 15 else np.int32), rows


def by_owner(values: list[np.ndarray], owners: list[np.ndarray],
             parts: int) -> tuple[np.ndarray, np.ndarray]:
    """`values` joined and grouped by their owner (a range, a worker: stable, a radix sort of
    small ints), with the `parts` + 1 cuts between the groups. The lists are emptied as they are
    joined."""
    if not values:
        return np.zeros(0, dtype=np.int64), np.zeros(parts + 1, dtype=np.int64)
    owner = np.concatenate(owners)
    owners.clear()
    joined = np.concatenate(values)
    values.clear()
    order, cuts = owner_order(owner, parts)
    del owner
    return joined[order], cuts


def owner_order(owner: np.ndarray, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """(the order that groups values by `owner`, stable, and the `parts` + 1 cuts between the
    groups): for values kept in several arrays, which `by_owner` would join. Owners are in
    [0, parts): `bincount` refuses others before the cast below could wrap them."""
    cuts = np.zeros(parts + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=parts), out=cuts[1:])
    if parts <= 1 << 16:  # numpy sorts 8- and 16-bit integers by radix
        owner = owner.astype(np.uint8 if parts <= 1 << 8 else np.uint16)
    return np.argsort(owner, kind="stable"), cuts


def rows_of_keys(keys: np.ndarray, rows: int, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(CSR row pointers, neighbours as global node ids) of `rows` rows from their ends' keys
    (`row_keys`; repeats merged, each row's neighbours ascending). `keys` is consumed: sorted,
    then turned into the neighbours in place (no copy while every key is distinct)."""
    if not keys.size:
        return np.zeros(rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys.sort()
    distinct = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
    if not distinct.all():
        keys = keys[distinct]
    del distinct
    # Each row's first key, found in the sorted keys (no row index per key: 8 bytes an end).
    crow = np.searchsorted(keys, np.arange(rows + 1, dtype=np.int64) * num_nodes)
    keys %= num_nodes  # in place: the neighbours
    return crow.astype(np.int64, copy=False), keys


def drained(chunks: list[np.ndarray], release: Callable[[], None] | None = None,
            every: int = 16) -> np.ndarray:
    """`chunks` (int64) as one array, emptying the list as it copies them: the result's pages
    are touched only as each chunk arrives and that chunk then goes, where `np.concatenate`
    holds every chunk beside the whole. Chunks of a few MB come from the allocator's heap,
    which keeps freed pages: `release` (`memory.return_freed_memory`), called every `every`
    chunks, gives them back, so the peak stays near the total and not twice it."""
    out = np.empty(sum(chunk.size for chunk in chunks), dtype=np.int64)
    at = 0
    chunks.reverse()
    copied = 0
    while chunks:
        chunk = chunks.pop()
        out[at:at + chunk.size] = chunk
        at += chunk.size
        del chunk
        copied += 1
        if release is not None and copied % every == 0:
            release()
    return out


def range_rows(edge_user: np.ndarray, edge_item: np.ndarray, num_users: int, num_nodes: int,
               start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(CSR row pointers, neighbours as global node ids) of nodes start:stop, from the edge
    lists (global entity indices; repeats merged, each row's neighbours ascending)."""
    keys = row_keys(edge_user, edge_item, num_users, num_nodes, start, stop)
    return rows_of_keys(keys, stop - start, num_nodes)
