"""The snapshot's edge ends sent to the ranges whose rows they are, each edge file read once.

A range's graph task used to read every edge file and keep its own ends: P reads of the whole
graph, which made planning grow with P (RESULTS §10). Now one task per group of files reads
them once, keys every end for the range of its row (`node_rows.end_keys`) and sends each range
its share through the object store; each range's task then reads its shares there
(`range_graphs.py`). A task streams its files: a Ray generator, it yields one piece per range a
flush at a time and holds no more than two flushes, so a snapshot kept in one large file is
never held whole. Every flush holds at least `flush_ends` ends (small files are grouped, and a
task's last flush takes in what would have been a small one; a node with too little memory for
that gets smaller flushes: `fitted`): an average piece is then large enough for the object
store, where Ray would keep a smaller one in the driver's own memory.
Between the two stages the object store holds the keys, 8 bytes an end, spread over the nodes
whose tasks read the files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray

from bc_ray.core.node_rows import by_owner, end_keys
from bc_ray.partition.edge_files import EdgeFiles
from bc_ray.partition.task_memory import HEADROOM, too_big
from bc_ray.refresh.ranges import NodeRanges

FLUSH_ENDS = 1 << 21  # ends a task keys at least before it sends them on (16 MB of keys)
MIN_PIECE_ENDS = 1 << 15  # 256 KB of keys on average a piece: Ray keeps objects under 100 KB
# in the caller's memory, not the object store, and the driver must not hold the graph's keys
SHUFFLE_BYTES_PER_END = 40  # a flush: the keys and ranges as keyed, joined, and sorted by range
TOUCHED_BYTES_PER_END = 30  # incremental: the rows with new edges, and their ranges, likewise
READ_BYTES_PER_EDGE = 96  # a record batch as read and converted, and its two ends' keys
MIN_READ_ROWS = 256  # edges a record batch reads at least, however little a task may hold


def flush_ends(parts: int) -> int:
    """Ends a task keys at least before it sends each of `parts` ranges its piece: enough that
    an average piece is not kept in the caller's memory."""
    return max(FLUSH_ENDS, parts * MIN_PIECE_ENDS)


def shuffle_bytes(flush_at: int, read_rows: int, incremental: bool = False) -> int:
    """What a shuffle task holds: its keyed ends (less than two flushes and a record batch's
    more: `_shuffle_task`) and one record batch of `read_rows` edges."""
    per_end = SHUFFLE_BYTES_PER_END + (TOUCHED_BYTES_PER_END if incremental else 0)
    return per_end * 2 * (flush_at + read_rows) + READ_BYTES_PER_EDGE * read_rows


