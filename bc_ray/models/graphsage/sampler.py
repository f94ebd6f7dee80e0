"""Layer-wise neighbour sampling over a CSR graph (the PyG NeighborLoader idea, in plain torch).

For L layers and fanouts f_1..f_L, starting from the seed nodes, each hop draws up to f neighbours
per node uniformly (with replacement, repeats merged: a symmetric design, so the mean over the
sampled set is an unbiased estimate of the full mean); a fanout of -1 takes every neighbour, which
gives exact L-hop computation. Destination nodes are always the first rows of their source set, so
a layer maps ``x_src`` to ``x_src[:n_dst]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bc_ray.core.graph import Adjacency


@dataclass
class Block:
    """One layer of a sampled computation: an (n_dst x n_src) operator."""

    adjacency: Adjacency
    num_dst: int


@dataclass
class SampledSubgraph:
    nodes: torch.Tensor  # global ids of the input nodes; the seeds come first
    blocks: list[Block]  # first layer first
    num_seeds: int

    def to(self, device: torch.device | str) -> SampledSubgraph:
        blocks = [Block(b.adjacency.to(device), b.num_dst) for b in self.blocks]
        return SampledSubgraph(self.nodes.to(device), blocks, self.num_seeds)


class NeighborSampler:
    def __init__(self, adjacency: Adjacency, fanouts: list[int],
                 generator: torch.Generator | None = None) -> None:
        self.rowptr, self.col = adjacency.crow, adjacency.cols
        self.fanouts = fanouts
        self.generator = generator

    def sample(self, seeds: torch.Tensor) -> SampledSubgraph:
        """`seeds` must be distinct global node ids."""
        dst = seeds
        blocks: list[Block] = []
        for fanout in reversed(self.fanouts):
            src_local_rows, neighbours = self._draw(dst, fanout)
            src = _ordered_union(dst, neighbours)
            position = _positions(src, neighbours)
            adjacency = Adjacency(src_local_rows, position, dst.numel(), src.numel())
            blocks.append(Block(adjacency=adjacency, num_dst=dst.numel()))
            dst = src
        return SampledSubgraph(nodes=dst, blocks=blocks[::-1], num_seeds=seeds.numel())

    def _draw(self, dst: torch.Tensor, fanout: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(index into `dst` of each drawn neighbour's row, the neighbours)."""
        return draw_neighbours(self.rowptr, self.col, dst, fanout, self.generator)


def draw_neighbours(rowptr: torch.Tensor, col: torch.Tensor, rows: torch.Tensor, fanout: int,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `fanout` neighbours of each of `rows` (all of them for -1): (index into `rows`,
    neighbour), grouped by row in `rows` order."""
    start = rowptr[rows]
    degree = rowptr[rows + 1] - start
    if fanout < 0:
        owner = torch.repeat_interleave(torch.arange(rows.numel()), degree)
        offset = torch.arange(int(degree.sum())) - (torch.cumsum(degree, 0) - degree)[owner]
        return owner, col[start[owner] + offset]
    has = degree > 0
    owner = torch.arange(rows.numel())[has].repeat_interleave(fanout)
    draws = torch.rand(owner.numel(), generator=generator)
    offset = (draws * degree[owner]).long().clamp_max(degree[owner] - 1)
    return owner, col[start[owner] + offset]


def _ordered_union(first: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """`first` followed by the values of `extra` not in it, each once."""
    rest = torch.unique(extra)
    rest = rest[~torch.isin(rest, first)]
    return torch.cat([first, rest])


def _positions(nodes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index of each value in `nodes` (all values are present)."""
    order = torch.argsort(nodes)
    return order[torch.searchsorted(nodes[order], values)]
