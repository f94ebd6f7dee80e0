"""A landing zone: upstream jobs drop files under a prefix; every complete file no batch took yet
is ingested, one batch per file or per partition folder (``dt=2026-11-22/``).

Which files were taken is read from the log: each batch records its landed files by path under
the landing root and content hash, and a `landing.noted` entry records the files no batch holds
but that must not be read again (empty, the same bytes as a batch, changed after they were
taken). So a late file in an old partition is picked up once, the same folder reached through
another spelling is not read twice, and a file rewritten after it was taken is reported once,
with the command that ingests its new content as a corrected batch. Any failure reading or
validating one batch is that batch's reported failure; the others land.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import BcRayError, ConfigError
from bc_ray.ingest.attempt import IngestOutcome, edge_holders
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.landing_config import CHANGED_TABLE_HINT, LandingConfig
from bc_ray.ingest.landing_scan import (
    Known,
    Landed,
    Listing,
    describe,
    grouped,
    list_landing,
    read_content,
    unterminated,
    waiting,
)
from bc_ray.ingest.read import BatchInput, read_as
from bc_ray.ingest.sources import SourceFile, input_format
from bc_ray.store.actions import LandingNoted
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)


@dataclass
class LandingReport:
    """What one pass took, skipped (with the reason), refused (with the error) and found
    changed (with the command that ingests the new content)."""

    taken: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)

    def to_dict(self, limit: int | None = None) -> dict:
        """`limit` caps the skipped list (a run record in the log stays small)."""
        skipped = self.skipped if limit is None else self.skipped[:limit]
        return {"taken": self.taken, "skipped": skipped, "skipped_count": len(self.skipped),
                "refused": self.refused, "changed": self.changed}


@dataclass
class Pending:
    """New, complete files of one landing batch."""

    key: str
    files: dict[str, list[SourceFile]]


@dataclass
class Plan:
    """One pass: batches to ingest, catalogue files to ride with the first, notes to record."""

    batches: list[Pending] = field(default_factory=list)
    catalogue: dict[str, list[SourceFile]] = field(default_factory=dict)
    notes: list[dict] = field(default_factory=list)
    report: LandingReport = field(default_factory=LandingReport)
    # Interactions files taken this pass, by (sha256, read_as); and the copies of them found
    # under other paths, noted once the batch holding their bytes has landed
    planned: dict[tuple[str, str], Landed] = field(default_factory=dict)
    copies: list[tuple[Landed, str, str]] = field(default_factory=list)


def corrected_batch_command(store_uri: str, file: Landed, sha256: str,
                            mapping: ColumnMapping, corrects: list[str]) -> list[str] | None:
    """`bc-ray data ingest` of a changed file's new content, with a batch id derived from that
    content (run twice, it lands once) and `--corrects` for each batch that took its earlier
    content (their interactions are not counted again). None for a user or item table (it
    rides with edges)."""
    if file.role != "edges":
        return None
    words = ["bc-ray", "data", "ingest", "--store", store_uri, "--edges", file.uri]
    for option in fields(ColumnMapping):
        value = getattr(mapping, option.name)
        flag = "--" + option.name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, str(value)]
    for batch_id in corrects:
        words += ["--corrects", batch_id]
    digest = hashlib.sha256(f"{file.role}/{file.rel}@{sha256}".encode()).hexdigest()
    return words + ["--batch-id", f"landing-{digest[:24]}"]


def _note(role: str, file: Landed | SourceFile, sha256: str | None, outcome: str,
          **extra: Any) -> dict:
    """A `landing.noted` entry: a landed file no batch holds that must not be read again."""
    return {"role": role, "rel": file.rel, "uri": file.uri, "size": file.size,
            "tag": file.tag, "sha256": sha256, "outcome": outcome, **extra}


def _classify(file: Landed, config: LandingConfig, known: Known, plan: Plan,
              store_uri: str) -> SourceFile | None:
    """A new file to take, or None when it is the same bytes, changed or empty (noted)."""
    content = read_content(file, config.mapping.input_format)
    taken = known.taken.get((file.role, file.rel))
    if taken is not None and content.sha256 in taken:
        plan.notes.append(_note(file.role, file, content.sha256, "same content"))
        plan.report.skipped.append({"file": file.uri, "reason": "same bytes as a file taken "
                                                                "before"})
        return None
    if taken is not None:
        command = corrected_batch_command(store_uri, file, content.sha256, config.mapping,
                                          known.batches.get((file.role, file.rel), []))
        plan.notes.append(_note(file.role, file, content.sha256, "changed"))
        plan.report.changed.append({"file": file.uri, "command": command and shlex.join(command)})
        return None
    if content.rows == 0:
        plan.notes.append(_note(file.role, file, content.sha256, "empty"))
        plan.report.skipped.append({"file": file.uri, "reason": "empty (no rows): recorded, "
                                                                "not read again"})
        return None
    if file.role == "edges" and _a_copy(file, content.sha256, config, known, plan):
        return None
    return SourceFile(file.uri, file.size, file.tag, rel=file.rel, sha256=content.sha256)


def _a_copy(file: Landed, sha256: str, config: LandingConfig, known: Known, plan: Plan
            ) -> bool:
    """Whether an interactions file holds the bytes, read the same way, of one a batch took
    under another path (noted: never read again) or of one this pass takes (noted once that
    batch lands): a day redelivered under a new date, a rename. Its rows are counted once."""
    reading = read_as(config.mapping, input_format(file.uri, config.mapping.input_format))
    taken = known.contents.get(("edges", sha256))
    if taken is not None and taken[2] in (None, reading):  # None: recorded before read_as
        plan.notes.append(_note(file.role, file, sha256, "same content", batch_id=taken[1]))
        plan.report.skipped.append({"file": file.uri, "reason": f"same bytes as {taken[0]}, "
                                    f"which batch {taken[1]} took: its interactions are "
                                    "counted once"})
        return True
    first = plan.planned.setdefault((sha256, reading), file)
    if first is file:
        return False
    plan.copies.append((file, sha256, reading))
    plan.report.skipped.append({"file": file.uri, "reason": f"same bytes as {first.rel}, taken "
                                "in this pass: its interactions are counted once"})
    return True


def _why_waiting(file: Landed, listing: Listing, config: LandingConfig, now: float
                 ) -> str | None:
    reason = waiting(file, listing, config.require_success, config.settle_seconds, now)
    if reason is None and unterminated(file, config.mapping.input_format):
        reason = "incomplete: its last line is not terminated"
    return reason


def _plan_group(key: str, group: list[Landed], listing: Listing, config: LandingConfig,
                known: Known, plan: Plan, store_uri: str, now: float) -> list[SourceFile]:
    """The new files of one partition when all of them are complete (else none, reported)."""
    reasons = {f.uri: r for f in group if (r := _why_waiting(f, listing, config, now))}
    if reasons:
        for file in group:
            plan.report.skipped.append({"file": file.uri, "reason": reasons.get(
                file.uri, "waiting for the rest of its partition")})
        return []
    sources = []
    for file in group:
        try:
            source = _classify(file, config, known, plan, store_uri)
        except Exception as exc:  # noqa: BLE001 - one unreadable file fails its batch only
            plan.report.refused.append({"batch": key, "file": file.uri, "error": describe(exc)})
            return []
        if source is not None:
            sources.append(source)
    return sources


def _listing(role: str, root: str, config: LandingConfig, plan: Plan) -> Listing | None:
    """What a root holds. The interactions' root must be listed (a wrong path must not look
    like a quiet day); a users/items root that cannot be is reported, and the interactions
    still land."""
    try:
        return list_landing(role, root, config.mapping.input_format)
    except ConfigError:
        if role == "edges":
            raise
        plan.report.skipped.append({"file": root, "reason": f"no {role} table landed yet (the "
                                    "path does not exist: check it if one should have)"})
    except Exception as exc:  # noqa: BLE001 - any failure listing a catalogue is reported
        if role == "edges":
            raise
        plan.report.refused.append({"batch": root, "file": root,
                                    "error": f"cannot list the {role} table: {describe(exc)}"})
    return None


def pending(config: LandingConfig, state: StoreState, store_uri: str = "$BC_RAY_STORE",
            now: float | None = None) -> Plan:
    """The pass's plan: complete new batches in order, catalogue files, and what to note."""
    now = time.time() if now is None else now
    known, plan = Known.of(state, config.roots()), Plan()
    for role, root in config.roots().items():
        listing = _listing(role, root, config, plan)
        if listing is None:
            continue
        plan.report.skipped += listing.skipped
        fresh = [f for f in listing.files if f.stamp not in known.stamps]
        for key, group in grouped(fresh).items():
            uri = group[0].uri if key == group[0].rel else \
                f"{group[0].uri[:-len(group[0].rel)]}{key}"
            sources = _plan_group(uri, group, listing, config, known, plan, store_uri, now)
            if sources and role == "edges":
                plan.batches.append(Pending(uri, {"edges": sources}))
            elif sources:
                plan.catalogue.setdefault(role, []).extend(sources)
    return plan


