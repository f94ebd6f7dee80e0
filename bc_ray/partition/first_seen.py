"""Each entity's first interaction in an ingested snapshot, found by Ray tasks over its edge
files: an age-aware model's inputs without the edge list in one process.

`load_ingested` orders the snapshot's edges by (timestamp, batch), then as its files hold them;
keeps each (user, item) pair's first; and spaces the kept edges' times `t` evenly over [0, 1].
An entity's `first_t` is the `t` of its earliest edge, which is kept (an earlier edge of its
pair would be an earlier edge of it), so it is that edge's rank among the pairs' first edges
over their count less one. Here an edge's place in that order is its key: (timestamp, its batch
and position in the files, packed in one integer), and

1. one task per edge file sends each user range the keys of its edges (`_send_task`);
2. one task per range finds its pairs' first edges (a pair never crosses ranges), its users'
   first and its items' earliest among them (`_firsts_task`), and keeps its pairs' first keys,
   sorted, in the object store;
3. the driver takes each item's earliest over the ranges and sorts every entity's first by
   timestamp, and one task per range counts its pairs' first keys before each of them
   (`_count_task`: a search by timestamp, then a bisection by place among the few keys of
   that timestamp): the sums are the ranks.

The driver holds the entities' keys, ranks and results (about 65 bytes an entity), never an
edge.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import ray

from bc_ray.core.node_rows import owner_order
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.exceptions import ConfigError, DataError
from bc_ray.partition.edge_files import EdgeFiles, as_finished
from bc_ray.partition.task_memory import HEADROOM, MAX_PARTITIONS, MB
from bc_ray.store.state import StoreState

logger = logging.getLogger(__name__)

POSITION_BITS = 40  # an edge's position in the files (2^40 edges), below its batch's ordinal
MAX_BATCH = 1 << (63 - POSITION_BITS)
SEND_BYTES_PER_EDGE = 90  # a record batch as read, its keys, and the pieces sent
RANGE_BYTES_PER_EDGE = 100  # a range's keys (24 bytes an edge), their sort and its firsts
COUNT_BYTES_PER_QUERY = 24  # a count task's result, and the queries' pages it maps
COUNT_CHUNK = 1 << 18  # queries searched at once: a count task's scratch stays ~20 MB
SCRATCH_BYTES_PER_QUERY = 80  # a chunk's bounds, the ones still searched and their midpoints
MORE_MEMORY = "give the nodes more memory"  # what helps, where the caller knows no better


def ages_need_edges(cold_start_mixing: bool, state: StoreState) -> bool:
    """An age-aware model of an ingested snapshot reads each entity's first interaction, which
    the snapshot's entity tables do not keep (only its edges give it: `first_interactions`)."""
    return cold_start_mixing and state.snapshot().batches is not None


