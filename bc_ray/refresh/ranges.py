"""The graph split into contiguous node ranges, one refresh task each (no Ray here:
`range_graphs.py` and `range_stages.py` run them as tasks; `range_layer.py` computes a layer of
a range).

Task p holds only its range's rows of the adjacency (`RangeGraph`) and, per layer, the previous
layer's rows of the nodes those rows aggregate from: its halo. The halo arrives in pieces, one
from each range q (the rows of q that p needs, in node order), and hub rows (nodes of very high
degree, which nearly every range needs) come once, in one piece per range that every task reads,
instead of in every task's own pieces. Where p needs most of q's rows (`WHOLE_SHARE`), a piece
would copy nearly all of q's block once more for p alone: p then reads q's own block, which q
sends anyway (one copy in the object store for every range that reads it, not one per reader),
and takes its rows from it. So a task's source matrix is `[hubs; piece_0; ...; piece_{P-1}]`
(each piece as sent or taken) and the range's columns index that matrix, which is never built:
the task reads each source where it lies in the object store (`halo.Halo`), so its own memory
is its rows of the graph and of the layers, falling with P.

Rows hold what the whole graph's CSR (`Adjacency.bipartite`) holds: a user's distinct items, an
item's distinct users, repeats merged. Only the columns' numbering differs, so a layer over a
range equals the whole graph's to float rounding (each row's sum is taken source by source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from bc_ray.core.node_rows import balanced_bounds
from bc_ray.exceptions import ConfigError

HUB_SHARE = 0.5  # a node in the halo of at least this share of ranges is sent once, to all
WHOLE_SHARE = 0.5  # a range needing at least this share of another's rows reads its whole block
T = TypeVar("T")


@dataclass(frozen=True)
class NodeRanges:
    """P contiguous ranges of nodes (users then items): range p is bounds[p]:bounds[p+1]."""

    bounds: np.ndarray  # int64, P + 1 values, non-decreasing

    @classmethod
    def balanced(cls, degrees: np.ndarray, parts: int, node_cost: int = 1) -> NodeRanges:
        """Ranges of about equal work: a node's layer costs about its degree (plus `node_cost`
        edges' worth for its own row), so ranges of equal length would leave items, a tenth of
        the nodes with half the edges, in a few slow tasks."""
        if parts < 1:
            raise ConfigError(f"--partitions must be >= 1, got {parts}")
        return cls(balanced_bounds(degrees, parts, node_cost))

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def range(self, part: int) -> tuple[int, int]:
        return int(self.bounds[part]), int(self.bounds[part + 1])

    def owner(self, nodes: np.ndarray) -> np.ndarray:
        """The range of each node."""
        return np.searchsorted(self.bounds, nodes, side="right") - 1


def entity_bounds(start: int, stop: int, num_users: int) -> dict[str, tuple[int, int]]:
    """The entity indices (first, last + 1) of nodes start:stop, by entity: users are nodes
    0..U-1, items U.. ."""
    return {"user": (min(start, num_users), min(stop, num_users)),
            "item": (max(start, num_users) - num_users, max(stop, num_users) - num_users)}


@dataclass(frozen=True)
class RangeGraph:
    """Range start:stop's rows of the adjacency, its columns indexing the task's source matrix
    `[hubs; pieces...]` (module docstring)."""

    start: int
    stop: int
    crow: np.ndarray  # int64, rows + 1
    cols: np.ndarray  # int64, positions in the source matrix
    source_ids: np.ndarray  # int64: the node of each source matrix row (hubs, then pieces)
    bounds: np.ndarray  # int64, P + 1: every range's (`NodeRanges.bounds`)
    cuts: np.ndarray  # int64, P + 1: where each range's piece starts in `source_ids`
    whole: np.ndarray  # bool, P: the ranges whose whole block this one reads (`WHOLE_SHARE`)

    @property
    def num_rows(self) -> int:
        return self.stop - self.start

    @property
    def num_sources(self) -> int:
        return int(self.source_ids.size)

    def reached(self, nodes: np.ndarray) -> np.ndarray:
        """bool by local row: the row's node is in `nodes` (a bool mask over every node) or
        aggregates from one that is (one hop further out)."""
        hit = np.flatnonzero(nodes[self.source_ids][self.cols])
        reached = nodes[self.start:self.stop].copy()
        reached[np.searchsorted(self.crow, hit, side="right") - 1] = True
        return reached

    @property
    def nbytes(self) -> int:
        return self.crow.nbytes + self.cols.nbytes + self.source_ids.nbytes


def find_hubs(degrees: np.ndarray, ranges: NodeRanges) -> np.ndarray:
    """Nodes whose row many ranges read, sent once to all instead of in each range's pieces: a
    node of degree d is in the halo of at most min(d, P) ranges, so those of degree at least
    HUB_SHARE x P, the highest at most 1 % of all nodes (sorted ids). None below 3 ranges."""
    parts = len(ranges)
    if parts < 3 or degrees.size == 0:
        return np.zeros(0, dtype=np.int64)
    limit = max(1, degrees.size // 100)
    threshold = max(2.0, HUB_SHARE * parts)
    candidates = np.flatnonzero(degrees >= threshold)
    if candidates.size > limit:
        top = np.argpartition(degrees[candidates], -limit)[-limit:]
        candidates = candidates[top]
    return np.sort(candidates).astype(np.int64)


def split_range(crow: np.ndarray, neighbours: np.ndarray, start: int, stop: int,
                hubs: np.ndarray, ranges: NodeRanges, whole_share: float = WHOLE_SHARE
                ) -> tuple[RangeGraph, tuple[np.ndarray, ...]]:
    """Range start:stop's rows with their columns renumbered into the task's source matrix,
    and its pieces: for each range q, the non-hub nodes of q the rows aggregate from (sorted),
    the rows q sends this range at every layer; empty where this range reads q's whole block
    (at least `whole_share` of q's rows)."""
    # Where each node's row sits in the source matrix, by a table over every node (no search:
    # a range's tens of millions of ends each look their node up once).
    nodes = int(ranges.bounds[-1])
    # 5 bytes a node in all (`sizing`); positions are below the node count
    position = np.full(nodes, -1, dtype=np.int32 if nodes < 2**31 else np.int64)
    position[hubs] = np.arange(hubs.size)
    needed = np.zeros(nodes, dtype=bool)
    needed[neighbours] = True
    needed[hubs] = False
    others = np.flatnonzero(needed)  # ascending: grouped by the range that owns them
    del needed
    position[others] = hubs.size + np.arange(others.size)
    cols = position[neighbours].astype(np.int64)
    del position
    owners = ranges.owner(others)
    cuts = np.searchsorted(owners, np.arange(len(ranges) + 1))
    sizes = np.diff(ranges.bounds)
    whole = np.diff(cuts) >= np.maximum(whole_share * sizes, 1)
    pieces = tuple(others[:0] if whole[q] else others[cuts[q]:cuts[q + 1]]
                   for q in range(len(ranges)))
    graph = RangeGraph(start, stop, crow, cols, np.concatenate([hubs, others]),
                       ranges.bounds.astype(np.int64), hubs.size + cuts.astype(np.int64), whole)
    return graph, pieces


def range_sources(whole: np.ndarray, hub_parts: Sequence[T], own: Sequence[T],
                  pieces: Sequence[T]) -> list[T]:
    """A range's sources in its source matrix's order: every range's hub rows, then from each
    range q the piece it sent this one, or (`whole[q]`) q's own block to take the piece from."""
    return [*hub_parts, *(own[q] if whole[q] else pieces[q] for q in range(len(pieces)))]


@dataclass(frozen=True)
class Outgoing:
    """What a range sends of each layer it computes: the positions (in its own rows) of its hub
    rows, and of the rows each range's halo holds (`wanted[p]`, in range p's order)."""

    hubs: np.ndarray
    wanted: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, start: int, stop: int, hubs: np.ndarray,
           wanted: Sequence[np.ndarray]) -> Outgoing:
        """From the node ids each range wants of this one (their pieces of it)."""
        own_hubs = hubs[(hubs >= start) & (hubs < stop)]
        return cls(own_hubs - start, tuple(np.asarray(w) - start for w in wanted))

    def pieces(self, block: np.ndarray) -> list[np.ndarray]:
        """[own rows, hub rows, piece for range 0, ..., piece for range P-1]."""
        return [block, block[self.hubs], *(block[w] for w in self.wanted)]
