"""A Ray Data sink that writes embedding Parquet files under a fresh prefix and returns their
records (path, size, sha256); the driver then commits them in one log entry. Nothing it writes is
visible before that commit, so a failed or killed write only leaves unreferenced files.

Ray Data fuses the last inference stage with this write, so each task writes the rows it
computed (one file per entity per task) without another copy through the object store; the
driver sizes the tasks' runs by `rows_per_file`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from bc_ray.refresh.blocks import block_rows
from bc_ray.io import FileIO, StorageOptions
from bc_ray.store.parquet import embedding_table, sha256, embedding_parquet_bytes


class EmbeddingSink(Datasink[list]):
    def __init__(self, store_uri: str, options: StorageOptions, prefixes: dict[str, str],
                 ids: dict, visible, num_users: int, version: int,
                 refreshed_at: datetime) -> None:
        self.store_uri, self.options = store_uri, options
        self.prefixes = prefixes  # entity -> store-relative prefix
        self.ids = ids  # entity -> ObjectRef of a pyarrow array of external ids (by idx)
        self.visible = visible  # ObjectRef of a bool mask over nodes: entities seen by cutoff
        self.num_users, self.version, self.refreshed_at = num_users, version, refreshed_at
        self.result: WriteResult | None = None

    def write(self, blocks: Iterable[Block], ctx) -> list:
        import ray

        io = FileIO(self.store_uri, self.options)
        parts = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return []
        nodes, matrix, compute = block_rows(parts)
        keep = np.asarray(ray.get(self.visible))[nodes]
        if not keep.all():
            nodes, matrix = nodes[keep], matrix[keep]
        if np.any(nodes[1:] < nodes[:-1]):  # runs arrive sorted; slices then avoid copies
            order = np.argsort(nodes, kind="stable")
            nodes, matrix = nodes[order], matrix[order]
        split = int(np.searchsorted(nodes, self.num_users))
        written: list[dict] = []
        worker_node = ray.get_runtime_context().get_node_id()
        for entity, rows, offset in (("user", slice(0, split), 0),
                                     ("item", slice(split, None), self.num_users)):
            index = nodes[rows] - offset
            if not index.size:
                continue
            external = ray.get(self.ids[entity]).take(pa.array(index))
            table = embedding_table(external, matrix[rows], self.version, self.refreshed_at)
            data = embedding_parquet_bytes(table)
            path = f"{self.prefixes[entity]}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}.parquet"
            io.write_bytes(path, data)
            written.append({"entity": entity, "path": path, "size": len(data),
                            "sha256": sha256(data), "rows": int(index.size),
                            "compute_seconds": compute * index.size / nodes.size,
                            "worker_node": worker_node})
        return written

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.result = write_result

    def files(self) -> list[dict]:
        if self.result is None:
            return []
        return [record for task in self.result.write_returns for record in task]
