"""A layer of one node range, computed from its own previous rows and its halo read in place
(`halo.Halo`); no Ray here: `range_stages.py` runs it as tasks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from bc_ray.core.graph import shared_tensor
from bc_ray.models.graphsage.model import LayerStack
from bc_ray.refresh.halo import Halo, Rows
from bc_ray.refresh.ranges import RangeGraph


class Recompute(Protocol):
    """An incremental stage of one range (`range_cache.CachedRecompute`): the local rows to
    compute, and the others' rows as cached."""

    rows: np.ndarray  # int64, ascending local rows

    def base(self, start: int, stop: int, width: int) -> np.ndarray: ...


@dataclass(frozen=True)
class RangeLayer:
    """Layer `layer` of one range, from its own previous rows and its sources."""

    layers: LayerStack
    layer: int
    parts: int
    chunk: int
    threads: int

    def compute(self, graph: RangeGraph, own: np.ndarray, sources: Sequence[np.ndarray],
                redo: Recompute | None = None) -> tuple[np.ndarray, float]:
        """(the range's rows of this layer, compute seconds): every row, or (`redo`) the rows
        it names, the rest as cached."""
        torch.set_num_threads(max(1, self.threads))
        started = time.perf_counter()
        spec = self.layers.spec
        width = spec.output_dim if self.layer == spec.num_layers else spec.hidden_dim
        if redo is not None and redo.rows.size == graph.num_rows:
            redo = None  # every row: nothing to read back
        if redo is not None and not redo.rows.size:
            return redo.base(graph.start, graph.stop, width), time.perf_counter() - started
        dim = own.shape[1] if own.ndim == 2 else spec.hidden_dim
        halo = Halo.of(graph, sources[:self.parts], sources[self.parts:], dim)
        x_own = shared_tensor(np.asarray(own, dtype=np.float32).reshape(-1, dim))
        self.layers.eval()
        if redo is None:
            rows = np.empty((graph.num_rows, width), dtype=np.float32)
            chunks: list[Rows] = [
                slice(first, min(first + self.chunk, graph.num_rows))
                for first in range(0, graph.num_rows, self.chunk)]
        else:
            rows = redo.base(graph.start, graph.stop, width)
            chunks = [redo.rows[first:first + self.chunk]
                      for first in range(0, redo.rows.size, self.chunk)]
        with torch.no_grad():
            for part in chunks:
                aggregated = halo.aggregate(part, spec.aggregation)
                rows[part] = self.layers.combine(self.layer - 1, aggregated, x_own[part]).numpy()
        return rows, time.perf_counter() - started
