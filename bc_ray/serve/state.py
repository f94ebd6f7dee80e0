"""What a replica serves, loaded from the store (numpy only: no Ray, no torch).

A `ServingState` is immutable once loaded: a reload builds a new one and swaps the reference, so a
request always finishes on the state it started with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bc_ray import chain as chain_math
from bc_ray.exceptions import NotFoundError, ShapeError
from bc_ray.serve.id_index import IdIndex
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, read_embedding_rows


class RequestError(Exception):
    """A request the service refuses: carries the HTTP status and a clear message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EntityTable:
    version: int
    refresh_id: str
    matrix: np.ndarray
    index: IdIndex  # external id -> row

    @property
    def ids(self) -> pa.Array:
        return self.index.ids

    @classmethod
    def load(cls, store: Store, state: StoreState, entity: str,
             previous: EntityTable | None = None) -> EntityTable | None:
        """The newest table on the lineage; `previous` itself where it is that table (most
        commits change no table: a reload must not read and index it again)."""
        for version in reversed(state.lineage()):
            record = state.table(version, entity)
            if record is not None:
                if previous is not None and (previous.version, previous.refresh_id) == (
                        version, record.refresh_id):
                    return previous
                ids, matrix = read_embedding_rows(store, record)
                return cls(version, record.refresh_id, matrix, IdIndex(ids))
        return None


class TransformCache:
    """Composed transforms per (from, to) pair, made on demand from the per-version B_k and kept
    in a bounded LRU: memory grows with the number of versions, not with its square."""

    def __init__(self, parents: dict[int, int | None], transforms: dict[int, chain_math.Affine],
                 capacity: int = 256, previous: TransformCache | None = None) -> None:
        self.parents, self.transforms, self.capacity = parents, transforms, capacity
        self._composed: OrderedDict[tuple[int, int], chain_math.Affine] = OrderedDict()
        self._lock = threading.Lock()
        if previous is not None:  # B_k never change: pairs still on the lineage stay valid
            with previous._lock:  # its requests may be adding to it meanwhile
                kept = list(previous._composed.items())
            self._composed.update((pair, value) for pair, value in kept
                                  if pair[0] in parents and pair[1] in parents)

    def get(self, source: int, target: int) -> chain_math.Affine:
        key = (source, target)
        with self._lock:
            if key in self._composed:
                self._composed.move_to_end(key)
                return self._composed[key]
        path, version = [], source
        while version != target:
            path.append(self.transforms[version])
            version = self.parents[version]
        composed = chain_math.compose_path(path[::-1])
        with self._lock:
            self._composed[key] = composed
            while len(self._composed) > self.capacity:
                self._composed.popitem(last=False)
        return composed

    def __len__(self) -> int:
        return len(self._composed)


