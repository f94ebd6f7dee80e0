"""Rows of per-node tables split across training workers, TorchRec's row-wise sharding done with
torch.distributed's own all-to-all (gloo on CPU, NCCL on GPUs).

Worker r owns a contiguous range of users and a contiguous range of items (`RowOwners`), and
holds only those rows of a table: the ID embeddings and their optimizer state (`ShardedEmbedding`),
or constant rows such as the alignment targets (`ShardedRows`). A step looks rows up by global
node id (users 0..U-1, items U..): the ids go to their owners, which send their rows back. After
the backward pass the gradients of those rows go back the same way, and each owner updates its
rows with lazy Adam (`torch.optim.SparseAdam`) or row-wise Adagrad, the mean over workers as DDP
would take it.

Every worker must make the same calls in the same order: each is a collective. TorchRec itself
does not plan row-wise sharding for CPU (scale-notes: only a hand-built plan works there, with a
pinned FBGEMM build), so this module keeps to torch.distributed. The exchange runs on CPU
tensors (gloo); NCCL would need the bounds, counts and rows on the GPU, which it does not do yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bc_ray.core.node_rows import balanced_bounds
from bc_ray.core.sparse_rows import check_id_optimizer, id_state_floats, id_table_optimizer
from bc_ray.exceptions import ConfigError


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def group_size() -> int:
    """Workers in the group the rows are split over (1 without a group)."""
    return _world()[1]


def owners_rank() -> int:
    """This worker's rank in the group the rows are split over (0 without a group)."""
    return _world()[0]


@dataclass(frozen=True)
class RowOwners:
    """Which worker owns each node: worker r owns users user_bounds[r]:user_bounds[r+1] and
    items item_bounds[r]:item_bounds[r+1] (so every worker gets users and items alike, whose
    degrees differ tenfold)."""

    num_users: int
    user_bounds: np.ndarray  # int64, W + 1
    item_bounds: np.ndarray  # int64, W + 1

    @classmethod
    def balanced(cls, user_degrees: np.ndarray, item_degrees: np.ndarray, workers: int,
                 row_bytes: int = 0, user_uniform: bool = True) -> RowOwners:
        """Users cut as the triple sampler weighs them, so that equal batches per worker, each
        drawn from its own users, draw the users the one-table loop would: equal counts of users
        with edges (`user_uniform`: each user equally likely) or equal edges (each edge
        equally likely). Items then cut so that each worker's whole share is about equal
        memory: a CSR row holds 8 bytes per neighbour and its pointer, and its rows of the
        sharded tables `row_bytes` more. Older users hold more edges, so the worker with the
        first users takes fewer items (at 100M over 2 workers, cutting the items alone into
        equal shares left the first worker 1.35x the mean of the edge ends, 1.25x now)."""
        if workers < 1:
            raise ConfigError(f"row owners need at least one worker, got {workers}")
        user_degrees = np.asarray(user_degrees, dtype=np.int64)
        users = (balanced_bounds((user_degrees > 0).astype(np.int64), workers, 0) if user_uniform
                 else balanced_bounds(user_degrees, workers, 0))
        node_cost = 1 + -(-row_bytes // 8)  # in neighbours' worth
        user_cost = np.concatenate([[0], np.cumsum(user_degrees + node_cost)])
        return cls(int(user_degrees.size), users,
                   balanced_bounds(item_degrees, workers, node_cost,
                                   base=np.diff(user_cost[users])))

    @property
    def workers(self) -> int:
        return len(self.user_bounds) - 1

    @property
    def num_items(self) -> int:
        return int(self.item_bounds[-1])

    def users_of(self, rank: int) -> tuple[int, int]:
        return int(self.user_bounds[rank]), int(self.user_bounds[rank + 1])

    def items_of(self, rank: int) -> tuple[int, int]:
        return int(self.item_bounds[rank]), int(self.item_bounds[rank + 1])

    def num_rows(self, rank: int) -> int:
        (a, b), (c, d) = self.users_of(rank), self.items_of(rank)
        return (b - a) + (d - c)

    def spans(self, rank: int) -> list[tuple[str, int, int, int]]:
        """(entity, first index, last index, offset in the worker's rows): its users, then its
        items, as entity indices (per-entity tables such as a model's ID tables)."""
        (a, b), (c, d) = self.users_of(rank), self.items_of(rank)
        return [("user", a, b, 0), ("item", c, d, b - a)]

    def nodes_of(self, rank: int) -> torch.Tensor:
        """The global ids of the nodes `rank` owns, in its rows' order."""
        (a, b), (c, d) = self.users_of(rank), self.items_of(rank)
        return torch.cat([torch.arange(a, b), torch.arange(c, d) + self.num_users])

    def owner(self, nodes: torch.Tensor) -> torch.Tensor:
        """The worker of each global node id."""
        # Copies: bounds from the object store are read-only, which torch.from_numpy warns of.
        users = torch.tensor(self.user_bounds)
        items = torch.tensor(self.item_bounds) + self.num_users
        is_user = nodes < self.num_users
        return torch.where(is_user, torch.searchsorted(users, nodes, right=True),
                           torch.searchsorted(items, nodes, right=True)) - 1

    def local_row(self, nodes: torch.Tensor, rank: int) -> torch.Tensor:
        """The row of each node (all owned by `rank`) in that worker's block: its users, then
        its items."""
        (first_user, last_user), (first_item, _) = self.users_of(rank), self.items_of(rank)
        return torch.where(nodes < self.num_users, nodes - first_user,
                           nodes - self.num_users - first_item + (last_user - first_user))

    def check(self, num_users: int, num_items: int) -> None:
        if (num_users, num_items) != (self.num_users, self.num_items):
            raise ConfigError(f"row owners cover {self.num_users} users and {self.num_items} "
                              f"items, the graph has {num_users} and {num_items}")


def to_all(values: torch.Tensor) -> torch.Tensor:
    """Every worker's `values` on every worker, in rank order (an all-gather of unequal
    counts): each worker's rows broadcast into their slice of one output, so a worker holds
    the output and nothing more."""
    rank, world = _world()
    if world == 1:
        return values
    counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([values.shape[0]]))
    sizes = [int(count) for count in counts]
    out = values.new_empty((sum(sizes), *values.shape[1:]))
    first = 0
    for sender, size in enumerate(sizes):
        if size:  # every worker knows the sizes: all skip the same broadcasts
            part = out[first:first + size]
            if sender == rank:
                part.copy_(values)
            dist.broadcast(part, src=sender)
        first += size
    return out


