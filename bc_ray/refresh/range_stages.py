"""The partitioned refresh's stages as Ray tasks, one per node range: the input layer h_0, the
inner layers, and the last layer with its Parquet write.

Every stage's task returns `[(compute seconds, caches written), own rows, hub rows, a piece per
range]` (`Outgoing`), so the next stage's task of range p takes, as top-level arguments that Ray
resolves, only its own rows, every range's hub rows and the pieces the ranges sent it, or the
own rows of a range whose rows it mostly needs (`ranges.WHOLE_SHARE`: then that range sends it
an empty piece). Each layer task also caches its rows (`range_cache`) for the next refresh,
which may then recompute only the rows a change reaches (`Recompute`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import torch

from bc_ray.core.graph import FeatureBag, GraphTensors
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import Spans
from bc_ray.partition.model_source import ModelSource
from bc_ray.refresh.range_cache import CacheTarget
from bc_ray.refresh.range_layer import RangeLayer, Recompute
from bc_ray.refresh.ranges import Outgoing, RangeGraph, entity_bounds, range_sources
from bc_ray.refresh.results import WrittenFile
from bc_ray.refresh.sink import TableTarget, write_rows
from bc_ray.store.state import FileRecord
from bc_ray.store.tables import ENTITIES


def _entity_rows(start: int, stop: int, num_users: int) -> dict[str, torch.Tensor]:
    return {e: torch.arange(*bounds) for e, bounds in entity_bounds(start, stop, num_users).items()}


@dataclass(frozen=True)
class RangeInputs:
    """What h_0 of a range reads besides the model: its entities' feature bags and first-seen
    times (taken for the range by the driver, which holds the entity tables)."""

    start: int
    stop: int
    num_users: int
    features: dict[str, dict[str, FeatureBag]]  # entity -> field -> bags of the range's rows
    first_t: dict[str, torch.Tensor]
    now: float

    @classmethod
    def of(cls, graph: GraphTensors, start: int, stop: int) -> RangeInputs:
        rows = _entity_rows(start, stop, graph.num_users)
        return cls(start, stop, graph.num_users,
                   {e: {k: v.take(rows[e]) for k, v in graph.features(e).items()}
                    for e in ENTITIES},
                   {"user": graph.user_first_t[rows["user"]],
                    "item": graph.item_first_t[rows["item"]]}, graph.now)

    @property
    def spans(self) -> Spans:
        """The ID rows the range's h_0 reads."""
        return entity_bounds(self.start, self.stop, self.num_users)

    def compute(self, model: EmbeddingModel) -> np.ndarray:
        rows = _entity_rows(self.start, self.stop, self.num_users)
        with torch.no_grad():
            parts = [model.inputs_of(e, self.features[e], rows[e], self.first_t[e], self.now)
                     for e in ENTITIES]
        return torch.cat(parts).numpy()


Caches = dict[str, dict[str, FileRecord]]  # entity -> cache key -> file (`range_cache`)


@ray.remote
def input_task(source: ModelSource, inputs: RangeInputs, outgoing: Outgoing,
               threads: int) -> tuple:
    """h_0 of a range: ((compute seconds, no caches), own rows, hub rows, a piece per range)."""
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    rows = inputs.compute(source.load(inputs.spans))
    return ((time.perf_counter() - started, {}), *outgoing.pieces(rows))


def _write_cache(step: RangeLayer, graph: RangeGraph, rows: np.ndarray,
                 cache: CacheTarget | None) -> Caches:
    return {} if cache is None else cache.write(step.layer, rows, graph.start, graph.stop)


@ray.remote
def inner_task(step: RangeLayer, outgoing: Outgoing, graph: RangeGraph, own: np.ndarray,
               *sources: np.ndarray, redo: Recompute | None = None,
               cache: CacheTarget | None = None) -> tuple:
    """An inner layer of a range (incrementally, `redo`'s rows; the rest as cached), its rows
    cached for the next refresh: ((compute seconds, caches written), own rows, hub rows, a piece
    per range)."""
    rows, seconds = step.compute(graph, own, sources, redo)
    return ((seconds, _write_cache(step, graph, rows, cache)), *outgoing.pieces(rows))


@ray.remote
def reach_task(graph: RangeGraph, nodes: np.ndarray) -> np.ndarray:
    """bool by the range's rows: in `nodes` or one hop from it (`RangeGraph.reached`)."""
    return graph.reached(nodes)


@ray.remote
def outgoing_task(start: int, stop: int, hubs: np.ndarray, *wanted: np.ndarray) -> Outgoing:
    """What range start:stop sends at every layer, from the ids each range wants of it."""
    return Outgoing.of(start, stop, hubs, wanted)


@dataclass(frozen=True)
class RangeRows:
    """What the last layer's task of a range writes: the rows of entities the tables hold, and
    those entities' external ids (its range's only)."""

    target: TableTarget
    visible: np.ndarray  # bool, by the range's nodes
    ids: dict[str, pa.Array]
    first_idx: dict[str, int]
    num_users: int
    rows_per_file: int
    part: int


@ray.remote
def final_task(step: RangeLayer, rows: RangeRows, graph: RangeGraph, own: np.ndarray,
               *sources: np.ndarray, redo: Recompute | None = None,
               cache: CacheTarget | None = None) -> tuple[float, list[WrittenFile], Caches]:
    """The last layer of a range, its visible rows written: (compute seconds, files, caches)."""
    values, seconds = step.compute(graph, own, sources, redo)
    nodes = graph.start + np.flatnonzero(rows.visible)
    files = write_rows(rows.target, rows.ids, rows.num_users, nodes, values[rows.visible],
                       seconds, f"{rows.part:05d}", rows.first_idx, rows.rows_per_file)
    return seconds, files, _write_cache(step, graph, values, cache)


@dataclass(frozen=True)
class LayerPieces:
    """One layer's outputs by range: own rows, hub rows, and pieces[q][p] (q's piece for p)."""

    own: list[ray.ObjectRef]
    hubs: list[ray.ObjectRef]
    pieces: list[list[ray.ObjectRef]]

    def sources(self, part: int, whole: np.ndarray) -> list[ray.ObjectRef]:
        """Range `part`'s sources, in its source matrix's order: hubs, then by range its piece
        or (`whole`: `RangeGraph.whole`) that range's own block (`range_sources`)."""
        return range_sources(whole, self.hubs, self.own, [piece[part] for piece in self.pieces])

    @classmethod
    def of(cls, outputs: list[list[ray.ObjectRef]]) -> LayerPieces:
        """From each range's [own, hubs, piece 0, ...]."""
        return cls([o[0] for o in outputs], [o[1] for o in outputs], [o[2:] for o in outputs])
