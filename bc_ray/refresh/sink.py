"""A Ray Data sink that writes embedding Parquet files under a fresh prefix and returns their
records (path, size, sha256); the driver then commits them in one log entry. Nothing it writes is
visible before that commit, so a failed or killed write only leaves unreferenced files."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from bc_ray.store.io import FileIO, StorageOptions
from bc_ray.store.parquet import embedding_table, sha256, to_parquet_bytes


class EmbeddingSink(Datasink[list]):
    def __init__(self, store_uri: str, options: StorageOptions, prefixes: dict[str, str],
                 ids: dict, visible, num_users: int, version: int, refreshed_at: datetime,
                 rows_per_file: int) -> None:
        self.store_uri, self.options = store_uri, options
        self.prefixes = prefixes  # entity -> store-relative prefix
        self.ids = ids  # entity -> ObjectRef of a pyarrow array of external ids (by idx)
        self.visible = visible  # ObjectRef of a bool mask over nodes: entities seen by cutoff
        self.num_users, self.version, self.refreshed_at = num_users, version, refreshed_at
        self.rows_per_file = rows_per_file
        self.result: WriteResult | None = None

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable[Block], ctx) -> list:
        import ray

        io = FileIO(self.store_uri, self.options)
        parts = [BlockAccessor.for_block(b).to_batch_format("numpy") for b in blocks]
        nodes = np.concatenate([p["node"] for p in parts]).astype(np.int64)
        matrix = np.concatenate([p["embedding"] for p in parts]).astype(np.float32)
        compute = float(sum(p["seconds"].sum() for p in parts if "seconds" in p))
        written: list[dict] = []
        visible = np.asarray(ray.get(self.visible))[nodes]
        nodes, matrix = nodes[visible], matrix[visible]
        for entity, mask, offset in (("user", nodes < self.num_users, 0),
                                     ("item", nodes >= self.num_users, self.num_users)):
            if not mask.any():
                continue
            index = nodes[mask] - offset
            external = ray.get(self.ids[entity]).take(pa.array(index))
            table = embedding_table(external, matrix[mask], self.version, self.refreshed_at)
            data = to_parquet_bytes(table)
            path = f"{self.prefixes[entity]}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}.parquet"
            io.write_bytes(path, data)
            written.append({"entity": entity, "path": path, "size": len(data),
                            "sha256": sha256(data), "rows": int(mask.sum()),
                            "compute_seconds": compute * float(mask.mean())})
        return written

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.result = write_result

    def files(self) -> list[dict]:
        if self.result is None:
            return []
        return [record for task in self.result.write_returns for record in task]
