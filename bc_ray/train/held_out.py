"""A bump's held-out split, decided without reading the edge list into one process.

The one-table bump loads the snapshot whole and splits its last period (`period_split`). A
sharded bump cannot: at 100M interactions the list alone is a few GB. Here the driver streams
the snapshot's edge files with one Ray task per file, three times and over a few columns: for
the earliest and latest times; for the period's edges (a day of a hundred is a hundredth of the
list); and for which of the period's (user, item) pairs and users were seen before it. From
those it decides `period_split`'s split edge for edge (`decide_period`, tested against it): the same
evaluation edges, the same validation and test users, the same training edges of new users.

Workers then read their own nodes' training edges from the files: those up to the period's
start (`EdgeFiles.until`) and the new users' period edges but their last (`HeldOut.extra`).

An ingested snapshot keeps each (user, item) pair once, at its first interaction in (timestamp,
batch) order (`load_ingested`): a pair seen before the period is not held out, and a pair
repeated within it counts once. A replayed timeline is taken as it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow.compute as pc
import ray
import torch

from bc_ray.data.timeline import days_before
from bc_ray.exceptions import TrainingError
from bc_ray.partition.edge_files import EdgeFiles, per_file
from bc_ray.train.held_out_caveats import say_if_no_validation


@dataclass(frozen=True)
class PeriodEdges:
    """The held-out period's edges in the snapshot's order, and what was seen before it."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    user_seen_before: np.ndarray  # per edge: its user has an edge up to the period's start
    pair_seen_before: np.ndarray  # per edge: its (user, item) pair has one (ingested only)


@dataclass(frozen=True)
class HeldOut:
    """`period_split`'s split as a sharded bump needs it: what workers add to the training edges
    up to `start`, and what the gate scores."""

    start: float  # training edges: `EdgeFiles.time_column` <= start, and the extra ones
    window: str  # how to say the period
    extra_user: np.ndarray  # new users' period edges but their last
    extra_item: np.ndarray
    eval_user: torch.Tensor
    eval_item: torch.Tensor
    val_users: torch.Tensor
    test_users: torch.Tensor
    new_users: torch.Tensor  # first seen in the period
    user_pool: torch.Tensor  # entities with an edge in the snapshot
    item_pool: torch.Tensor

    @property
    def extra(self) -> tuple[np.ndarray, np.ndarray]:
        return self.extra_user, self.extra_item


def kept_edges(period: PeriodEdges, dedup: bool = True) -> np.ndarray:
    """Which of `period`'s edges the snapshot holds (indices, in order): all of them, or with
    `dedup` (an ingested snapshot's rule) each pair's first, and none of a pair seen before."""
    if not dedup:
        return np.arange(period.user.size)
    keys = period.user * (int(period.item.max(initial=0)) + 1) + period.item
    _, first = np.unique(keys, return_index=True)
    kept = np.sort(first)
    return kept[~period.pair_seen_before[kept]]