@dataclass(frozen=True)
class ServingState:
    seq: int
    current: int
    dims: dict[int, int]  # published version -> dimension
    chains: TransformCache  # (from, to) -> (W, b), composed on demand
    tables: dict[str, EntityTable]

    @property
    def signature(self) -> tuple:
        return (self.current, tuple((e, t.refresh_id) for e, t in sorted(self.tables.items())))

    @classmethod
    def load(cls, store: Store, previous: ServingState | None = None) -> ServingState:
        """The current state; B_k already loaded by `previous` are reused (files never change)."""
        state = store.state()
        lineage = state.lineage()
        if not lineage:
            raise NotFoundError("the store has no published version to serve")
        known = previous.chains.transforms if previous is not None else {}
        transforms = {}
        for version in lineage[1:]:
            transforms[version] = known.get(version) or chain_math.transform_from_bytes(
                store.get(state.versions[version].files["transform"]))
        chains = TransformCache({v: state.versions[v].parent for v in lineage}, transforms,
                                previous=previous.chains if previous is not None else None)
        before = previous.tables if previous is not None else {}
        tables = {e: t for e in ENTITIES
                  if (t := EntityTable.load(store, state, e, before.get(e))) is not None}
        return cls(seq=state.seq, current=lineage[-1],
                   dims={v: state.versions[v].dim for v in lineage}, chains=chains,
                   tables=tables)

    def max_body_bytes(self, max_rows: int) -> int:
        """The largest body a request within `max_rows` can need: JSON floats at up to 32
        characters each, or ids of up to 256, plus room for the envelope."""
        return max_rows * (max(self.dims.values()) * 32 + 256) + 65_536

    def info(self) -> dict:
        return {"current_version": self.current,
                "versions": [{"version": v, "dim": d, "current": v == self.current}
                             for v, d in sorted(self.dims.items())],
                "tables": {e: {"version": t.version, "rows": len(t.ids),
                               "refresh_id": t.refresh_id} for e, t in self.tables.items()}}

    def transform_for(self, source: int, target: int) -> chain_math.Affine:
        for name, version in (("from_version", source), ("to_version", target)):
            if version not in self.dims:
                raise RequestError(400, f"unknown {name} {version}; servable versions are "
                                        f"{sorted(self.dims)}")
        if target > source:
            raise RequestError(400, f"to_version {target} is newer than from_version {source}: "
                                    "transforms only go backwards")
        if source == target:
            return chain_math.identity(self.dims[source])
        return self.chains.get(source, target)

    def check_rows(self, source: int, matrix: np.ndarray) -> None:
        if matrix.ndim != 2 or matrix.shape[1] != self.dims[source]:
            got = matrix.shape[1] if matrix.ndim == 2 else matrix.shape
            raise RequestError(422, f"version {source} embeddings have {self.dims[source]} "
                                    f"dimensions, got {got}")
        if not np.isfinite(matrix).all():
            raise RequestError(422, "embeddings contain NaN or infinity")

    def lookup(self, entity: str, ids: list, target: int | None
               ) -> tuple[np.ndarray, np.ndarray, int]:
        """(ver-`target` embeddings, found mask, target) for external ids; unknown ids get zero
        rows. No target: the served table's own version (the previous one after a bump, until
        the new version's first refresh)."""
        if entity not in self.tables:
            raise RequestError(404 if entity in ENTITIES else 422,
                               f"no {entity} embeddings are loaded" if entity in ENTITIES
                               else f"entity must be one of {ENTITIES}, got {entity!r}")
        table = self.tables[entity]
        target = table.version if target is None else target
        if target not in self.dims:
            raise RequestError(400, f"unknown version {target}; servable versions are "
                                    f"{sorted(self.dims)}")
        if target > table.version:
            raise RequestError(404, f"no version {target} {entity} embeddings yet: the newest "
                                    f"refreshed table is version {table.version} (served for "
                                    f"versions <= {table.version} until the next refresh)")
        weight, bias = self.transform_for(table.version, target)
        rows = table.index.rows(ids)
        found = rows >= 0
        out = np.zeros((len(ids), weight.shape[0]), dtype=np.float32)
        if found.any():
            out[found] = chain_math.apply(table.matrix[rows[found]], (weight, bias))
        return out, found, target


def apply_grouped(requests: list[tuple[ServingState, int, int, np.ndarray]]) -> list[np.ndarray]:
    """One matmul per (state, from, to) group of a dynamic batch."""
    groups: dict[tuple, list[int]] = {}
    for position, (state, source, target, _) in enumerate(requests):
        groups.setdefault((id(state), source, target), []).append(position)
    out: list[np.ndarray | None] = [None] * len(requests)
    for positions in groups.values():
        state, source, target, _ = requests[positions[0]]
        stacked = np.concatenate([requests[p][3] for p in positions])
        if source == target:
            result = stacked
        else:
            try:
                result = chain_math.apply(stacked, state.transform_for(source, target))
            except ShapeError as exc:
                raise RequestError(422, str(exc)) from exc
        offsets = np.cumsum([0] + [requests[p][3].shape[0] for p in positions])
        for index, position in enumerate(positions):
            out[position] = result[offsets[index]:offsets[index + 1]]
    return out