def _attempt(store: Store, key: str, config: LandingConfig, files: dict[str, list[SourceFile]]
             ) -> tuple[IngestOutcome | None, str | None, str | None]:
    """(the outcome, or the failure and the file it names where it names one)."""
    try:
        return ingest(store, BatchInput(edges=key), config.mapping, files=files), None, None
    except Exception as exc:  # noqa: BLE001 - any failure is this batch's; the others land
        if not isinstance(exc, BcRayError):
            logger.exception("landing batch %s failed", key)
        return None, describe(exc), getattr(exc, "path", None)


def _with_catalogue(store: Store, batch: Pending, config: LandingConfig,
                    catalogue: dict[str, list[SourceFile]], plan: Plan
                    ) -> tuple[IngestOutcome | None, dict[str, list[SourceFile]], str | None]:
    """The batch with the catalogue files that can ride with it: each one a failure names is
    refused on its own and the rest tried again; a failure that names none (nor the batch's
    own files) refuses them all where the batch lands without them. Returns (the outcome, the
    catalogue files it took, or those still to ride where the batch failed; the failure)."""
    carried = {role: list(sources) for role, sources in catalogue.items() if sources}
    while True:
        outcome, error, path = _attempt(store, batch.key, config, {**batch.files, **carried})
        if outcome is not None or not carried:
            return outcome, carried, error
        named = {role: [s for s in sources if s.uri != path] for role, sources in carried.items()}
        if named != carried:
            plan.report.refused.append({"batch": path, "file": path, "error": error})
            carried = {role: sources for role, sources in named.items() if sources}
            continue
        outcome, alone, _ = _attempt(store, batch.key, config, batch.files)
        if outcome is None:
            return None, carried, alone
        plan.report.refused += [{"batch": s.uri, "file": s.uri, "error": error}
                                for sources in carried.values() for s in sources]
        return outcome, {}, None


