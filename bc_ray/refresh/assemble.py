"""Layers put together in the object store by an actor of their own: an inner stage's output,
and the rows an incremental refresh carries over from the previous tables.

Every task of the next stage reads any node's row of a layer, so the stage's output blocks
become one matrix. The driver only passes references along: assembled on the driver, a layer
cost it the matrix twice (its own copy and the object store's) on top of everything else it
holds, the largest steps of its peak at 10M edges. Nor does a stage's worker process do it: it
has the graph and the previous layer mapped already, and would hold a layer's pages three
times over. `LayerBuilder` is a process that holds only the layers it builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import ray

from bc_ray.io import StorageOptions
from bc_ray.refresh.blocks import block_rows
from bc_ray.store.npy import npy_matrix
from bc_ray.store.parquet import embedding_matrix, from_parquet_bytes
from bc_ray.store.state import FileRecord, TableRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import check_rows

CHUNK_ROWS = 65_536  # rows moved at a time: no full-size temporaries


@dataclass(frozen=True)
class CachedLayer:
    """The previous refresh's cache of a layer: one .npy file per entity, users first."""

    store_uri: str
    options: StorageOptions | None
    files: dict[str, FileRecord]

    def read_into(self, layer: np.ndarray, num_users: int) -> None:
        """Its rows into `layer` (nodes the previous refresh lacked keep theirs)."""
        store = Store(self.store_uri, self.options)
        for entity, start, stop in (("user", 0, num_users), ("item", num_users, len(layer))):
            record = self.files[entity]
            cached = npy_matrix(store.get(record), store.io.uri_of(record.path))[:stop - start]
            layer[start:start + cached.shape[0]] = cached


def add_blocks(layer: np.ndarray, blocks: tuple[pa.Table, ...]) -> float:
    """The blocks' rows into `layer` (row = node); the compute seconds they took."""
    compute = 0.0
    for block in blocks:
        nodes, rows, seconds = block_rows([block])
        layer[nodes] = rows
        compute += seconds
    return compute


@dataclass(frozen=True)
class PreviousTables:
    """The previous refresh's tables, whose rows an incremental refresh carries over."""

    store_uri: str
    options: StorageOptions | None
    tables: dict[str, TableRecord]

    def read_into(self, layer: np.ndarray, num_users: int, user_ids: pa.Array,
                  item_ids: pa.Array) -> None:
        """Their rows into `layer` by node (`*_ids[idx]` are the external ids), file by file."""
        store = Store(self.store_uri, self.options)
        for entity, offset, ids in (("user", 0, user_ids), ("item", num_users, item_ids)):
            index = pl.DataFrame({"id": ids}).with_row_index("idx")
            rows = 0
            for file in self.tables[entity].files:
                table = from_parquet_bytes(store.get(file), store.io.uri_of(file.path),
                                           ["id", "embedding"])
                rows += table.num_rows
                found = index.join(pl.DataFrame({"id": table.column("id")}).with_row_index("row"),
                                   on="id", how="inner")
                nodes = found["idx"].to_numpy().astype(np.int64) + offset
                source = found["row"].to_numpy()
                matrix = embedding_matrix(table.column("embedding"), self.tables[entity].dim)
                for start in range(0, nodes.size, CHUNK_ROWS):
                    part = slice(start, start + CHUNK_ROWS)
                    layer[nodes[part]] = matrix[source[part]]
            check_rows(store, self.tables[entity], rows)


@ray.remote(num_cpus=0)  # works beside the stage it assembles, or the driver's planning
class LayerBuilder:
    """Assembles layers: `start` one, `add` its stage's blocks as they come (each is freed once
    copied, so the stage's processes write their next blocks into the same pages), `finish`.
    Layers are keyed, so refreshes of one job can share the builder (`layer_builder`)."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[np.ndarray, float]] = {}

    def ping(self) -> None:
        """Alive (a kept handle is checked before a refresh uses it)."""

    def start(self, key: str, shape: tuple[int, int], num_users: int,
              base: CachedLayer | None) -> None:
        """Rows no block brings come from `base` (an incremental refresh), else are zeros."""
        layer = np.zeros(shape, dtype=np.float32)
        if base is not None:
            base.read_into(layer, num_users)
        self._layers[key] = (layer, 0.0)

    def add(self, key: str, *blocks: pa.Table) -> None:
        layer, compute = self._layers[key]
        self._layers[key] = (layer, compute + add_blocks(layer, blocks))

    @ray.method(num_returns=2)
    def finish(self, key: str) -> tuple[np.ndarray, float]:
        """(the layer, nodes by dims; the compute seconds its rows took)."""
        return self._layers.pop(key)

    def drop(self, key: str) -> None:
        """A layer whose stage failed."""
        self._layers.pop(key, None)


@ray.remote
def carried_rows(shape: tuple[int, int], num_users: int, previous: PreviousTables,
                 user_ids: pa.Array, item_ids: pa.Array) -> np.ndarray:
    """The previous tables by node (zeros for entities they lack), which an incremental final
    pass copies for the rows it does not recompute. A task, so it runs in one of the refresh's
    already started processes rather than waiting for a process of its own."""
    layer = np.zeros(shape, dtype=np.float32)
    previous.read_into(layer, num_users, user_ids, item_ids)
    return layer


_builder: tuple[tuple[str, str], ray.actor.ActorHandle] | None = None  # (cluster and job, handle)


def layer_builder() -> ray.actor.ActorHandle:
    """This job's builder: started by its first layer-wise refresh and kept by this process for
    the next ones (a process starts and imports in ~2 s on a busy 2-core node, which a small
    refresh would otherwise wait for each time). It lives as long as this handle, so with the
    job; one that died is replaced."""
    global _builder
    context = ray.get_runtime_context()
    owner = (context.get_node_id(), context.get_job_id())
    if _builder is not None and _builder[0] == owner:
        try:
            ray.get(_builder[1].ping.remote())
            return _builder[1]
        except ray.exceptions.RayActorError:
            pass
    _builder = None
    _builder = (owner, LayerBuilder.remote())
    return _builder[1]
