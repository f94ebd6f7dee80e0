"""Users' interaction histories as sequences, from a graph's edges: what the sequence family reads.

A history is every edge of a user ordered by its time (`GraphTensors.edge_t`; ties, and graphs
without times, keep the edges' order), kept as CSR over plain numpy arrays so that the refresh's
inputs (`SequenceInputs`) pickle small and cheap into Ray's object store: each user's last
`max_len` items, the entities' feature bags and first-seen times, and `now`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bc_ray.core.graph import FeatureBag, GraphTensors, shared_tensor


@dataclass(frozen=True)
class Histories:
    """Items of user u, oldest first: items[ptr[u]:ptr[u + 1]]."""

    ptr: np.ndarray  # (num_users + 1,) int64
    items: np.ndarray  # int64 item idx

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    def of(self, user: int) -> np.ndarray:
        return self.items[self.ptr[user]:self.ptr[user + 1]]

    def recent(self, max_len: int) -> Histories:
        """Each user's last `max_len` items (still oldest first)."""
        lengths = np.minimum(self.lengths, max_len)
        start = self.ptr[1:] - lengths
        return Histories(_ptr(lengths), self.items[_ranges(start, lengths)])

    def rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(padded, lengths) of `users`: a (len(users), max length) matrix, rows padded with 0."""
        lengths = self.lengths[users]
        padded = np.zeros((users.size, int(lengths.max(initial=0))), dtype=np.int64)
        owner = np.repeat(np.arange(users.size), lengths)
        padded[owner, _ranges(np.zeros_like(lengths), lengths)] = \
            self.items[_ranges(self.ptr[users], lengths)]
        return padded, lengths


def user_histories(graph: GraphTensors) -> Histories:
    """Every user's items in time order (ties by edge order)."""
    user = graph.edge_user.cpu().numpy()
    items = graph.edge_item.cpu().numpy()
    if graph.edge_t is None:
        order = np.argsort(user, kind="stable")
    else:
        order = np.lexsort((graph.edge_t.cpu().numpy(), user))  # stable: ties keep edge order
    return Histories(_ptr(np.bincount(user, minlength=graph.num_users)), items[order])


def _ptr(lengths: np.ndarray) -> np.ndarray:
    ptr = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr


def _ranges(start: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """start[r], start[r] + 1, ..., start[r] + lengths[r] - 1 for every r, concatenated."""
    owner = np.repeat(np.arange(lengths.size), lengths)
    within = np.arange(int(lengths.sum())) - (np.cumsum(lengths) - lengths)[owner]
    return np.asarray(start, dtype=np.int64)[owner] + within


@dataclass(frozen=True)
class Entities:
    """What an entity's input representation reads: its feature bags and first-seen time, and
    the time it is embedded at (the age-aware mixing's `now`)."""

    features: dict[str, FeatureBag]
    first_t: torch.Tensor
    now: float

    @classmethod
    def of(cls, graph: GraphTensors, entity: str) -> Entities:
        first_t = graph.user_first_t if entity == "user" else graph.item_first_t
        return cls(graph.features(entity), first_t, graph.now)


@dataclass(frozen=True)
class SequenceInputs:
    """Everything embedding any user or item needs, in numpy (see the module docstring)."""

    num_users: int
    num_items: int
    recent: Histories
    user_features: dict[str, tuple[np.ndarray, np.ndarray]]  # field -> (values, lengths)
    item_features: dict[str, tuple[np.ndarray, np.ndarray]]
    user_first_t: np.ndarray
    item_first_t: np.ndarray
    now: float

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def entities(self, entity: str) -> Entities:
        features = self.user_features if entity == "user" else self.item_features
        first_t = self.user_first_t if entity == "user" else self.item_first_t
        bags = {name: FeatureBag(shared_tensor(values), shared_tensor(lengths))
                for name, (values, lengths) in features.items()}
        return Entities(bags, shared_tensor(first_t), self.now)


def sequence_inputs(graph: GraphTensors, max_len: int) -> SequenceInputs:
    def bags(features: dict[str, FeatureBag]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: (bag.values.cpu().numpy(), bag.lengths.cpu().numpy())
                for name, bag in features.items()}

    return SequenceInputs(
        graph.num_users, graph.num_items, user_histories(graph).recent(max_len),
        bags(graph.user_features), bags(graph.item_features),
        graph.user_first_t.cpu().numpy(), graph.item_first_t.cpu().numpy(), float(graph.now))


def users_holding(recent: Histories, items: np.ndarray) -> np.ndarray:
    """Users whose recent items include any of `items` (item idx)."""
    hit = np.isin(recent.items, items)
    owner = np.repeat(np.arange(recent.lengths.size), recent.lengths)
    return np.unique(owner[hit])
