"""Range graphs built by Ray tasks from the snapshot's edge files, streamed batch by batch: no
process (the driver included) ever holds the whole edge list or the whole CSR.

Two passes over the files: one task per file counts degrees (and checks the file's sha256,
streamed), which the driver adds up to plan the ranges; then one task per file sends every
range the ends in its rows (an 8-byte key each: `edge_shuffle.py`), and one task per range
builds its CSR from them and sends every other range the ids of the rows it will need of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from bc_ray.exceptions import CorruptFileError, DataError
from bc_ray.io import StorageOptions
from bc_ray.core.node_rows import drained, rows_of_keys
from bc_ray.refresh.ranges import NodeRanges, split_range
from bc_ray.refresh.sizing import HEADROOM, build_bytes, too_big
from bc_ray.store.state import FileRecord, StoreState
from bc_ray.store.store import Store

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
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptFileError(f"cannot read the edges in {uri}: {exc}") from exc

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


def per_file(task, files: EdgeFiles, *args, in_flight: int = 4) -> Iterator[tuple[int, object]]:
    """(file index, `task.remote(files, index, *args)`'s result) for every file as they finish,
    at most `in_flight` at once so that their results do not pile up in the object store."""
    waiting = list(range(len(files.files)))
    pending: dict[ray.ObjectRef, int] = {}
    while waiting or pending:
        while waiting and len(pending) < in_flight:
            index = waiting.pop(0)
            pending[task.remote(files, index, *args)] = index
        [done], _ = ray.wait(list(pending))
        yield pending.pop(done), ray.get(done)


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


@ray.remote
def _range_graph_task(ranges: NodeRanges, hubs: np.ndarray, part: int, *pieces) -> tuple:
    """(what it found, range `part`'s graph, and for each range q the ids of q's rows it
    needs), from its ends as every file's shuffle task sent them (`edge_shuffle.RangeEnds`,
    read where they lie in the object store). What it found: the graph's sizes and,
    incrementally, the range's nodes with new edges ("touched", local rows)."""
    start, stop = ranges.range(part)
    num_nodes = int(ranges.bounds[-1])
    touched = np.zeros(stop - start, dtype=bool)
    for piece in pieces:
        touched[piece.touched] = True
    crow, neighbours = rows_of_keys(drained([piece.keys for piece in pieces]), stop - start,
                                    num_nodes)
    graph, outgoing = split_range(crow, neighbours, start, stop, hubs, ranges)
    found = {"sources": graph.num_sources, "bytes": graph.nbytes, "whole": graph.whole,
             "touched": np.flatnonzero(touched)}
    return (found, graph, *outgoing)


def build_range_graphs(ends: list[list[ray.ObjectRef]], ranges: NodeRanges, hubs: np.ndarray,
                       cpus: float, degrees: np.ndarray
                       ) -> tuple[list[dict], list[ray.ObjectRef], list[list[ray.ObjectRef]]]:
    """(what each range's task found (`_range_graph_task`) and what it was planned to hold
    ("build_bytes"), graph refs by range, pieces[p][q]: the ids of q's rows range p needs),
    from `ends[p]`, range p's ends as the shuffle sent them (`edge_shuffle.shuffle_ends`).
    Each task asks Ray for the memory it holds (`sizing.range_bytes`' build)."""
    parts = len(ranges)
    ranges_ref, hubs_ref = ray.put(ranges), ray.put(hubs)
    outputs, holds = [], []
    for part in range(parts):
        start, stop = ranges.range(part)
        holds.append(build_bytes(int(degrees[start:stop].sum()), stop - start, degrees.size))
        task = _range_graph_task.options(num_cpus=cpus, num_returns=parts + 2,
                                         memory=int(HEADROOM * holds[-1]),
                                         scheduling_strategy="SPREAD")
        outputs.append(task.remote(ranges_ref, hubs_ref, part, *ends[part]))
    sizes = [{**found, "build_bytes": held}
             for found, held in zip(ray.get([o[0] for o in outputs]), holds)]
    return sizes, [o[1] for o in outputs], [o[2:] for o in outputs]
