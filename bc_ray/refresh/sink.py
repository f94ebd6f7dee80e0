"""A Ray Data sink that writes embedding Parquet files under a fresh prefix and returns a
`WrittenFile` for each (path, size, sha256, rows); the driver then commits them in one log entry.
Nothing it writes is visible before that commit, so a failed or killed write only leaves
unreferenced files. (Ray's Iceberg sink works the same way: write tasks return their data
files; here the driver commits them together with the layer caches.)

Ray Data fuses the last inference stage with this write, so each task writes the rows it
computed (one file per entity per task) without another copy through the object store; the
driver sizes the tasks' runs by `rows_per_file`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from bc_ray.io import FileIO, StorageOptions
from bc_ray.refresh.blocks import block_rows
from bc_ray.refresh.results import WrittenFile
from bc_ray.store.parquet import embedding_parquet_bytes, embedding_table, sha256
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, table_prefix


@dataclass(frozen=True)
class TableTarget:
    """Where the final stage's rows go (a fresh prefix per entity) and what every row carries."""

    store_uri: str
    options: StorageOptions | None
    prefixes: dict[str, str]  # entity -> store-relative prefix
    version: int
    refreshed_at: datetime

    @classmethod
    def of(cls, store: Store, version: int, refresh_id: str,
           refreshed_at: datetime) -> TableTarget:
        """Fresh prefixes for both tables of one refresh of `version`."""
        return cls(store.uri, store.io.options,
                   {e: table_prefix(store, version, e, refresh_id) for e in ENTITIES}, version,
                   refreshed_at)


@dataclass(frozen=True)
class NodeIds:
    """Whose rows the tables hold: the external ids by idx, per entity (pyarrow arrays in the
    object store), and a bool mask over nodes of the entities seen by the cutoff."""

    ids: dict[str, ray.ObjectRef]
    visible: ray.ObjectRef
    num_users: int


def write_rows(target: TableTarget, ids: dict[str, pa.Array], num_users: int, nodes: np.ndarray,
               matrix: np.ndarray, compute: float, tag: str,
               first_idx: dict[str, int] | None = None,
               rows_per_file: int | None = None) -> list[WrittenFile]:
    """Rows of `nodes` (sorted, users first) into one Parquet file per entity (or several of at
    most `rows_per_file` rows), named by `tag`. `ids[e][idx - first_idx[e]]` is the external
    id of entity e's idx (a task may hold only its range's ids)."""
    if not nodes.size:
        return []
    io = FileIO(target.store_uri, target.options)
    split = int(np.searchsorted(nodes, num_users))
    worker_node = ray.get_runtime_context().get_node_id()
    step = rows_per_file or max(int(nodes.size), 1)
    written: list[WrittenFile] = []
    for entity, rows, offset in (("user", slice(0, split), 0),
                                 ("item", slice(split, None), num_users)):
        index, values = nodes[rows] - offset, matrix[rows]
        for first in range(0, index.size, step):
            part = slice(first, first + step)
            external = ids[entity].take(pa.array(index[part] - (first_idx or {}).get(entity, 0)))
            table = embedding_table(external, values[part], target.version,
                                    target.refreshed_at)
            data = embedding_parquet_bytes(table)
            path = f"{target.prefixes[entity]}/part-{tag}-{uuid.uuid4().hex[:8]}.parquet"
            io.write_bytes(path, data)
            count = int(index[part].size)
            written.append(WrittenFile(entity, path, len(data), sha256(data), count,
                                       compute * count / nodes.size, worker_node))
    return written


class EmbeddingSink(Datasink[list[WrittenFile]]):
    def __init__(self, target: TableTarget, nodes: NodeIds) -> None:
        self.target, self.nodes = target, nodes
        self.result: WriteResult | None = None

    def write(self, blocks: Iterable[Block], ctx) -> list[WrittenFile]:
        nodes, matrix, compute = self._visible_rows(blocks)
        ids = {e: ray.get(ref) for e, ref in self.nodes.ids.items()}
        return write_rows(self.target, ids, self.nodes.num_users, nodes, matrix, compute,
                          f"{ctx.task_idx:05d}")

    def _visible_rows(self, blocks: Iterable[Block]) -> tuple[np.ndarray, np.ndarray, float]:
        """(nodes sorted, their rows, compute seconds) of the blocks, entities the tables hold
        only."""
        parts = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), 0.0
        nodes, matrix, compute = block_rows(parts)
        keep = np.asarray(ray.get(self.nodes.visible))[nodes]
        if not keep.all():
            nodes, matrix = nodes[keep], matrix[keep]
        if np.any(nodes[1:] < nodes[:-1]):  # runs arrive sorted; slices then avoid copies
            order = np.argsort(nodes, kind="stable")
            nodes, matrix = nodes[order], matrix[order]
        return nodes, matrix, compute

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.result = write_result

    def files(self) -> list[WrittenFile]:
        if self.result is None:
            return []
        return [file for task in self.result.write_returns for file in task]