@dataclass(frozen=True)
class Keys:
    """Edges' places in the snapshot's order, compared as (ts, place), `place` being the batch
    ordinal above the position in the files; `of` is whose (an entity, a pair) each key is."""

    of: np.ndarray
    ts: np.ndarray
    place: np.ndarray

    @classmethod
    def empty(cls) -> Keys:
        """No keys (a file or range without edges)."""
        return cls(*(np.zeros(0, np.int64),) * 3)

    @classmethod
    def concat(cls, parts: list[Keys]) -> Keys:
        """One after the other, as given."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in dataclasses.fields(cls)))

    def take(self, index: np.ndarray) -> Keys:
        """The keys at `index` (a copy)."""
        return Keys(self.of[index], self.ts[index], self.place[index])

    def order(self) -> np.ndarray:
        """By key alone."""
        return np.lexsort((self.place, self.ts))

    def stacked(self) -> np.ndarray:
        """The keys alone, as two rows (ts, place) of one array: one object to pass."""
        return np.stack([self.ts, self.place])

    def first_of_each(self) -> Keys:
        """The earliest key of each `of`, in key order."""
        order = self.order()
        return self.take(order[_first_places(self.of[order])])

    def first_by(self, owner: np.ndarray, count: int, offset: int = 0) -> Keys:
        """Keys in key order: the first of each `owner` (ids `offset`..`offset + count`), as
        keys of those ids (`first_of_each` without a sort, where the ids are few and dense)."""
        first = np.full(count, self.of.size, dtype=np.int64)
        np.minimum.at(first, owner - offset, np.arange(self.of.size, dtype=np.int64))
        found = np.flatnonzero(first < self.of.size)
        return Keys(found + offset, self.ts[first[found]], self.place[first[found]])


@dataclass(frozen=True)
class FirstInteractions:
    """Per entity (by idx): its first interaction's edge-fraction time and unix seconds; NaN and
    0 where it has no edge (`has`: False). `t_at`: the edge-fraction time reached at each
    instant asked for, as `t_at_timestamp` gives it."""

    user_t: np.ndarray
    user_ts: np.ndarray
    user_has: np.ndarray
    item_t: np.ndarray
    item_ts: np.ndarray
    item_has: np.ndarray
    t_at: np.ndarray

    def applied(self, snapshot: GraphSnapshot) -> GraphSnapshot:
        """`snapshot`'s entity tables with these first interactions (nulls where none), as
        `load_ingested` gives them."""
        tables = {}
        for entity in ("user", "item"):
            table = snapshot.entities(entity)
            idx = table["idx"].to_numpy()
            missing = np.flatnonzero(~getattr(self, f"{entity}_has")[idx])
            tables[entity] = table.with_columns(
                first_t=pl.Series(getattr(self, f"{entity}_t")[idx]).scatter(missing, None),
                first_ts=pl.Series(getattr(self, f"{entity}_ts")[idx]).scatter(missing, None))
        return dataclasses.replace(snapshot, users=tables["user"], items=tables["item"])


@ray.remote
def _send_task(files: EdgeFiles, index: int, first: int,
               bounds: np.ndarray) -> list[Keys] | Keys:
    """File `index`'s edges (`first`: the position of its first in the files) as keys of their
    (user, item) pairs, one piece per user range."""
    parts: list[Keys] = []
    position = first
    for batch in files.batches(index, ("timestamp", "batch")):
        user = batch.column("user_idx").to_numpy().astype(np.int64)
        pair = user * files.num_items + batch.column("item_idx").to_numpy().astype(np.int64)
        ordinal = batch.column("batch").to_numpy().astype(np.int64)
        if ordinal.size and int(ordinal.max()) >= MAX_BATCH:
            raise DataError(f"batch ordinal {int(ordinal.max())} is past {MAX_BATCH - 1}")
        place = (ordinal << POSITION_BITS) | np.arange(position, position + batch.num_rows)
        parts.append(Keys(pair, batch.column("timestamp").to_numpy().astype(np.int64), place))
        position += batch.num_rows
    keys = Keys.concat(parts) if parts else Keys.empty()
    del parts  # the keys once, not twice
    ranges = bounds.size - 1
    order, cuts = owner_order(
        np.searchsorted(bounds, keys.of // files.num_items, side="right") - 1, ranges)
    pieces = [keys.take(order[cuts[r]:cuts[r + 1]]) for r in range(ranges)]
    return pieces if len(pieces) > 1 else pieces[0]  # Ray returns one object as it is


@ray.remote(num_returns=2)
def _firsts_task(num_items: int, users: tuple[int, int],
                 *pieces: Keys) -> tuple[dict, np.ndarray]:
    """A user range's ({users: their first keys, items: their earliest among the range's,
    pairs: its count of distinct pairs}, its pairs' first keys by key, `stacked`)."""
    keys = Keys.concat(list(pieces))
    del pieces
    firsts = keys.first_of_each()
    del keys
    summary = {"users": firsts.first_by(firsts.of // num_items, users[1] - users[0], users[0]),
               "items": firsts.first_by(firsts.of % num_items, num_items),
               "pairs": int(firsts.of.size)}
    return summary, firsts.stacked()


def _first_places(owners: np.ndarray) -> np.ndarray:
    """Where each owner first appears in `owners`, ascending (an unstable sort of the owners,
    then each group's least place: faster than a stable one)."""
    by_owner = np.argsort(owners)
    sorted_owners = owners[by_owner]
    starts = np.flatnonzero(np.r_[True, sorted_owners[1:] != sorted_owners[:-1]])
    first = np.zeros(owners.size, dtype=bool)
    if owners.size:
        first[np.minimum.reduceat(by_owner, starts)] = True
    return np.flatnonzero(first)


@ray.remote
def _count_task(firsts: np.ndarray, queries: np.ndarray,
                chunk: int = COUNT_CHUNK) -> np.ndarray:
    """How many of the keys `firsts` (`stacked`, in key order) come strictly before each of
    `queries` (`stacked`, by timestamp: numpy's search is fastest on sorted queries)."""
    counts = np.empty(queries.shape[1], dtype=np.int64)
    for start in range(0, counts.size, chunk):
        part = slice(start, start + chunk)
        counts[part] = _count_before(firsts[0], firsts[1], queries[0, part], queries[1, part])
    return counts


def _count_before(ts: np.ndarray, place: np.ndarray, query_ts: np.ndarray,
                  query_place: np.ndarray) -> np.ndarray:
    """How many keys (`ts`, `place`), in key order, come strictly before each query key: a
    search by timestamp, then a bisection by place among the keys of the query's timestamp
    (a few, as a rule; all of them where every edge has one timestamp, still log time): a
    search of int64s, far faster than one of (ts, place) records compared field by field."""
    low = np.searchsorted(ts, query_ts, side="left")
    high = np.searchsorted(ts, query_ts, side="right")
    active = np.flatnonzero(low < high)
    while active.size:
        mid = (low[active] + high[active]) >> 1
        before = place[mid] < query_place[active]
        low[active] = np.where(before, mid + 1, low[active])
        high[active] = np.where(before, high[active], mid)
        active = active[low[active] < high[active]]
    return low


def user_ranges(user_degrees: np.ndarray, edges_per_range: int) -> np.ndarray:
    """Bounds of user ranges of at most about `edges_per_range` edges each (one at least)."""
    total = int(user_degrees.sum())
    count = max(1, -(-total // max(1, edges_per_range)))
    cuts = np.searchsorted(np.cumsum(user_degrees), np.arange(1, count) * total / count)
    return np.unique(np.concatenate([[0], cuts + 1, [user_degrees.size]])).astype(np.int64)


def first_interactions(files: EdgeFiles, degrees: np.ndarray, file_edges: list[int],
                       cpus: float = 1.0, budget: int | None = None, ranges: int = 1,
                       at: Sequence[float] = (), remedy: str = MORE_MEMORY
                       ) -> FirstInteractions:
    """Every entity's first interaction in the ingested snapshot `files` hold, as
    `load_ingested` finds it (`degrees`: every node's, repeats counted; `file_edges`: each
    file's count), over at least `ranges` user ranges (more where one would not fit
    `budget`); and the edge-fraction time at each of the unix instants `at`. What cannot fit
    `budget` is refused before any task starts, saying `remedy`."""
    if files.time_column != "timestamp":
        raise ConfigError("first interactions are found from an ingested snapshot's edges; a "
                          "replayed timeline's entity tables hold them")
    started = time.perf_counter()
    files = dataclasses.replace(files, since=None, until=None)
    bounds, range_edges = _plan(degrees[:files.num_users], file_edges, int(np.count_nonzero(
        degrees)) + len(at), ranges, budget, remedy)
    users, items, pairs, runs = _firsts_by_range(files, file_edges, bounds, range_edges, cpus)
    instants = np.floor(np.asarray(at, dtype=np.float64)).astype(np.int64)
    after_all = np.full(instants.size, np.iinfo(np.int64).max)  # after every edge at an instant
    ranks = _ranks([users, items, Keys(after_all, instants, after_all)], runs, cpus)
    ranks, reached = ranks[:-instants.size or None], ranks[ranks.size - instants.size:]
    result = {"t_at": np.where(reached > 0, _t_of(reached - 1, pairs), 0.0)}
    for entity, keys, count, rank in (("user", users, files.num_users, ranks[:users.ts.size]),
                                      ("item", items, files.num_items, ranks[users.ts.size:])):
        has = np.zeros(count, dtype=bool)
        has[keys.of] = True
        result[f"{entity}_t"] = np.full(count, np.nan)
        result[f"{entity}_t"][keys.of] = _t_of(rank, pairs)
        result[f"{entity}_ts"] = np.zeros(count, dtype=np.int64)
        result[f"{entity}_ts"][keys.of] = keys.ts
        result[f"{entity}_has"] = has
    logger.info("first interactions: %d users and %d items from %d edge file(s) over %d user "
                "ranges in %.1fs", users.ts.size, items.ts.size, len(files.files),
                len(range_edges), time.perf_counter() - started)
    return FirstInteractions(**result)


def _plan(user_degrees: np.ndarray, file_edges: list[int], queries: int, ranges: int,
          budget: int | None, remedy: str) -> tuple[np.ndarray, np.ndarray]:
    """(the user ranges' bounds, each one's edges): at least `ranges`, as many more as it takes
    for each range's task to fit `budget` (a user's edges are never split), every file's and
    count task's checked too."""
    edges = int(sum(file_edges))
    if edges >= 1 << POSITION_BITS:
        raise DataError(f"{edges} edges: first interactions are found for up to "
                        f"{1 << POSITION_BITS}")
    largest = max(file_edges, default=0)
    _check(f"a task reading a file of {largest:,} edges", SEND_BYTES_PER_EDGE * largest, budget,
           f"{remedy}, or keep files smaller (`bc-ray data compact --target-rows` merges "
           "batches, never splits one)")
    _check(f"a task counting {queries:,} entities' ranks", _count_bytes(queries), budget,
           remedy)
    heaviest = int(user_degrees.max(initial=0))
    _check(f"a task of a user range holding a user of {heaviest:,} edges",
           RANGE_BYTES_PER_EDGE * heaviest, budget, remedy)
    per_range = -(-edges // max(1, ranges))
    while True:
        bounds = user_ranges(user_degrees, per_range)
        range_edges = np.add.reduceat(user_degrees, bounds[:-1])
        need = RANGE_BYTES_PER_EDGE * int(range_edges.max())
        if range_edges.size > MAX_PARTITIONS:
            raise ConfigError(f"finding first interactions would take {range_edges.size} user "
                              f"ranges, more than {MAX_PARTITIONS}: {remedy}")
        if budget is None or HEADROOM * need <= budget:
            return bounds, range_edges
        per_range = min(per_range - 1, int(per_range * budget / (HEADROOM * need)))


def _count_bytes(queries: int) -> int:
    """What a count task holds for `queries` queries."""
    return COUNT_BYTES_PER_QUERY * queries + SCRATCH_BYTES_PER_QUERY * min(queries, COUNT_CHUNK)


def _check(what: str, need: int, budget: int | None, remedy: str) -> None:
    """Refuse a task that would ask Ray for more memory than a task gets (it would wait for
    ever), saying what helps."""
    if budget is not None and HEADROOM * need > budget:
        raise ConfigError(f"finding first interactions, {what} must hold {need / MB:,.2f} MB "
                          f"({HEADROOM:g}x that with headroom); a task here gets "
                          f"{budget / MB:,.2f} MB: {remedy}")


def _firsts_by_range(files: EdgeFiles, file_edges: list[int], bounds: np.ndarray,
                     range_edges: np.ndarray, cpus: float) -> tuple[Keys, Keys, int, list]:
    """(each user's first key, each item's, the count of distinct pairs, each user range's
    pairs' first keys: refs): stages 1 and 2, over the user ranges `bounds` cuts
    (`range_edges`: each one's edges)."""
    parts = bounds.size - 1
    bounds_ref = ray.put(bounds)
    starts = np.concatenate([[0], np.cumsum(file_edges)[:-1]]).astype(np.int64)
    sent = [_send_task.options(num_cpus=cpus, num_returns=parts,
                               memory=int(HEADROOM * SEND_BYTES_PER_EDGE * max(n, 1)))
            .remote(files, index, int(starts[index]), bounds_ref)
            for index, n in enumerate(file_edges)]
    sent = [refs if isinstance(refs, list) else [refs] for refs in sent]
    summaries, runs = zip(*[
        _firsts_task.options(num_cpus=cpus,
                             memory=int(HEADROOM * RANGE_BYTES_PER_EDGE * max(int(n), 1)))
        .remote(files.num_items, (int(bounds[r]), int(bounds[r + 1])),
                *(refs[r] for refs in sent))
        for r, n in zip(range(parts), range_edges)])
    del sent  # the pieces go once the ranges have read them
    pending = list(summaries)
    del summaries  # each summary goes from the object store once added
    users, items, pairs = [], Keys.empty(), 0
    for found in _as_done(pending):  # items folded as they come: two tables at most
        users.append(Keys.concat([found["users"]]))  # copies: a view would pin the summary
        items = Keys.concat([items, found["items"]]).first_of_each()
        pairs += found["pairs"]
    del found
    return Keys.concat(users), items, pairs, list(runs)


def _ranks(parts: list[Keys], runs: list, cpus: float) -> np.ndarray:
    """How many of the ranges' pairs' first keys (`runs`) come before each of the keys `parts`
    hold, one after the other (asked for by timestamp: numpy searches sorted queries fastest)."""
    ts = np.concatenate([part.ts for part in parts])
    by_ts = np.argsort(ts)
    queries = np.empty((2, ts.size), dtype=np.int64)  # `Keys.stacked`, by timestamp
    np.take(ts, by_ts, out=queries[0])
    del ts
    np.take(np.concatenate([part.place for part in parts]), by_ts, out=queries[1])
    queries_ref = ray.put(queries)
    del queries
    ranks = np.zeros(by_ts.size, dtype=np.int64)
    task = _count_task.options(num_cpus=cpus,
                               memory=int(HEADROOM * _count_bytes(by_ts.size)))
    # as many at once as can run: each result waits in the object store, 8 bytes a query
    in_flight = max(1, int(ray.cluster_resources().get("CPU", 1.0) // max(cpus, 1e-3)))
    for _, counts in as_finished(lambda run: task.remote(run, queries_ref), runs, in_flight):
        ranks += counts
    in_order = np.empty_like(ranks)
    in_order[by_ts] = ranks  # back from timestamp order
    return in_order


def _as_done(refs: list[ray.ObjectRef]) -> Iterator:
    """Results as their tasks finish, each taken out of `refs` as it comes, so that it goes
    from the object store once the caller is done."""
    for _ in range(len(refs)):
        [done], _ = ray.wait(refs)
        refs.remove(done)
        yield ray.get(done)


def _t_of(ranks: np.ndarray, pairs: int) -> np.ndarray:
    """The t of the kept edges at `ranks`, as np.linspace(0, 1, pairs) spaces them (i x step,
    the last exactly 1)."""
    if pairs <= 1:
        return np.zeros(ranks.size)
    t = ranks * (1.0 / (pairs - 1))
    t[ranks == pairs - 1] = 1.0
    return t
