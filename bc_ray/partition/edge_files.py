"""A snapshot's edge files as Ray tasks read them, a record batch at a time (`EdgeFiles`), and
every node's degree counted by one task per file: what the partitioned refresh and the sharded
bump plan their ranges by, without any process holding the edge list.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from bc_ray.exceptions import BcRayError, DataError
from bc_ray.io import StorageOptions, damaged_or_unreachable, storage_failure
from bc_ray.partition.task_memory import HEADROOM, too_big
from bc_ray.store.state import FileRecord, StoreState
from bc_ray.store.store import Store

T = TypeVar("T")
READ_ROWS = 1 << 20  # edges per streamed record batch


@dataclass(frozen=True)
class EdgeFile:
    """One Parquet file of the snapshot's edges and the rows of it the snapshot holds: those
    with `column` <= `upto` (a replayed timeline's t) or < `upto` (an ingested batch ordinal)."""

    record: FileRecord
    column: str  # "t" or "batch"
    upto: float


@dataclass(frozen=True)
class EdgeFiles:
    store_uri: str
    options: StorageOptions | None
    files: tuple[EdgeFile, ...]
    num_users: int
    num_items: int
    since: float | None = None  # an incremental refresh's: edges past it are new (`Window`)
    until: float | None = None  # a bump's held-out split: only edges up to it (`time_column`)
    read_rows: int = READ_ROWS  # edges per record batch read

    @classmethod
    def of(cls, store: Store, state: StoreState, num_users: int, num_items: int,
           since: float | None = None) -> EdgeFiles:
        record = state.snapshot()
        if record.batches is None:
            files = (EdgeFile(record.files["edges"], "t", record.cutoff),)
        else:
            logged = [s.files["edges"] for s in state.segments
                      if s.first < record.batches and "edges" in s.files]
            files = tuple(EdgeFile(FileRecord(f.path, f.size, f.sha256), "batch",
                                   record.batches) for f in logged)
        return cls(store.uri, store.io.options, files, num_users, num_items, since)

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def time_column(self) -> str:
        """Which column orders the edges in time: an ingested batch's timestamps, else the
        replayed timeline's t."""
        return "timestamp" if self.files and self.files[0].column == "batch" else "t"

    def batches(self, index: int, columns: tuple[str, ...] = ()) -> Iterator[pa.RecordBatch]:
        """File `index`'s rows in the snapshot (and up to `until`), a record batch at a time:
        user_idx, item_idx, the file's snapshot column and `columns`."""
        file = self.files[index]
        store = Store(self.store_uri, self.options)
        uri = store.io.uri_of(file.record.path)
        wanted = list(dict.fromkeys(["user_idx", "item_idx", file.column, *columns]
                                    + ([self.time_column] if self.until is not None else [])))
        try:
            with store.io.fs.open(store.io.path(file.record.path), "rb") as handle:
                reader = pq.ParquetFile(handle)
                for batch in reader.iter_batches(batch_size=self.read_rows, columns=wanted):
                    values = batch.column(file.column)
                    keep = (pc.less_equal(values, file.upto) if file.column == "t"
                            else pc.less(values, int(file.upto)))
                    if self.until is not None:
                        keep = pc.and_(keep, pc.less_equal(batch.column(self.time_column),
                                                           self.until))
                    yield batch.filter(keep)
        except Exception as exc:  # noqa: BLE001 - the storage's failures, and damage
            if not (storage_failure(exc) or isinstance(exc, (BcRayError, ValueError, KeyError))):
                raise
            raise damaged_or_unreachable(exc, f"cannot read the edges in {uri}: {exc}") from exc

    def edges(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(user idx, item idx, which are new: None unless `since`) of file `index`'s edges in
        the snapshot, a batch at a time."""
        column = self.files[index].column
        for batch in self.batches(index):
            new = None
            if self.since is not None:
                values = batch.column(column)
                new = (pc.greater(values, self.since) if column == "t"
                       else pc.greater_equal(values, int(self.since)))
                new = new.to_numpy(zero_copy_only=False)
            yield (batch.column("user_idx").to_numpy().astype(np.int64),
                   batch.column("item_idx").to_numpy().astype(np.int64), new)


@ray.remote
def _degrees_task(files: EdgeFiles, index: int) -> tuple[np.ndarray, int]:
    """Degrees (repeats counted) of every node from one file, after checking its sha256, and
    the file's count of edges in the snapshot."""
    Store(files.store_uri, files.options).verify(files.files[index].record)
    degrees = np.zeros(files.num_nodes, dtype=np.int64)
    edges = 0
    for users, items, _ in files.edges(index):
        degrees[:files.num_users] += np.bincount(users, minlength=files.num_users)
        degrees[files.num_users:] += np.bincount(items, minlength=files.num_items)
        edges += users.size
    return degrees, edges


def as_finished(submit: Callable[[T], ray.ObjectRef], items: Iterable[T],
                in_flight: int) -> Iterator[tuple[T, object]]:
    """(item, the result of the task `submit(item)` starts) for every item as its task
    finishes, at most `in_flight` at once so that their results do not pile up in the object
    store."""
    waiting = iter(items)
    pending: dict[ray.ObjectRef, T] = {}
    while True:
        for item in itertools.islice(waiting, max(0, in_flight - len(pending))):
            pending[submit(item)] = item
        if not pending:
            return
        [done], _ = ray.wait(list(pending))
        yield pending.pop(done), ray.get(done)


def per_file(task, files: EdgeFiles, *args, in_flight: int = 4) -> Iterator[tuple[int, object]]:
    """(file index, `task.remote(files, index, *args)`'s result) for every file as they finish
    (`as_finished`)."""
    return as_finished(lambda index: task.remote(files, index, *args),
                       range(len(files.files)), in_flight)


def count_degrees(files: EdgeFiles, cpus: float, budget: int | None,
                  in_flight: int = 4) -> np.ndarray:
    """Every node's degree (`count_degrees_by_file`)."""
    return count_degrees_by_file(files, cpus, budget, in_flight)[0]


def count_degrees_by_file(files: EdgeFiles, cpus: float, budget: int | None,
                          in_flight: int = 4) -> tuple[np.ndarray, list[int]]:
    """(every node's degree, each file's count of edges in the snapshot), one task per file (at
    most `in_flight` at once, so their counts do not pile up in the object store), added up as
    they finish."""
    holds = 16 * files.num_nodes  # its counts and one batch's (batches: READ_ROWS edges)
    if budget is not None and HEADROOM * holds > budget:
        raise too_big("counting degrees, a task of every node's count", holds, budget, True)
    task = _degrees_task.options(num_cpus=cpus, memory=int(HEADROOM * holds))
    degrees = np.zeros(files.num_nodes, dtype=np.int64)
    edges = [0] * len(files.files)
    for index, (counts, count) in per_file(task, files, in_flight=in_flight):
        degrees += counts
        edges[index] = count
    if not degrees.any():
        raise DataError("the snapshot has no edges up to its cutoff: nothing to aggregate")
    return degrees, edges
