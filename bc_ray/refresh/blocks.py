"""The refresh stages' output blocks: Arrow tables of (node, embedding, seconds), the vectors as
fixed-size lists (`tasks._timed`), read here by the layer builder and the sink alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bc_ray.store.parquet import embedding_matrix


def block_rows(blocks: Sequence[pa.Table]) -> tuple[np.ndarray, np.ndarray, float]:
    """(node ids, their embedding rows, compute seconds) over the blocks, in order."""
    table = pa.concat_tables(blocks) if len(blocks) != 1 else blocks[0]
    if not table.num_rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), 0.0
    nodes = table.column("node").to_numpy().astype(np.int64, copy=False)
    seconds = pc.sum(table.column("seconds")).as_py() or 0.0
    return nodes, embedding_matrix(table.column("embedding")), float(seconds)
