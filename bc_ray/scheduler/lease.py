"""A lease in the store, so that exactly one scheduler runs a job at a time.

Generations ``_leases/<name>/<gen:020d>.json`` are written put-if-absent: taking the lease means
creating generation g+1 while generation g is free (released or expired). Two schedulers racing
for the same generation cannot both succeed, and a lease whose holder died simply expires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from bc_ray.exceptions import LeaseHeldError, NotFoundError
from bc_ray.io import FileIO

LEASE_ROOT = "_leases"
KEEP_GENERATIONS = 20


@dataclass(frozen=True)
class LeaseRecord:
    generation: int
    holder: str
    expires_at: float
    released: bool = False
    note: str = ""

    def free(self, now: float) -> bool:
        return self.released or now >= self.expires_at


class Lease:
    def __init__(self, io: FileIO, name: str, holder: str, ttl_s: float) -> None:
        self.io, self.name, self.holder, self.ttl_s = io, name, holder, ttl_s
        self.generation: int | None = None

    def _path(self, generation: int) -> str:
        return f"{LEASE_ROOT}/{self.name}/{generation:020d}.json"

    def current(self) -> LeaseRecord | None:
        names = [n for n in self.io.list_dir(f"{LEASE_ROOT}/{self.name}") if n.endswith(".json")]
        for name in reversed(names):
            try:
                return LeaseRecord(**orjson.loads(self.io.read_bytes(
                    f"{LEASE_ROOT}/{self.name}/{name}")))
            except (NotFoundError, orjson.JSONDecodeError, TypeError):
                continue
        return None

    def _write(self, generation: int, released: bool = False, note: str = "") -> LeaseRecord:
        record = LeaseRecord(generation, self.holder, time.time() + self.ttl_s, released, note)
        try:
            self.io.create(self._path(generation), orjson.dumps(vars(record)))
        except FileExistsError as exc:
            raise LeaseHeldError(f"lease {self.name!r} was taken by another scheduler") from exc
        return record

    def acquire(self, note: str = "") -> LeaseRecord | None:
        """Take the lease; returns the record it replaced when that one had expired (its holder
        presumably died), None otherwise. Raises LeaseHeldError when someone else holds it."""
        current = self.current()
        now = time.time()
        if current is not None and not current.free(now) and current.holder != self.holder:
            raise LeaseHeldError(f"lease {self.name!r} is held by {current.holder} until "
                                 f"{time.strftime('%H:%M:%S', time.localtime(current.expires_at))}")
        generation = 0 if current is None else current.generation + 1
        self._write(generation, note=note)
        self.generation = generation
        self._prune(generation)
        stale = current if current is not None and not current.released and \
            current.holder != self.holder else None
        return stale

    def verify(self) -> LeaseRecord:
        """The lease's current generation, if it is still ours (the fence every write of the
        holder passes): raises LeaseHeldError once another scheduler has taken it over. Ours
        but expired (a step outlived it), nobody has taken it: it is extended, and the
        put-if-absent write of the next generation fails if someone takes it first."""
        if self.generation is None:
            raise LeaseHeldError(f"lease {self.name!r} is not held")
        current = self.current()
        if current is None or current.generation != self.generation or \
                current.holder != self.holder or current.released:
            self.generation = None
            raise LeaseHeldError(f"lease {self.name!r} was lost"
                                 + (f" to {current.holder}" if current is not None and
                                    current.holder != self.holder else ""))
        if current.free(time.time()):
            return self._extend()
        return current

    def renew(self, force: bool = False) -> None:
        """Extend the lease (a new generation) once less than half of its time is left."""
        current = self.verify()
        if force or current.expires_at - time.time() <= self.ttl_s / 2:
            self._extend()

    def _extend(self) -> LeaseRecord:
        try:
            record = self._write(self.generation + 1)
        except LeaseHeldError:
            self.generation = None
            raise
        self.generation = record.generation
        return record

    def release(self) -> None:
        if self.generation is None:
            return
        try:
            self._write(self.generation + 1, released=True)
        finally:
            self.generation = None

    def _prune(self, generation: int) -> None:
        for old in range(max(0, generation - 2 * KEEP_GENERATIONS), generation - KEEP_GENERATIONS):
            self.io.delete(self._path(old))
