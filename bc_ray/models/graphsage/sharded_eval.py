"""Scoring a candidate M_k whose ID tables and graph are sharded across the training workers.

The one-table gate embeds the whole graph in one process (`embed`: the full-graph forward) and
ranks every item for each held-out user. Here the workers embed every node together, layer by
layer (`sharded_layerwise`): each computes layer l of the nodes it owns from layer l-1 of their
neighbours, which their owners send, so no computation reaches past one hop and a worker holds
two layers of its own rows at a time, whatever the degrees. A run's neighbour lists are the
worker's own CSR rows (`OneHop`: no sampler's exchanges) and only its neighbours' rows travel.
Nodes go in runs of bounded neighbours, and a hub with more (an item with 1M users at 100M
edges) in slices of its neighbours, summed as they come (`HubSum`). The last layer is computed
only for the rows scoring reads (`Embedded`: every item, the held-out users, the alignment
sample), a tenth of a worker's rows on a graph of ten users per item: no worker holds its
whole z. Ranking then moves only what it needs: every item's embedding to every worker, and
each held-out user's embedding and training items (from its owner's CSR rows) to the worker
that ranks it; the workers rank equal shares of the users with the same code the one-table
gate runs (`recall_sum`: a block of items at a time) and add up their recalls. Every worker
calls these functions together: their steps are collectives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from bc_ray.core.evaluation import recall_sum
from bc_ray.core.graph import Adjacency
from bc_ray.core.row_shards import ShardedRows, deal, group_size, owners_rank, to_all
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.sampler import draw_neighbours
from bc_ray.models.graphsage.sharded_task import LocalRows, ShardedLinkPredictionTask, agreed

EVAL_CHUNK = 4_096
EVAL_ENDS = 1 << 18  # neighbours per run: a run of popular items holds theirs, not the graph's


@dataclass(frozen=True)
class Embedded:
    """z of some of this worker's rows: `rows` (local row indices, ascending: its users, then
    its items) and their embeddings, one per row."""

    rows: torch.Tensor
    z: torch.Tensor

    @classmethod
    def whole(cls, z: torch.Tensor) -> Embedded:
        return cls(torch.arange(z.shape[0]), z)

    def of(self, local: torch.Tensor) -> torch.Tensor:
        """The embeddings of rows `local` (local indices), each of which must be embedded."""
        position = torch.searchsorted(self.rows, local).clamp(max=max(self.rows.numel() - 1, 0))
        if local.numel() and (self.rows.numel() == 0 or bool((self.rows[position] != local).any())):
            raise ValueError("scoring read a row it did not embed: pass it in `rows`")
        return self.z[position]


@dataclass(frozen=True)
class Run:
    """A run of a worker's nodes whose layer is computed together, or (`ends`) a slice of one
    hub's neighbours: a hub with more than a run's neighbours is aggregated over several runs,
    a slice at a time, and its row written at the last (`HubSum`)."""

    nodes: torch.Tensor
    ends: tuple[int, int] | None = None  # offsets within the hub's row
    degree: int = 0  # the hub's

    @property
    def last(self) -> bool:
        return self.ends is None or self.ends[1] == self.degree


def _chunks(nodes: torch.Tensor, crow: np.ndarray, chunk: int, max_ends: int,
            split_hubs: bool = False) -> list[Run]:
    """`nodes` (this worker's, in its rows' order: `crow`) in runs of at most `chunk` nodes
    and `max_ends` neighbours; a hub with more is a run alone, or with `split_hubs` one run per
    `max_ends` of its neighbours. Padded with empty runs to as many as the worker with the most
    has (a layer's run gathers its neighbours' rows: a collective)."""
    runs, start = [], 0
    while start < nodes.numel():
        within = int(np.searchsorted(crow, crow[start] + max_ends, side="right")) - 1
        stop = max(start + 1, min(start + chunk, within, nodes.numel()))
        degree = int(crow[start + 1] - crow[start])
        if split_hubs and stop == start + 1 and degree > max_ends:
            runs += [Run(nodes[start:stop], (lo, min(lo + max_ends, degree)), degree)
                     for lo in range(0, degree, max_ends)]
        else:
            runs.append(Run(nodes[start:stop]))
        start = stop
    return runs + [Run(nodes[:0])] * (agreed(len(runs), "max") - len(runs))


@dataclass
class HubSum:
    """A hub's neighbours aggregated a slice at a time: their sum (mean, sum) or element-wise
    max, as `Adjacency.aggregate` and `aggregate_max` take them over the whole row."""

    reduce: str
    value: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        part = x.amax(0, keepdim=True) if self.reduce == "max" else x.sum(0, keepdim=True)
        if self.value is None:
            self.value = part
        elif self.reduce == "max":
            torch.maximum(self.value, part, out=self.value)
        else:
            self.value += part

    def result(self, degree: int) -> torch.Tensor:
        value, self.value = self.value, None
        return value / degree if self.reduce == "mean" else value


@torch.no_grad()
def sharded_layerwise(task: ShardedLinkPredictionTask, model: EmbeddingModel,
                      rows: torch.Tensor | None = None, chunk: int = EVAL_CHUNK,
                      max_ends: int = EVAL_ENDS) -> torch.Tensor:
    """z of the nodes this worker owns (its users, then its items: `RowOwners.nodes_of`), as
    the full-graph forward computes them: of every one, or of its local `rows` (ascending),
    whose last layer alone is computed. `model`: a `sharded_model`, whose ID rows the task's
    owners hold, or a whole model with its own tables (M_{k-1}, mapped: the gate's parent).
    No run gathers more than `max_ends` rows of the layer before: a hub's are aggregated in
    slices (`HubSum`) where the layer's aggregation allows it (`EmbeddingModel.aggregation`)."""
    owners = task.rows.owners
    model.eval()  # the trainer sets train() again at its next epoch
    own_tables = len(model.ids) > 0
    rank = owners_rank()
    nodes = owners.nodes_of(rank)
    ids = task.ids.weight.detach()
    # Each layer is written run by run into one matrix (no list of runs to join): a worker
    # holds the layer it reads and the one it writes, and one run's rows. A run's nodes are
    # the worker's own: their inputs, rows and neighbour lists are read here, and only their
    # neighbours' rows are fetched from the other workers.
    h = _by_runs(_chunks(nodes, task.rows.crow, chunk, max_ends), lambda run: model.inputs(
        task.graph, run.nodes, None if own_tables else ids[owners.local_row(run.nodes, rank)]))
    last = model.spec.num_layers - 1
    if rows is not None and last < 0:
        return h[rows]
    reduce = model.aggregation()
    runs = _chunks(nodes, task.rows.crow, chunk, max_ends, split_hubs=reduce is not None)
    for index in range(model.spec.num_layers):
        if index == last and rows is not None:  # the rows read by scoring, every worker's
            degrees = np.diff(task.rows.crow)[rows.numpy()]  # runs as many as the others'
            runs = _chunks(nodes[rows], np.concatenate([[0], np.cumsum(degrees)]), chunk,
                           max_ends, split_hubs=reduce is not None)
        previous = ShardedRows(owners, h)
        hub = HubSum(reduce or "")

        def layer(run: Run, index: int = index, previous: ShardedRows = previous,
                  hub: HubSum = hub) -> torch.Tensor | None:
            if run.ends is not None:
                return _hub_slice(task, model, index, run, previous, hub)
            local = owners.local_row(run.nodes, rank)
            hop = OneHop.of(task.rows, local)
            return model.layer(index, previous.gather(hop.sources), hop.adjacency,
                               previous.rows[local])

        h = _by_runs(runs, layer)
    return h


@dataclass(frozen=True)
class OneHop:
    """A run's neighbourhood, read from this worker's own CSR rows: its neighbours each once
    (`sources`) and the run's rows over them (`adjacency`)."""

    sources: torch.Tensor
    adjacency: Adjacency

    @classmethod
    def of(cls, local_rows: LocalRows, local: torch.Tensor) -> OneHop:
        """The neighbourhood of this worker's rows `local` (local indices). The sources are
        sorted by owner, then id, so `ShardedRows.gather` sends them and receives their rows
        without reordering either; a row's neighbours are all of the other kind (a user's are
        items), whose owners' ranges ascend with their ids, so each row's columns still ascend
        (the order `Adjacency` sums them in). Rows without neighbours have no sources."""
        crow = torch.from_numpy(local_rows.crow)
        _, ends = draw_neighbours(crow, torch.from_numpy(local_rows.neighbours), local, -1, None)
        owners = local_rows.owners
        num_nodes = owners.num_users + owners.num_items
        keys, columns = torch.unique(owners.owner(ends) * num_nodes + ends, return_inverse=True)
        offsets = torch.zeros(local.numel() + 1, dtype=torch.long)
        torch.cumsum(crow[local + 1] - crow[local], 0, out=offsets[1:])
        return cls(keys.remainder_(num_nodes), Adjacency.from_csr(offsets, columns, local.numel(),
                                                                  keys.numel()))


def _hub_slice(task: ShardedLinkPredictionTask, model: EmbeddingModel, index: int, run: Run,
               previous: ShardedRows, hub: HubSum) -> torch.Tensor | None:
    """One slice of a hub's neighbours added to its aggregate; at the last slice, its row of
    layer `index`. The same collectives as another worker's run at the same place: the gather
    of the slice's rows."""
    local = int(task.rows.owners.local_row(run.nodes, owners_rank())[0])
    first = int(task.rows.crow[local])
    lo, hi = run.ends
    hub.add(previous.gather(torch.from_numpy(task.rows.neighbours[first + lo:first + hi])))
    if not run.last:
        return None
    return model.combine(index, hub.result(run.degree), previous.rows[local:local + 1])


def _by_runs(runs: list[Run], compute) -> torch.Tensor:
    """`compute(run)` of every run, stacked in a matrix allocated once the first run says its
    width (every worker runs as many runs, the empty ones too: they are collectives); a hub's
    slices but the last write nothing (None)."""
    rows = sum(run.nodes.numel() for run in runs if run.last)
    out = None
    start = 0
    for run in runs:
        values = compute(run)
        if values is None:
            continue
        if out is None:
            out = values.new_empty((rows, *values.shape[1:]))
        out[start:start + values.shape[0]] = values
        start += values.shape[0]
    if out is None:
        raise ValueError("no runs to compute: every worker has at least one, if empty")
    return out


def sharded_recall(task: ShardedLinkPredictionTask, z: Embedded, eval_user: torch.Tensor,
                   eval_item: torch.Tensor, k: int = 50, users: torch.Tensor | None = None,
                   item_pool: torch.Tensor | None = None) -> float:
    """Recall@k of the held-out (user, item) pairs (entity indices, the same on every worker)
    over `users` (default: all of them; the gate takes the validation half), ranking every item
    of `item_pool` with each user's training items excluded, as `recall_at_k` does; `z`: this
    worker's rows as embedded (`sharded_layerwise`), its items and held-out users at least.
    Every worker ranks an equal share of the users (held-out user i by worker i mod W, its row
    and training items sent by its owner) against every item's row (`I d` floats on each), and
    the recalls are summed across workers: each ranks 1/W of the users, where rank 0 ranked
    them all while the others waited. The value on every worker."""
    if users is not None:
        kept = torch.isin(eval_user, users)
        eval_user, eval_item = eval_user[kept], eval_item[kept]
    owners = task.rows.owners
    rank, world = owners_rank(), group_size()
    first_user, last_user = owners.users_of(rank)
    z_items = to_all(z.of(torch.arange(last_user - first_user, owners.num_rows(rank))))
    held_out = torch.unique(eval_user)
    mine = held_out[(held_out >= first_user) & (held_out < last_user)]
    ranker = torch.searchsorted(held_out, mine) % world
    ranked, z_users = deal(ranker, mine, z.of(mine - first_user))  # ascending: owners' order
    known_user, known_item = task.rows.user_edges_of(mine)
    known_user, known_item = deal(ranker[torch.searchsorted(mine, known_user)], known_user,
                                  known_item)
    scored = torch.isin(eval_user, ranked)
    total, count = recall_sum(z_users, z_items, torch.searchsorted(ranked, eval_user[scored]),
                              eval_item[scored], torch.searchsorted(ranked, known_user),
                              known_item, item_pool=item_pool, k=k)
    result = torch.tensor([total, count], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(result)
    return float(result[0] / result[1]) if result[1] else float("nan")
