"""One attempt to land a batch: map it against a state, write its files, and commit them with
the grown snapshot, refused (and the files removed) when another batch landed first. The retry
loop around it is `bc_ray.ingest.batch`; the records it commits are `bc_ray.store`'s."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

from bc_ray.data.assign import AssignedBatch, assign_batch
from bc_ray.data.batch import RawBatch
from bc_ray.data.snapshot import SnapshotMeta
from bc_ray.exceptions import DataError
from bc_ray.store.actions import Action, BatchIngested, SnapshotPublished
from bc_ray.store.batches import ENTITY_FILES, current_entities, snapshot_id_for
from bc_ray.store.parquet import frame_to_parquet_bytes
from bc_ray.store.state import FileRecord, Segment, StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)


class _Stale(Exception):
    """Another batch landed after this one was mapped: its new ids may collide."""


class _AlreadyIngested(Exception):
    """The batch id is in the log: a retry of a batch that already landed."""


@dataclass
class IngestOutcome:
    batch_id: str
    status: str  # "ingested" | "already ingested"
    ordinal: int
    snapshot_id: str | None
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"batch_id": self.batch_id, "status": self.status, "ordinal": self.ordinal,
                "snapshot": self.snapshot_id, **self.stats}


def already_ingested(state: StoreState, batch_id: str) -> IngestOutcome:
    """The outcome of a batch whose id is in the log: a retry changes nothing."""
    batch = state.batches[batch_id]
    return IngestOutcome(batch_id, "already ingested", batch.ordinal,
                         snapshot_id_for(state.batch_count), dict(batch.stats))


def edge_holders(state: StoreState, skip: tuple[str, ...] = ()
                 ) -> dict[tuple[str, str | None], list[tuple[str, str]]]:
    """(sha256, read_as) of every interactions file a batch took -> (batch id, file uri) of
    each batch holding it, oldest first (`skip`: batches left out)."""
    holders: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    for batch in sorted(state.batches.values(), key=lambda b: b.ordinal):
        if batch.batch_id not in skip:
            for source in batch.sources:
                if source.role == "edges" and source.sha256:
                    holders.setdefault((source.sha256, source.read_as), []).append(
                        (batch.batch_id, source.uri))
    return holders


def check_not_taken(state: StoreState, raw: RawBatch, corrects: tuple[str, ...] = ()) -> None:
    """Refuse an interactions file whose bytes, read the same way, a batch already took: under
    a new batch id (an items table added, an explicit --batch-id) its rows would be counted
    again as ingested and as late edges. The batches it corrects may hold them: their rows are
    dropped instead. The same bytes read another way (a corrected mapping) are other rows."""
    holders = edge_holders(state, skip=corrects)
    edges = [source for source in raw.sources if source["role"] == "edges"]
    taken = [(s, holders[key]) for s in edges
             if (key := (s.get("sha256"), s.get("read_as"))) in holders]
    if not taken:
        return
    source, held = taken[0]
    named = ", ".join(batch_id for batch_id, _ in held)
    which = f"batch {named}" if len(held) == 1 else f"batches {named}"
    flags = " ".join(f"--corrects {batch_id}" for batch_id, _ in held)
    rest = (f"; to land this batch's other files without those rows, pass {flags}"
            if len(taken) < len(edges) else "")
    raise DataError(f"the same bytes, read the same way, as {held[0][1]}, which {which} took: "
                    f"ingesting them again would count their {source['rows']} interaction "
                    "rows twice. A users or items table can ride with the next batch of new "
                    f"interactions{rest}", path=source["uri"])


def commit_batch(store: Store, state: StoreState, raw: RawBatch, batch_id: str, name: str,
                 before_commit: Callable[[], None] | None = None) -> IngestOutcome | None:
    """One attempt: map the batch against `state`, write its files, and commit them with the
    grown snapshot. None when another batch landed after `state` (map it again, and check it
    again: `check_not_taken`); the files of a failed attempt are removed at once.
    `before_commit` runs with every file written."""
    ordinal = state.batch_count
    current, meta = current_entities(store, state)
    last_ts = max((b.stats["time_range"][1] for b in state.batches.values()), default=None)
    assigned = assign_batch(raw, current, ordinal, last_ts)
    prefix = store.new_prefix("batches")
    files = _write(store, prefix, assigned, _meta(meta, assigned, name))
    stats = {**assigned.counts, "time_range": [int(assigned.edges["timestamp"].min()),
                                               int(assigned.edges["timestamp"].max())]}
    at = datetime.now(timezone.utc).isoformat()
    snapshot_stats = {"name": name, "batches": ordinal + 1,
                      "users": current["user"].table.height + stats["new_users"],
                      "items": current["item"].table.height + stats["new_items"],
                      "edges": sum(b.stats["edges"] for b in state.batches.values())
                      + stats["edges"]}
    snapshot_stats["visible_edges"] = snapshot_stats["edges"]

    def build(latest: StoreState) -> list[Action]:
        if batch_id in latest.batches:
            raise _AlreadyIngested
        if latest.batch_count != ordinal:
            raise _Stale
        return [
            BatchIngested(batch_id=batch_id, ordinal=ordinal, at=at, stats=stats,
                          sources=raw.sources, prefix=prefix,
                          segment=Segment(first=ordinal, last=ordinal,
                                          files={k: v for k, v in files.items() if k != "meta"})),
            SnapshotPublished(id=snapshot_id_for(ordinal + 1), cutoff=1.0, batches=ordinal + 1,
                              files={"meta": files["meta"]}, stats=snapshot_stats),
        ]

    if before_commit is not None:
        before_commit()
    try:
        landed = store.commit(build)
    except (_Stale, _AlreadyIngested) as exc:
        store.io.delete(prefix, recursive=True)  # never referenced: safe to remove at once
        if isinstance(exc, _AlreadyIngested):
            return already_ingested(store.state(), batch_id)
        return None
    logger.info("ingested batch %s (ordinal %d): %d edges, %d new users, %d new items",
                batch_id, ordinal, stats["edges"], stats["new_users"], stats["new_items"])
    return IngestOutcome(batch_id, "ingested", ordinal, landed.current_snapshot, stats)


def _meta(previous: SnapshotMeta | None, assigned: AssignedBatch, name: str) -> SnapshotMeta:
    """The grown snapshot's meta. Its rating range must be finite numbers: JSON has no infinity,
    so one would be written as null and no later ingest could read the meta back."""
    ratings = assigned.edges["rating"]
    bounds = [float(ratings.min()), float(ratings.max())]
    if previous is not None:
        bounds += [previous.rating_low, previous.rating_high]
    if not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds):
        raise DataError(f"the snapshot's rating range would not be finite numbers ({bounds}); "
                        "nothing was written")
    low, high = min(bounds), max(bounds)
    return SnapshotMeta(name=previous.name if previous else name, source="ingest",
                        rating_low=low, rating_high=high, cutoff=1.0, features=assigned.vocab,
                        clock="calendar")


def _write(store: Store, prefix: str, assigned: AssignedBatch, meta: SnapshotMeta
           ) -> dict[str, FileRecord]:
    files = {"edges": store.put(f"{prefix}/edges.parquet",
                                frame_to_parquet_bytes(assigned.edges))}
    for entity, kind in ENTITY_FILES.items():
        delta = assigned.deltas[entity]
        if delta.height:
            files[kind] = store.put(f"{prefix}/{kind}.parquet", frame_to_parquet_bytes(delta))
    files["meta"] = store.put(f"{prefix}/meta.json", orjson.dumps(meta.to_dict()))
    return files
