"""A partitioned refresh's layer caches: each range's task writes its own rows of every layer
h_1..h_L, one .npy file per entity, and the next refresh's tasks read back only the rows of
their own ranges (which may be cut elsewhere: the graph grew).

The log names them in a table's `cache`, keyed `layer<l>@<first idx>`: the file holds that
entity's rows from `first idx` on, as many as its header says. The unpartitioned refresh's
caches (`layer<l>`, every row of the entity in one file) are its own: the two read each
other's as absent, and the refresh after a switch is full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bc_ray.io import StorageOptions
from bc_ray.refresh.ranges import entity_bounds
from bc_ray.store.npy import npy_matrix, npy_parts
from bc_ray.store.state import FileRecord, TableRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES


def cache_key(layer: int, first: int) -> str:
    return f"layer{layer}@{first}"


def _parse(key: str) -> tuple[int, int] | None:
    """(layer, first idx) of a range cache's key; None for another kind of cache."""
    name, at, first = key.partition("@")
    if not at or not name.startswith("layer"):
        return None
    try:
        return int(name[len("layer"):]), int(first)
    except ValueError:
        return None


@dataclass(frozen=True)
class RangeCache:
    """One layer's cached rows, by entity: (first idx, file) ascending."""

    store_uri: str
    options: StorageOptions | None
    files: dict[str, tuple[tuple[int, FileRecord], ...]]

    @classmethod
    def of(cls, store: Store, tables: dict[str, TableRecord], layer: int) -> RangeCache:
        files = {e: tuple(sorted((parsed[1], record) for key, record in tables[e].cache.items()
                                 if (parsed := _parse(key)) is not None and parsed[0] == layer))
                 for e in ENTITIES}
        return cls(store.uri, store.io.options, files)

    def read(self, start: int, stop: int, num_users: int, dim: int) -> np.ndarray:
        """Rows of nodes start:stop (users are nodes 0..U-1, items U..), zeros for entities the
        previous refresh did not have. Files are read whole (their sha256 checked) one at a
        time, so a task holds its rows and at most one file besides."""
        rows = np.zeros((stop - start, dim), dtype=np.float32)
        store = Store(self.store_uri, self.options)
        offset = 0
        for entity, (first, last) in entity_bounds(start, stop, num_users).items():
            files = self.files[entity]
            for index, (begins, record) in enumerate(files):
                ends = files[index + 1][0] if index + 1 < len(files) else None
                if begins >= last or (ends is not None and ends <= first):
                    continue
                cached = npy_matrix(store.get(record), store.io.uri_of(record.path))
                upto = min(last, begins + cached.shape[0])
                if upto > max(first, begins):
                    low = max(first, begins)
                    rows[offset + low - first:offset + upto - first] = cached[low - begins:
                                                                              upto - begins]
                del cached
            offset += last - first
        return rows


@dataclass(frozen=True)
class Recompute:
    """An incremental stage of one range: the local rows a change reaches by this layer (the
    others are as the previous refresh cached them)."""

    rows: np.ndarray  # int64, ascending local rows
    cached: RangeCache
    num_users: int

    def base(self, start: int, stop: int, width: int) -> np.ndarray:
        return self.cached.read(start, stop, self.num_users, width)


def keeps_range_caches(table: TableRecord, num_layers: int) -> bool:
    """Whether a table keeps range caches of every layer 1..L (each from idx 0 on)."""
    return all(cache_key(layer, 0) in table.cache for layer in range(1, num_layers + 1))


@dataclass(frozen=True)
class CacheTarget:
    """Where a range's task writes its rows of a layer: next to the tables of this refresh."""

    store_uri: str
    options: StorageOptions | None
    prefixes: dict[str, str]  # entity -> the table's prefix

    def write(self, layer: int, rows: np.ndarray, start: int, stop: int,
              num_users: int) -> dict[str, dict[str, FileRecord]]:
        """{entity: {key: file}} for the range's rows of each entity it has."""
        store = Store(self.store_uri, self.options)
        written: dict[str, dict[str, FileRecord]] = {e: {} for e in ENTITIES}
        offset = 0
        for entity, (first, last) in entity_bounds(start, stop, num_users).items():
            if last > first:
                key = cache_key(layer, first)
                path = f"{self.prefixes[entity]}/cache/{key.replace('@', '-')}.npy"
                written[entity][key] = store.put_parts(
                    path, npy_parts(rows[offset:offset + last - first]))
            offset += last - first
        return written


def merge_caches(parts: list[dict[str, dict[str, FileRecord]]]) -> dict[str, dict[str, FileRecord]]:
    """The caches every task wrote, as the log's `cache` by entity."""
    merged: dict[str, dict[str, FileRecord]] = {e: {} for e in ENTITIES}
    for part in parts:
        for entity, files in part.items():
            merged[entity].update(files)
    return merged
