"""What published embeddings are checked and aligned against: the current version's own tables
(z_{k-1}, joined by external id), or, for a store's first version, the ids of its snapshot."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bc_ray.exceptions import DataError, StoreError
from bc_ray.publish.source import FLAGS, ExternalTable, id_kind
from bc_ray.store.state import StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.tables import ENTITIES, read_embedding_rows


@dataclass(frozen=True)
class StoredTable:
    """One entity's embeddings of the current version, as its refreshed table holds them."""

    ids: pa.Array
    matrix: np.ndarray


@dataclass(frozen=True)
class Current:
    """The version the new embeddings become the child of, and its tables by entity."""

    record: VersionRecord
    tables: dict[str, StoredTable]


def read_current(store: Store, state: StoreState) -> Current | None:
    """The current version and its user and item tables (None: the store has no version yet,
    so the published embeddings become version 0). A version whose tables were never
    refreshed has nothing to align to."""
    if state.current_version is None:
        return None
    record = state.version()
    tables = {}
    for entity in ENTITIES:
        table = state.table(record.version, entity)
        if table is None:
            raise StoreError(f"version {record.version} has no {entity} embeddings to align the "
                             "new ones to; run `bc-ray refresh` first")
        tables[entity] = StoredTable(*read_embedding_rows(store, table))
    return Current(record, tables)


def snapshot_ids(store: Store, state: StoreState) -> dict[str, pa.Array] | None:
    """The current snapshot's ids by entity (its entity tables only); None without one."""
    if state.current_snapshot is None:
        return None
    from bc_ray.store.snapshots import load_entities

    snapshot = load_entities(store, state)
    return {e: snapshot.entities(e)["id"].to_arrow() for e in ENTITIES}


def store_id_types(current: Current | None, known: dict[str, pa.Array] | None
                   ) -> dict[str, pa.DataType]:
    """The id type of each entity the store already holds: the current version's tables, else
    the current snapshot's entities (`known`); empty for a store with neither."""
    if current is not None:
        return {e: t.ids.type for e, t in current.tables.items()}
    return {e: ids.type for e, ids in (known or {}).items()}


def outside_snapshot(tables: dict[str, ExternalTable], known: dict[str, pa.Array] | None
                     ) -> dict[str, int]:
    """How many of each table's ids the store's snapshot does not hold (empty without one).
    A table none of whose ids it holds is refused: its ids are not the store's (a wrong
    --id-col, another id scheme), and nothing else would say so before a version is made."""
    if known is None:
        return {}
    outside = {}
    for entity, table in tables.items():
        store_ids = known[entity]
        held = shared_ids(table.ids, store_ids)
        if held == 0 and len(store_ids):
            raise DataError(f"{FLAGS[entity]}: none of its {table.rows} ids is one of the "
                            f"store's {len(store_ids)} {entity}s (its first is "
                            f"{table.ids[0].as_py()!r}, the store's {store_ids[0].as_py()!r}): "
                            f"check --id-col or --{entity}-id-col, or ingest those entities "
                            "first", path=table.uri)
        outside[entity] = table.rows - held
    return outside


def shared_ids(ids: pa.Array, others: pa.Array) -> int:
    """How many of `ids` are in `others`, compared as text: a version published before
    ingestion may hold another id type, and users and items may differ."""
    return pc.sum(pc.is_in(ids.cast(pa.string()),
                           value_set=others.cast(pa.string()))).as_py() or 0


def matching_ids(table: ExternalTable, expected: pa.DataType | None) -> ExternalTable:
    """The table with its ids in the store's type for that entity: integers into an integer
    store, text into a text store (joins, Serve's lookups and the Delta view's one schema need
    one type); any other pairing is refused."""
    if expected is None:
        return table
    if id_kind(expected) != table.id_kind:
        raise DataError(f"{FLAGS[table.entity]}: ids are {table.id_kind}, but the store's "
                        f"{table.entity} ids are {id_kind(expected)} ({expected}); write them "
                        "with the store's type", path=table.uri)
    if table.ids.type == expected:
        return table
    return replace(table, ids=table.ids.cast(expected))