def deal(destination: torch.Tensor, *columns: torch.Tensor) -> list[torch.Tensor]:
    """Each row of `columns` sent to worker `destination[row]`: the rows every worker sent this
    one, grouped by sender in rank order (each sender's in their order here), per column."""
    order, splits = _by_destination(destination)
    received = None
    dealt = []
    for column in columns:
        rows, received = exchange(column if order is None else column[order], splits, received)
        dealt.append(rows)
    return dealt


def _by_destination(destination: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
    """(the order that groups rows by their destination worker, None where they are grouped
    already; how many rows go to each worker)."""
    grouped = bool((destination[1:] >= destination[:-1]).all())
    order = None if grouped else torch.argsort(destination, stable=True)
    return order, torch.bincount(destination, minlength=_world()[1]).tolist()


def exchange(values: torch.Tensor, splits: list[int],
             received_splits: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """All-to-all of `values` (rows grouped by destination worker, `splits[q]` rows for worker
    q): (the rows every worker sent this one, grouped by sender; how many from each). A caller
    that knows what it will receive (a reply to its own request) passes `received_splits` and
    saves the exchange of counts."""
    _, world = _world()
    if world == 1:
        return values, list(splits)
    if received_splits is None:
        counts = torch.tensor(splits, dtype=torch.long)
        incoming = torch.empty_like(counts)
        dist.all_to_all_single(incoming, counts)
        received_splits = incoming.tolist()
    out = values.new_empty((sum(received_splits), *values.shape[1:]))
    dist.all_to_all_single(out, values.contiguous(), output_split_sizes=received_splits,
                           input_split_sizes=list(splits))
    return out, received_splits


@dataclass
class Request:
    """Ids sent to their owners: `order` puts the caller's ids in owner order, `splits` counts
    them by owner; the owner got `served` (its local rows) in `served_splits` by sender.
    `in_order`: the caller's ids were in owner order already (`order` is the identity), so
    rows go back and forth without being reordered."""

    order: torch.Tensor
    splits: list[int]
    served: torch.Tensor
    served_splits: list[int]
    in_order: bool = False

    def reply(self, rows: torch.Tensor) -> torch.Tensor:
        """Owner side: send back `rows` (one per served id); caller side: the rows of the ids
        it asked for, in its own order (on one worker, in order: `rows` itself, not a copy)."""
        answered, _ = exchange(rows, self.served_splits, self.splits)
        if self.in_order:
            return answered
        out = answered.new_empty(answered.shape)
        out[self.order] = answered
        return out

    def push(self, rows: torch.Tensor) -> torch.Tensor:
        """Caller side: send `rows` (one per id asked, in the caller's order) to the owners;
        owner side: what every worker sent for each served id, in `served` order (on one
        worker, in order: `rows` itself, not a copy)."""
        received, _ = exchange(rows if self.in_order else rows[self.order], self.splits,
                               self.served_splits)
        return received


def request(owners: RowOwners, nodes: torch.Tensor) -> Request:
    """Send each of `nodes` (global ids) to its owner: a collective every worker calls."""
    rank, world = _world()
    if owners.workers != world:
        raise ConfigError(f"the rows are split over {owners.workers} workers, the group has "
                          f"{world}")
    order, splits = _by_destination(owners.owner(nodes))
    in_order = order is None
    if in_order:
        order = torch.arange(nodes.numel())
    received, served_splits = exchange(nodes if in_order else nodes[order], splits)
    return Request(order, splits, owners.local_row(received, rank), served_splits, in_order)


def _check_rows(owners: RowOwners, rows: torch.Tensor) -> None:
    rank, _ = _world()
    if rows.shape[0] != owners.num_rows(rank):
        raise ConfigError(f"worker {rank} owns {owners.num_rows(rank)} rows, got {rows.shape[0]}")


class ShardedRows:
    """A constant table (one row per node) of which this worker holds its own rows."""

    def __init__(self, owners: RowOwners, rows: torch.Tensor) -> None:
        _check_rows(owners, rows)
        self.owners, self.rows = owners, rows

    def gather(self, nodes: torch.Tensor) -> torch.Tensor:
        """The rows of `nodes` (global ids), wherever they live."""
        asked = request(self.owners, nodes)
        return asked.reply(self.rows.index_select(0, asked.served))


class ShardedEmbedding(nn.Module):
    """A trainable ID table (users then items) sharded by `owners`: this worker's rows are a
    parameter with its own optimizer (`id_table_optimizer`), so a worker holds 3 x 4 d bytes
    per owned row with Adam, 4 d + 4 with row-wise Adagrad, not per node. `lookup` then
    `apply_gradients` once per step, on every worker."""

    def __init__(self, owners: RowOwners, rows: torch.Tensor, lr: float,
                 trainable: torch.Tensor | None = None, optimizer: str = "adam") -> None:
        super().__init__()
        _check_rows(owners, rows)
        self.owners = owners
        self.weight = nn.Parameter(rows)
        # 0 for rows that must stay as they are (entities never seen in training).
        self.register_buffer("trainable", trainable if trainable is not None
                             else torch.ones(rows.shape[0], 1), persistent=False)
        self.optimizer_name = optimizer
        self.optimizer = id_table_optimizer(optimizer, [self.weight], lr)
        self._pending: tuple[Request, torch.Tensor] | None = None

    def lookup(self, nodes: torch.Tensor) -> torch.Tensor:
        """The rows of `nodes`, as a leaf whose gradient `apply_gradients` sends to the owners."""
        if self._pending is not None:
            raise RuntimeError("a second lookup before apply_gradients: one per step")
        asked = request(self.owners, nodes)
        rows = asked.reply(self.weight.detach().index_select(0, asked.served)).requires_grad_(True)
        self._pending = (asked, rows)
        return rows

    @torch.no_grad()
    def apply_gradients(self) -> None:
        """Owners sum what every worker sent for their rows, average over workers (what DDP
        does with dense gradients) and step the rows touched."""
        if self._pending is None:
            raise RuntimeError("apply_gradients without a lookup in this step")
        asked, rows = self._pending
        self._pending = None
        _, world = _world()
        grad = rows.grad if rows.grad is not None else torch.zeros_like(rows)
        received = asked.push(grad)
        local = asked.served
        values = received * self.trainable[local] / world
        self.weight.grad = torch.sparse_coo_tensor(local.unsqueeze(0), values,
                                                   self.weight.shape).coalesce()
        self.optimizer.step()
        self.weight.grad = None

    def checkpoint(self) -> dict:
        """This worker's rows and their optimizer state, to resume from."""
        return {"weight": self.weight.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "id_optimizer": self.optimizer_name}

    def restore(self, saved: dict) -> None:
        check_id_optimizer(saved.get("id_optimizer", "adam"), self.optimizer_name)
        with torch.no_grad():
            self.weight.copy_(saved["weight"])
        self.optimizer.load_state_dict(saved["optimizer"])

    @property
    def nbytes(self) -> int:
        """This worker's rows and their optimizer state."""
        rows, dim = self.weight.shape
        return (rows * dim + rows * id_state_floats(self.optimizer_name, dim)) \
            * self.weight.element_size()
