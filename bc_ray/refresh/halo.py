"""A range's halo read where it lies: its neighbours' previous-layer rows aggregated source by
source, never copied into one matrix.

A range's sources (`ranges.range_sources`) are every range's hub rows, then from each range q
either the piece q cut for it or q's whole block. Each is an object in the node's object store,
which a task maps read-only and shares with every other task on the node. Joining them into the
source matrix the columns index (`RangeGraph.cols`) made a private copy of the halo in every
task, most of a layer at P = 8 on our graphs, so a task's memory could not fall as 1/P. Here a
chunk of rows splits its entries by the source each column falls in and sums (or takes the max
of) each source's share in place: the task's own memory is its CSR rows, its output and one
chunk's entries. Sums per row are then added source by source, so a row equals the joined
matrix's to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bc_ray.core.graph import csr_matrix, shared_tensor
from bc_ray.refresh.ranges import RangeGraph

Rows = slice | np.ndarray  # a chunk of local rows: a span, or ascending indices


@dataclass(frozen=True)
class Halo:
    """One layer's sources of a range, as sent: `sources[s]` holds the rows of the source
    matrix's columns `starts[s]:starts[s + 1]`, the first P the ranges' hub rows, then one per
    range (its piece, or with `block_of[s] >= 0` that range's whole block, indexed by node)."""

    graph: RangeGraph
    starts: np.ndarray  # int64, 2P + 1, non-decreasing
    sources: tuple[torch.Tensor, ...]  # 2P, float32 (rows, dim), zero-copy over what was sent
    block_of: np.ndarray  # int64, 2P: the range whose whole block source s is, else -1
    dim: int

    @classmethod
    def of(cls, graph: RangeGraph, hub_parts: Sequence[np.ndarray],
           pieces: Sequence[np.ndarray], dim: int) -> Halo:
        """From every range's hub rows and, by range, the piece it sent or its whole block
        (`ranges.range_sources`' order), each checked against the plan's count."""
        parts = graph.whole.size
        if len(hub_parts) != parts or len(pieces) != parts:
            raise ValueError(f"a range of a {parts}-range plan got {len(hub_parts)} ranges' "
                             f"hub rows and {len(pieces)} pieces")
        hub_ids = graph.source_ids[:int(graph.cuts[0])]
        starts = np.concatenate([np.searchsorted(hub_ids, graph.bounds[:parts]),
                                 graph.cuts]).astype(np.int64)
        block_of = np.concatenate([np.full(parts, -1), np.where(graph.whole, np.arange(parts),
                                                                -1)]).astype(np.int64)
        arrays = [np.asarray(p, dtype=np.float32).reshape(-1, dim)
                  for p in [*hub_parts, *pieces]]
        for s, rows in enumerate(arrays):
            due = (int(graph.bounds[block_of[s] + 1] - graph.bounds[block_of[s]])
                   if block_of[s] >= 0 else int(starts[s + 1] - starts[s]))
            if rows.shape[0] != due:
                what = f"range {s % parts}'s {'hub rows' if s < parts else 'rows'}"
                raise ValueError(f"{what}: {rows.shape[0]} sent where {due} were due")
        return cls(graph, starts, tuple(shared_tensor(a) for a in arrays), block_of, dim)

    def aggregate(self, rows: Rows, reduce: str) -> torch.Tensor:
        """(chunk rows, dim): each row's neighbours' mean, sum or max (zeros for rows without
        any), as `Adjacency.aggregate` (`aggregate_max`) over the joined matrix would give.
        Each source adds its share into the chunk's output in place (`addmm_`: a product and
        an add would write a chunk-sized matrix per source); `benchmarks/bench_halo.py` times
        this against the joined matrix."""
        lengths, cols = self._entries(rows)
        count = lengths.size
        entry_row = np.repeat(np.arange(count, dtype=np.int64), lengths)
        narrow = np.int16 if len(self.sources) < 2**15 else np.int32  # a radix sort's key
        source = (np.searchsorted(self.starts, cols, side="right") - 1).astype(narrow)
        order = np.argsort(source, kind="stable")  # each source's entries, rows ascending
        sizes = np.bincount(source, minlength=len(self.sources))
        del source
        out = torch.zeros(count, self.dim) if reduce != "max" else torch.full(
            (count, self.dim), -torch.inf)
        weight = 1.0 / np.maximum(lengths, 1).astype(np.float32) if reduce == "mean" else None
        ends = np.cumsum(sizes)
        for s in np.flatnonzero(sizes):
            take = order[ends[s] - sizes[s]:ends[s]]
            at, index = entry_row[take], self._index(s, cols[take])
            if reduce == "max":
                gathered = self.sources[s][torch.from_numpy(index)]
                out.scatter_reduce_(0, torch.from_numpy(at)[:, None].expand(-1, self.dim),
                                    gathered, reduce="amax", include_self=True)
                continue
            crow = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(np.bincount(at, minlength=count), out=crow[1:])
            values = (torch.from_numpy(weight[at]) if weight is not None
                      else torch.ones(at.size))
            out.addmm_(csr_matrix(torch.from_numpy(crow), torch.from_numpy(index), values,
                                  count, self.sources[s].shape[0]), self.sources[s])
        if reduce == "max":
            out[torch.from_numpy(lengths == 0)] = 0.0
        return out

    def _entries(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """(each row's entry count, the rows' columns in row order)."""
        crow = self.graph.crow
        if isinstance(rows, slice):
            return (np.diff(crow[rows.start:rows.stop + 1]),
                    self.graph.cols[int(crow[rows.start]):int(crow[rows.stop])])
        lengths = crow[rows + 1] - crow[rows]
        first = np.repeat(crow[rows] - np.cumsum(lengths) + lengths, lengths)
        return lengths, self.graph.cols[first + np.arange(int(lengths.sum()), dtype=np.int64)]

    def _index(self, source: int, cols: np.ndarray) -> np.ndarray:
        """Rows of source `source` for these columns of the source matrix."""
        block = self.block_of[source]
        if block < 0:
            return cols - self.starts[source]
        return self.graph.source_ids[cols] - self.graph.bounds[block]