def decide_period(period: PeriodEdges, seed: int = 0, max_eval_users: int = 0,
                  dedup: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(to evaluate, to train on, validation users, test users): the first two index
    `period`'s edges (`kept_edges`). Evaluated: the edges of users seen before, and each new
    user's last edge when they have two or more; the rest train."""
    kept = kept_edges(period, dedup)
    user = period.user[kept]
    new = ~period.user_seen_before[kept]
    positions = np.arange(kept.size)
    new_users, inverse, counts = np.unique(user[new], return_inverse=True, return_counts=True)
    last = np.zeros(new_users.size, dtype=np.int64)
    np.maximum.at(last, inverse, positions[new])
    to_eval = ~new | np.isin(positions, last[counts > 1])
    eval_users = np.unique(user[to_eval])
    rng = np.random.default_rng(seed)  # drawn as `period_split` draws them
    if 0 < max_eval_users < eval_users.size:
        eval_users = np.sort(rng.choice(eval_users, max_eval_users, replace=False))
    in_val = rng.random(eval_users.size) < 0.5
    return kept[to_eval], kept[~to_eval], eval_users[in_val], eval_users[~in_val]


@ray.remote
def _span_task(files: EdgeFiles, index: int) -> tuple[float, float]:
    """The earliest and the latest time of file `index`'s edges."""
    earliest, latest = np.inf, -np.inf
    for batch in files.batches(index, (files.time_column,)):
        if batch.num_rows:
            span = pc.min_max(batch.column(files.time_column)).as_py()
            earliest, latest = min(earliest, float(span["min"])), max(latest, float(span["max"]))
    return earliest, latest


@ray.remote
def _period_task(files: EdgeFiles, index: int, start: float) -> dict[str, np.ndarray]:
    """File `index`'s edges past `start`: user, item, time, batch ordinal (0 on a replayed
    timeline) and row (their order in the file)."""
    time, parts, row = files.time_column, [], 0
    for batch in files.batches(index, (time,)):
        after = pc.greater(batch.column(time), start).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(after)
        columns = {name: batch.column(name).to_numpy()[rows]
                   for name in ("user_idx", "item_idx", time)}
        columns["batch"] = (batch.column("batch").to_numpy()[rows] if time == "timestamp"
                            else np.zeros(rows.size, dtype=np.int64))
        parts.append({"user": columns["user_idx"].astype(np.int64),
                      "item": columns["item_idx"].astype(np.int64),
                      "time": columns[time].astype(np.float64),
                      "batch": columns["batch"].astype(np.int64), "row": rows + row})
        row += batch.num_rows
    return {name: np.concatenate([p[name] for p in parts]) if parts
            else np.zeros(0, dtype=np.int64) for name in ("user", "item", "time", "batch", "row")}


@ray.remote
def _seen_before_task(files: EdgeFiles, index: int, start: float, keys: np.ndarray,
                      users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of the sorted `keys` (user * items + item) and `users` file `index` has edges of
    up to `start`."""
    seen_keys = np.zeros(keys.size, dtype=bool)
    seen_users = np.zeros(users.size, dtype=bool)
    for edge_user, edge_item, _ in replace(files, until=start).edges(index):
        for wanted, found, values in ((keys, seen_keys, edge_user * files.num_items + edge_item),
                                      (users, seen_users, edge_user)):
            at = np.minimum(np.searchsorted(wanted, values), max(wanted.size - 1, 0))
            hit = wanted[at] == values if wanted.size else np.zeros(values.size, dtype=bool)
            found[at[hit]] = True
    return seen_keys, seen_users


def _span(files: EdgeFiles, cpus: float) -> tuple[float, float]:
    spans = [span for _, span in per_file(_span_task.options(num_cpus=cpus), files)]
    return min(span[0] for span in spans), max(span[1] for span in spans)


def period_edges(files: EdgeFiles, start: float, cpus: float = 1.0) -> PeriodEdges:
    """The edges past `start` in the snapshot's order ((timestamp, batch) on an ingested
    snapshot, then as the files hold them), with what was seen up to `start`."""
    found = dict(per_file(_period_task.options(num_cpus=cpus), files, start))
    parts = [found[index] for index in range(len(files.files))]
    columns = {name: np.concatenate([p[name] for p in parts])
               for name in ("user", "item", "time", "batch", "row")}
    file = np.concatenate([np.full(p["user"].size, index) for index, p in enumerate(parts)])
    order = np.lexsort((columns["row"], file, columns["batch"], columns["time"]))
    if files.time_column == "t":
        order = np.lexsort((columns["row"], file))
    user, item, time = columns["user"][order], columns["item"][order], columns["time"][order]
    keys = np.unique(user * files.num_items + item)
    users = np.unique(user)
    seen_keys = np.zeros(keys.size, dtype=bool)
    seen_users = np.zeros(users.size, dtype=bool)
    task = _seen_before_task.options(num_cpus=cpus)
    keys_ref, users_ref = ray.put(keys), ray.put(users)
    for _, (keys_found, users_found) in per_file(task, files, start, keys_ref, users_ref):
        seen_keys |= keys_found
        seen_users |= users_found
    return PeriodEdges(user, item, time, seen_users[np.searchsorted(users, user)],
                       seen_keys[np.searchsorted(keys, user * files.num_items + item)])


def _calendar_period(files: EdgeFiles, holdout_days: float,
                     cpus: float) -> tuple[float, PeriodEdges, str]:
    """An ingested snapshot's last `holdout_days` days, ending at its latest interaction, as
    `holdout_window` finds them: among the pairs it holds (each one's first interaction), so
    a window that ends on a repeated pair is moved back to the latest one it holds."""
    earliest, latest = _span(files, cpus)
    while True:
        start = days_before(latest, holdout_days)
        if earliest > start:
            raise TrainingError(f"--holdout-days {holdout_days:g} covers every interaction "
                                "ingested so far: nothing is left to train on; lower it")
        period = period_edges(files, start, cpus)
        kept = kept_edges(period)
        held = float(period.time[kept].max()) if kept.size else start
        if held >= latest:
            return start, period, f"the last {holdout_days:g} days"
        latest = held  # the held pairs end earlier: once more from there


def held_out_split(files: EdgeFiles, degrees: np.ndarray, holdout_days: float = 7.0,
                   holdout: float = 0.1, seed: int = 0, max_eval_users: int = 0,
                   cpus: float = 1.0) -> HeldOut:
    """The held-out period of the snapshot `files` hold: its last `holdout_days` days when
    ingested, else the last `holdout` of a replayed timeline; `degrees`: every node's
    (`count_degrees`), whose non-zero entities are the pools ranked over."""
    dedup = files.time_column == "timestamp"
    if dedup:
        start, period, window = _calendar_period(files, holdout_days, cpus)
    else:
        start = max(files.files[0].upto - holdout, 1e-9)
        window = f"({start:.3f}, {files.files[0].upto}]"
        period = period_edges(files, start, cpus)
    evaluated, trained, val_users, test_users = decide_period(period, seed, max_eval_users,
                                                              dedup)
    if evaluated.size == 0 or test_users.size == 0:
        raise TrainingError(f"no held-out edges of known users in {window}: "
                            + ("raise --holdout-days or ingest more data" if dedup
                               else "raise --holdout or advance the snapshot"))
    say_if_no_validation(val_users.size, window)
    new = ~period.user_seen_before
    return HeldOut(
        start=start, window=window,
        extra_user=period.user[trained], extra_item=period.item[trained],
        eval_user=torch.from_numpy(period.user[evaluated]),
        eval_item=torch.from_numpy(period.item[evaluated]),
        val_users=torch.from_numpy(val_users), test_users=torch.from_numpy(test_users),
        new_users=torch.from_numpy(np.unique(period.user[new])),
        user_pool=torch.from_numpy(np.flatnonzero(degrees[:files.num_users] > 0)),
        item_pool=torch.from_numpy(np.flatnonzero(degrees[files.num_users:] > 0)))