def _land(store: Store, config: LandingConfig, plan: Plan,
          heartbeat: Callable[[], None] | None = None) -> None:
    """Ingest each batch; the catalogue rides with the first that lands (a file of it that is
    refused is neither taken nor noted, so once fixed it is read again). `heartbeat` runs
    before each batch (the scheduler renews its lease there, and stops if it lost it)."""
    catalogue = plan.catalogue
    for batch in plan.batches:
        if heartbeat is not None:
            heartbeat()
        outcome, carried, error = _with_catalogue(store, batch, config, catalogue, plan)
        if outcome is None:
            logger.error("landing batch %s refused: %s", batch.key, error)
            plan.report.refused.append({"batch": batch.key, "error": error})
            catalogue = carried  # less the files refused on their own
            continue
        catalogue = {}
        _record_taken(plan, batch, carried, outcome)
    plan.report.skipped += [{"file": s.uri, "reason": "waiting for new interactions to ride "
                                                      "with"}
                            for sources in catalogue.values() for s in sources]


def _record_taken(plan: Plan, batch: Pending, carried: dict[str, list[SourceFile]],
                  outcome: IngestOutcome) -> None:
    files = [(role, s) for role, sources in {**batch.files, **carried}.items() for s in sources]
    plan.report.taken.append({"batch": batch.key, "batch_id": outcome.batch_id,
                              "status": outcome.status, "files": [s.uri for _, s in files],
                              "edges": outcome.stats.get("edges"),
                              "new_users": outcome.stats.get("new_users"),
                              "new_items": outcome.stats.get("new_items")})
    if outcome.status == "already ingested":  # the same bytes landed before: never re-read
        plan.notes += [_note(role, s, s.sha256, "already ingested", batch_id=outcome.batch_id)
                       for role, s in files]


def _landed_copies(state: StoreState, plan: Plan) -> list[dict]:
    """Notes for this pass's copies whose bytes a batch now holds (a copy of a batch that
    failed is looked at again at the next pass)."""
    held = edge_holders(state)
    return [_note("edges", file, sha256, "same content", batch_id=held[(sha256, reading)][0][0])
            for file, sha256, reading in plan.copies if (sha256, reading) in held]


def _commit_notes(store: Store, notes: list[dict]) -> None:
    if notes:
        at = datetime.now(timezone.utc).isoformat()
        store.commit(lambda _state: [LandingNoted(at=at, files=notes)])


def ingest_landing(store: Store, config: LandingConfig, now: float | None = None,
                   heartbeat: Callable[[], None] | None = None) -> LandingReport:
    """One pass over the landing zone: every complete new batch is ingested; a bad batch is
    reported and the others still land. `now` is the pass's clock (default: the time now),
    against which files settle; `heartbeat` runs before each batch."""
    plan = pending(config, store.state(), store.uri, now)
    for changed in plan.report.changed:
        logger.warning("landing file %s changed after it was ingested; its new content was not "
                       "read. To ingest it as a corrected batch: %s", changed["file"],
                       changed["command"] or CHANGED_TABLE_HINT)
    _land(store, config, plan, heartbeat)
    _commit_notes(store, plan.notes + _landed_copies(store.state(), plan))
    return plan.report