def fitted(flush_at: int, read_rows: int, edges: int, budget: int | None,
           incremental: bool = False) -> tuple[int, int]:
    """(`flush_at`, `read_rows`) no larger than the snapshot's `edges` need, and both cut by as
    much as it takes for a task's hold to fit `budget` with headroom: a node of little memory
    gets smaller flushes and batches (and smaller pieces), not a refusal. At least
    MIN_READ_ROWS edges a batch."""
    read_rows = max(1, min(read_rows, edges))
    flush_at = max(1, min(flush_at, 2 * edges))
    holds = shuffle_bytes(flush_at, read_rows, incremental)
    if budget is None or HEADROOM * holds <= budget:
        return flush_at, read_rows
    scale = budget / (HEADROOM * holds)
    read_rows = min(read_rows, max(MIN_READ_ROWS, int(read_rows * scale)))
    room = budget / HEADROOM - shuffle_bytes(0, read_rows, incremental)  # for the flushes
    per_flush_end = shuffle_bytes(1, 0, incremental)
    if room < per_flush_end:
        raise too_big("sending a file's edge ends to their ranges, a task",
                      shuffle_bytes(1, read_rows, incremental), budget, True)
    return min(flush_at, int(room // per_flush_end)), read_rows


def file_groups(file_edges: list[int], flush_at: int) -> list[tuple[int, ...]]:
    """Consecutive files with edges, grouped so that each group holds at least `flush_at`
    ends (unless all of them hold fewer): one task each."""
    groups: list[list[int]] = []
    ends = flush_at  # of the group being filled: none yet
    for index, edges in enumerate(file_edges):
        if not edges:
            continue
        if ends >= flush_at:
            groups.append([])
            ends = 0
        groups[-1].append(index)
        ends += 2 * edges
    if len(groups) > 1 and ends < flush_at:
        last = groups.pop()
        groups[-1] += last
    return [tuple(group) for group in groups]


@dataclass(frozen=True)
class RangeEnds:
    """One range's share of a flush: its ends' keys (`row_keys`: local row x nodes +
    neighbour) and, in an incremental refresh, the local rows whose nodes have new edges."""

    keys: np.ndarray
    touched: np.ndarray


@dataclass
class _Flush:
    """Keyed ends waiting to be sent, and the touched rows among them, with their ranges."""

    parts: int
    keys: list[np.ndarray]
    owners: list[np.ndarray]
    touched: list[np.ndarray]
    touched_owners: list[np.ndarray]
    ends: int = 0

    @classmethod
    def empty(cls, parts: int) -> _Flush:
        return cls(parts, [], [], [], [])

    def add(self, owner: np.ndarray, keys: np.ndarray, new: np.ndarray | None,
            num_nodes: int) -> None:
        self.keys.append(keys)
        self.owners.append(owner)
        self.ends += keys.size
        if new is not None:
            ends_new = np.concatenate([new, new])  # an edge's two ends, as `end_keys` orders them
            self.touched.append(keys[ends_new] // num_nodes)
            self.touched_owners.append(owner[ends_new])

    def pieces(self) -> Iterator[RangeEnds]:
        """One piece per range, in range order."""
        keys, key_cuts = by_owner(self.keys, self.owners, self.parts)
        touched, touched_cuts = by_owner(self.touched, self.touched_owners, self.parts)
        for part in range(self.parts):
            yield RangeEnds(keys[key_cuts[part]:key_cuts[part + 1]],
                            touched[touched_cuts[part]:touched_cuts[part + 1]])


@ray.remote
def _shuffle_task(files: EdgeFiles, indices: tuple[int, ...], ends: int, ranges: NodeRanges,
                  flush_at: int) -> Iterator:
    """The ends of files `indices` (`ends` of them in all): for each flush, one `RangeEnds` per
    range (in range order); last, the files' count of new edges (0 unless incremental). A flush
    waits for at least `flush_at` ends, and for the rest too where fewer would be left for
    the last one."""
    parts, num_nodes = len(ranges), int(ranges.bounds[-1])
    flush = _Flush.empty(parts)
    new_edges = seen = 0
    for index in indices:
        for users, items, new in files.edges(index):
            owner, keys = end_keys(users, items, files.num_users, ranges.bounds)
            del users, items
            seen += keys.size
            flush.add(owner, keys, new, num_nodes)
            if new is not None:
                new_edges += int(np.count_nonzero(new))
            if flush.ends >= flush_at and ends - seen >= flush_at:
                yield from flush.pieces()
                flush = _Flush.empty(parts)
    if flush.ends:
        yield from flush.pieces()
    yield new_edges


@dataclass(frozen=True)
class ShuffledEnds:
    """Every file's ends by range: `pieces[p]`, the refs of range p's `RangeEnds` (one per
    flush of every task), and the snapshot's count of new edges."""

    pieces: list[list[ray.ObjectRef]]
    new_edges: int


def shuffle_ends(files: EdgeFiles, ranges: NodeRanges, file_edges: list[int], cpus: float,
                 budget: int | None, flush_at: int | None = None) -> ShuffledEnds:
    """Each edge file read once (`file_edges`: its count of edges in the snapshot), its ends
    sent to their ranges (`_shuffle_task`, one per group of files, as many at once as the
    cluster has room for), at least `flush_at` ends at a time (default `flush_ends`), both cut
    to fit `budget` (`fitted`)."""
    parts = len(ranges)
    incremental = files.since is not None
    flush_at, read_rows = fitted(flush_at or flush_ends(parts), files.read_rows,
                                 sum(file_edges), budget, incremental)
    files = dataclasses.replace(files, read_rows=read_rows)
    task = _shuffle_task.options(
        num_cpus=cpus, memory=int(HEADROOM * shuffle_bytes(flush_at, read_rows, incremental)),
        scheduling_strategy="SPREAD")
    ranges_ref = ray.put(ranges)
    streams = [task.remote(files, group, 2 * sum(file_edges[i] for i in group), ranges_ref,
                           flush_at) for group in file_groups(file_edges, flush_at)]
    pieces: list[list[ray.ObjectRef]] = [[] for _ in range(parts)]
    new_edges = 0
    for stream in streams:
        refs = list(stream)
        new_edges += int(ray.get(refs.pop()))
        if len(refs) % parts:
            raise RuntimeError(f"a shuffle task sent {len(refs)} pieces, not whole flushes of "
                               f"{parts}")
        for at, ref in enumerate(refs):  # every flush sends each range one, empty or not
            pieces[at % parts].append(ref)
    return ShuffledEnds(pieces, new_edges)
