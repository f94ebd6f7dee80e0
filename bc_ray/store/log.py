"""The version log: the only place a commit becomes atomic.

Entries ``_log/<seq:020d>.json`` are immutable and written put-if-absent, so two writers can never
both commit number N. Every `checkpoint_interval` entries the folded state is written as
``_log/<seq>.checkpoint.json`` and ``_log/_last_checkpoint`` points at it (a hint: a stale or
missing hint only costs extra reads, never correctness). Reading the state therefore costs one
checkpoint plus at most `checkpoint_interval` entries, whatever the length of the log.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import orjson

from bc_ray.exceptions import (
    BcRayError,
    CommitConflictError,
    CommitStateUnknownError,
    LogEntryError,
    NotFoundError,
    StorageAccessError,
    StoreError,
    UnappliableSettingError,
)
from bc_ray.io import FileIO
from bc_ray.store.actions import Action, as_action, parse_action
from bc_ray.store.state import StoreState

LOG_DIR = "_log"
HINT = f"{LOG_DIR}/_last_checkpoint"
FORMAT_VERSION = 1
logger = logging.getLogger(__name__)


def entry_path(seq: int) -> str:
    return f"{LOG_DIR}/{seq:020d}.json"


def checkpoint_path(seq: int) -> str:
    return f"{LOG_DIR}/{seq:020d}.checkpoint.json"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between commit retries: writers that collided
    spread out instead of colliding again in lockstep."""

    base_seconds: float = 0.02
    cap_seconds: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, min(self.cap_seconds,
                                                self.base_seconds * 2 ** attempt))


# What a writer may hand to `commit`: typed actions, or their JSON (tests, tools).
WriterAction = Action | Mapping[str, Any]


@dataclass(frozen=True)
class LogEntry:
    """One entry as read: its actions parsed once, in order."""

    actions: tuple[Action, ...]
    seq: int | None = None
    writer: str | None = None
    committed_at: str | None = None


def parse_entry(entry: dict, where: object) -> LogEntry:
    """An entry's JSON object, typed: what every reader folds (`where` names it in errors)."""
    return LogEntry(actions=tuple(parse_action(a, where) for a in entry["actions"]),
                    seq=entry.get("seq"), writer=entry.get("writer"),
                    committed_at=entry.get("committed_at"))


def fold_entry(state: StoreState, entry: LogEntry, seq: int, lenient: bool = False) -> None:
    """Fold one entry's actions into `state` (in place): what readers and the committing
    writer both do, so a writer checks its entry exactly as readers will apply it.

    A reader (`lenient`) skips a setting an older writer recorded that no process can apply,
    with a warning, so such a store stays readable and `bc-ray store config` can mend it."""
    for action in entry.actions:
        try:
            action.apply(state, seq, entry.committed_at)
        except UnappliableSettingError as exc:
            if not lenient:
                raise
            logger.warning("%s: ignored, the previous setting stays; record a valid one with "
                           "`bc-ray store config`", exc)
    state.seq = seq


