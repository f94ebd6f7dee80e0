"""Ver-(k-1) embeddings read from the store as alignment targets, joined to the snapshot's
entities by external id (entities without a ver-(k-1) row are masked out of the loss).

A file of the table at a time: a worker that owns a range of entities keeps only its range's
rows (`first`..`last`), so no process of a sharded bump holds the whole previous table; the mask,
a byte per entity, is whole on every worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from bc_ray.exceptions import TrainingError
from bc_ray.store.parquet import embedding_matrix
from bc_ray.store.state import StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import table_parts


@dataclass
class TargetRows:
    values: np.ndarray  # float32, the rows of entities first..last-1 (zero where masked)
    mask: np.ndarray  # bool, every entity: has a ver-(k-1) row


def stored_target_rows(store: Store, state: StoreState, parent: VersionRecord, entity: str,
                       entities: pl.DataFrame, first: int = 0, last: int | None = None,
                       out: np.ndarray | None = None) -> TargetRows:
    """Version `parent`'s rows of the `entity`s (a frame of `idx` 0..n-1 and `id`) numbered
    `first`..`last` (default: all), written into `out` when given (a worker's rows of both
    entities in one matrix, with no copy to join them)."""
    record = state.table(parent.version, entity)
    if record is None:
        raise TrainingError(f"alignment to stored targets needs refreshed embeddings of version "
                            f"{parent.version}; run `bc-ray refresh` first")
    count = entities.height
    last = count if last is None else last
    if out is None:
        values = np.zeros((last - first, parent.dim), dtype=np.float32)
    elif out.shape != (last - first, parent.dim) or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected float32 "
                         f"({last - first}, {parent.dim})")
    else:
        values = out
        values[:] = 0.0
    mask = np.zeros(count, dtype=bool)
    known = entities.select("idx", "id")
    for part in table_parts(store, record, columns=["id", "embedding"]):
        rows = pl.from_arrow(part.select(["id"])).with_row_index("row").join(known, on="id")
        idx, row = rows["idx"].to_numpy(), rows["row"].to_numpy().astype(np.int64)
        mask[idx] = True
        mine = (idx >= first) & (idx < last)
        if mine.any():
            matrix = embedding_matrix(part.column("embedding").take(row[mine]), record.dim)
            values[idx[mine] - first] = matrix
    return TargetRows(values, mask)
