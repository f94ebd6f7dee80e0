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

from bc_ray.exceptions import CorruptFileError
from bc_ray.io import StorageOptions
from bc_ray.refresh.ranges import entity_bounds
from bc_ray.store.npy import npy_header, npy_parts
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


READ_ROWS = 65_536  # rows read at a time: a task holds its rows and at most this many more


@dataclass(frozen=True)
class RangeCache:
    """One layer's cached rows, by entity: (first idx, file) ascending."""

    store_uri: str
    options: StorageOptions | None
    files: dict[str, tuple[tuple[int, FileRecord], ...]]
    num_users: int  # this refresh's: users are nodes 0..U-1, items U..

    @classmethod
    def of(cls, store: Store, tables: dict[str, TableRecord], layer: int,
           num_users: int) -> RangeCache:
        files = {e: tuple(sorted((parsed[1], record) for key, record in tables[e].cache.items()
                                 if (parsed := _parse(key)) is not None and parsed[0] == layer))
                 for e in ENTITIES}
        return cls(store.uri, store.io.options, files, num_users)

    def read(self, start: int, stop: int, dim: int) -> np.ndarray:
        """Rows of nodes start:stop, zeros for entities the previous refresh did not have. Each
        file it overlaps is checked whole (size and sha256, streamed), then only the rows in
        range are read, a chunk at a time: the previous refresh may have cut its ranges
        elsewhere (or not at all), and no file is ever held whole."""
        rows = np.zeros((stop - start, dim), dtype=np.float32)
        store = Store(self.store_uri, self.options)
        offset = 0
        for entity, (first, last) in entity_bounds(start, stop, self.num_users).items():
            files = self.files[entity]
            for index, (begins, record) in enumerate(files):
                ends = files[index + 1][0] if index + 1 < len(files) else None
                if begins >= last or (ends is not None and ends <= first):
                    continue
                store.verify(record)
                _read_rows(store, record, dim, begins, first, last,
                           rows[offset:offset + last - first])
            offset += last - first
        return rows


def _read_rows(store: Store, record: FileRecord, dim: int, begins: int, first: int, last: int,
               into: np.ndarray) -> None:
    """Rows first:last of an entity (where the file, holding rows from `begins` on, has them)
    into `into` (`into[0]` is row `first`)."""
    uri = store.io.uri_of(record.path)
    with store.io.fs.open(store.io.path(record.path), "rb") as handle:
        shape, dtype = npy_header(handle, uri)
        if len(shape) != 2 or shape[1] != dim or dtype != np.float32:
            raise CorruptFileError(f"layer cache {uri} holds a {dtype} matrix of shape {shape}, "
                                   f"not rows of {dim} float32")
        data = handle.tell()
        low, upto = max(first, begins), min(last, begins + shape[0])
        for chunk in range(low, upto, READ_ROWS):
            end = min(chunk + READ_ROWS, upto)
            handle.seek(data + (chunk - begins) * dim * 4)
            raw = handle.read((end - chunk) * dim * 4)
            if len(raw) != (end - chunk) * dim * 4:
                raise CorruptFileError(f"layer cache {uri} ends before its header's rows")
            into[chunk - first:end - first] = np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)


@dataclass(frozen=True)
class CachedRecompute:
    """An incremental stage of one range (`range_layer.Recompute`): the local rows a change reaches
    by this layer; the others are as the previous refresh cached them."""

    rows: np.ndarray  # int64, ascending local rows
    cached: RangeCache

    def base(self, start: int, stop: int, width: int) -> np.ndarray:
        return self.cached.read(start, stop, width)


def keeps_range_caches(table: TableRecord, num_layers: int) -> bool:
    """Whether a table keeps range caches of every layer 1..L (each from idx 0 on)."""
    return all(cache_key(layer, 0) in table.cache for layer in range(1, num_layers + 1))


@dataclass(frozen=True)
class CacheTarget:
    """Where a range's task writes its rows of a layer: next to the tables of this refresh."""

    store_uri: str
    options: StorageOptions | None
    prefixes: dict[str, str]  # entity -> the table's prefix
    num_users: int

    def write(self, layer: int, rows: np.ndarray, start: int,
              stop: int) -> dict[str, dict[str, FileRecord]]:
        """{entity: {key: file}} for the range's rows of each entity it has."""
        store = Store(self.store_uri, self.options)
        written: dict[str, dict[str, FileRecord]] = {e: {} for e in ENTITIES}
        offset = 0
        for entity, (first, last) in entity_bounds(start, stop, self.num_users).items():
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