def _non_finite(value: object, path: str) -> tuple[str, float] | None:
    """(where, value) of the first non-finite float inside `value`, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _non_finite(item, where)
        if found is not None:
            return found
    return None


@lru_cache(maxsize=64)
def _warn_unreadable(uri: str, why: str) -> None:
    """Said once per checkpoint and process (a server reads the log every few seconds)."""
    logger.warning("checkpoint %s unreadable (%s); an earlier one, or the log from its start, "
                   "is read instead", uri, why)


class VersionLog:
    def __init__(self, io: FileIO, checkpoint_interval: int = 10,
                 backoff: Backoff | None = None) -> None:
        self.io = io
        self.checkpoint_interval = checkpoint_interval
        self.backoff = backoff or Backoff()

    def read_state(self) -> StoreState:
        state = self._latest_checkpoint()
        seq = state.seq + 1
        while True:
            entry = self.read_entry(seq)
            if entry is None:
                return state
            try:
                fold_entry(state, entry, seq, lenient=True)
            except LogEntryError:  # it names the entry already
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged entry, whatever it trips on
                raise StoreError(f"log entry {self.io.uri_of(entry_path(seq))} cannot be "
                                 f"applied ({type(exc).__name__}: {exc}); the log is "
                                 "damaged") from exc
            seq += 1

    def read_entry(self, seq: int) -> LogEntry | None:
        """Entry `seq`, parsed (None when there is none yet); a damaged one is a
        `LogEntryError` naming it."""
        where = self.io.uri_of(entry_path(seq))
        try:
            raw = self.io.read_bytes(entry_path(seq))
        except NotFoundError:
            return None
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise LogEntryError(f"log entry {where} is not valid JSON: {exc}") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("actions"), list) or \
                not all(isinstance(a, dict) for a in entry["actions"]):
            raise LogEntryError(f"log entry {where} is not an object with a list of actions; "
                                "the log is damaged")
        if not isinstance(entry.get("format", FORMAT_VERSION), int):
            raise LogEntryError(f"log entry {where} has a malformed format field")
        if entry.get("format", FORMAT_VERSION) > FORMAT_VERSION:
            raise LogEntryError(f"log entry {where} uses format {entry['format']}; upgrade "
                                "bc_ray")
        return parse_entry(entry, where)

    def entries(self, start: int = 0) -> Iterator[tuple[int, LogEntry]]:
        seq = start
        while (entry := self.read_entry(seq)) is not None:
            yield seq, entry
            seq += 1

    def typed(self, actions: Sequence[WriterAction], seq: int) -> list[Action]:
        """A writer's actions as typed actions; JSON no reader could take is refused."""
        try:
            return [as_action(action, seq) for action in actions]
        except LogEntryError as exc:
            raise LogEntryError(f"refusing to commit log entry {seq} of {self.io.uri}: {exc}"
                                ) from None

    def commit(self, state: StoreState, actions: Sequence[WriterAction], writer: str
               ) -> StoreState:
        """Append one entry after `state.seq`; returns the new state. Raises CommitConflictError
        when another writer took that number (re-read and retry), CommitStateUnknownError when
        the write failed in a way that may or may not have landed."""
        if not actions:
            raise StoreError("refusing to commit an empty log entry")
        seq = state.seq + 1
        entry = {"format": FORMAT_VERSION, "seq": seq, "writer": writer,
                 "committed_at": datetime.now(timezone.utc).isoformat(),
                 "actions": [action.to_json() for action in self.typed(actions, seq)]}
        raw = self._encode(entry, seq)
        new_state = self._fold_as_read(state, raw, seq)
        try:
            self.io.create(entry_path(seq), raw)
        except (OSError, StorageAccessError) as exc:  # FileExistsError included: `_landed`
            if isinstance(exc, StorageAccessError) and exc.refused:
                raise  # a missing bucket, refused credentials: nothing landed
            landed = self._landed(seq, raw)
            if landed is False:
                raise CommitConflictError(
                    f"log entry {seq} of {self.io.uri} was committed by another writer") from exc
            if landed is None:
                raise CommitStateUnknownError(
                    f"writing log entry {seq} of {self.io.uri} failed ({exc}); it may or may "
                    "not have landed: re-read the state before retrying") from exc
            logger.info("log entry %d of %s landed though its write reported %s: committed",
                        seq, self.io.uri, type(exc).__name__)
        if seq % self.checkpoint_interval == 0:
            self._write_checkpoint(new_state)
        return new_state

    def _landed(self, seq: int, raw: bytes) -> bool | None:
        """After a failed write of entry `seq`: whether it holds these bytes (the writer's own,
        unique by writer and time), another writer's (False), or cannot be told (None). A write
        whose reply was lost is retried by the S3 client, and its own first try answers the
        retry "exists": taken for another writer's, the commit would be made twice."""
        try:
            return self.io.read_bytes(entry_path(seq)) == raw
        except (OSError, StoreError):  # not there yet (a write in flight may land), or unread
            return None

    def _encode(self, entry: dict, seq: int) -> bytes:
        """The entry's bytes, refused when JSON cannot hold a value as it is (a non-finite float
        would be written as null, an unknown type not at all)."""
        where = _non_finite(entry["actions"], "actions")
        if where is not None:
            raise StoreError(f"refusing to commit log entry {seq} of {self.io.uri}: {where[0]} "
                             f"is {where[1]}, which JSON cannot hold (a reader would see null)")
        try:
            return orjson.dumps(entry)
        except orjson.JSONEncodeError as exc:
            raise StoreError(f"refusing to commit log entry {seq} of {self.io.uri}: it cannot "
                             f"be written as JSON ({exc})") from None

    def _fold_as_read(self, state: StoreState, raw: bytes, seq: int) -> StoreState:
        """The state after the entry, folded from its bytes with the readers' own code: an entry
        no reader could apply is never put (it would make every later command fail)."""
        new_state = StoreState.from_dict(state.to_dict())
        try:
            fold_entry(new_state, parse_entry(orjson.loads(raw), seq), seq)
        except Exception as exc:  # noqa: BLE001 - whatever the fold trips on, nothing is put
            kind = type(exc) if isinstance(exc, BcRayError) else StoreError
            detail = str(exc) if isinstance(exc, BcRayError) else f"{type(exc).__name__}: {exc}"
            raise kind(f"refusing to commit log entry {seq} of {self.io.uri}: a reader could "
                       f"not apply it ({detail})") from exc
        return new_state

    def commit_with_retry(self, build: Callable[[StoreState], Sequence[WriterAction]],
                          writer: str, retries: int = 8) -> StoreState:
        """Optimistic concurrency: read, build the actions against that state, commit; on a
        conflict re-read and rebuild (so `build` can re-validate or give up by raising)."""
        for attempt in range(retries + 1):
            state = self.read_state()
            try:
                return self.commit(state, build(state), writer)
            except CommitConflictError:
                if attempt == retries:
                    raise
                delay = self.backoff.delay(attempt)
                logger.info("commit conflict at entry %d, retrying in %.3f s", state.seq + 1,
                            delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _latest_checkpoint(self) -> StoreState:
        """The hinted checkpoint, or where it cannot be read here (damaged, or written by a
        newer bc_ray in a shape this one does not know) the newest earlier one that can: the
        entries after it are folded, so only reads cost more."""
        try:
            seq = int(orjson.loads(self.io.read_bytes(HINT))["seq"])
        except (NotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return StoreState()
        for candidate in range(seq, 0, -self.checkpoint_interval):
            try:
                raw = self.io.read_bytes(checkpoint_path(candidate))
                return StoreState.from_dict(orjson.loads(raw))
            except NotFoundError:
                continue  # an interval another writer did not use
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                _warn_unreadable(self.io.uri_of(checkpoint_path(candidate)),
                                 f"{type(error).__name__}: {error}")
        return StoreState()

    def _write_checkpoint(self, state: StoreState) -> None:
        """Write the checkpoint and its hint after the entry landed: their failure (a full disk,
        a throttled PUT) only costs later reads, so it is said and never fails the commit."""
        try:
            try:
                self.io.create(checkpoint_path(state.seq), orjson.dumps(state.to_dict()))
            except FileExistsError:
                pass
            self.io.replace(HINT, orjson.dumps({"seq": state.seq}))
        except (OSError, StoreError) as error:
            logger.warning("checkpoint %d of %s not written (%s: %s); the commit stands, reads "
                           "fold from an earlier one", state.seq, self.io.uri,
                           type(error).__name__, error)
