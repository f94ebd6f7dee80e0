"""The paper's train/evaluation split of one period (t_k, t_{k+1}].

Training edges are E_k plus, for users first seen in the period, all but their last interaction
(so new users have some history; a new user with a single interaction trains on it). Evaluation
edges are the period's edges of users that existed at t_k plus each multi-interaction new user's
last edge. Evaluated users are split at random into a validation half (model selection) and a test
half (reported), so selection never peeks at the numbers it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import edges_between, edges_until, new_entities


@dataclass
class PeriodSplit:
    start: float
    end: float
    train_edges: pl.DataFrame
    eval_edges: pl.DataFrame
    graph: GraphTensors
    item_pool: torch.Tensor  # items that exist by `end`: the candidates to rank
    user_pool: torch.Tensor  # users that exist by `end`
    val_users: torch.Tensor
    test_users: torch.Tensor
    # Users first seen in the period. Only those with two or more of its edges are tested (the
    # last one), so a recall of "new users" is over those; a graph model embeds them from their
    # earlier edges; a vector-per-entity model never learnt them (the benchmark's BPR-MF folds
    # them in from those edges: `core.baselines.fold_in_users`).
    new_users: torch.Tensor

    def tensors(self, edges: pl.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(edges["user_idx"].to_numpy().astype(np.int64)),
                torch.from_numpy(edges["item_idx"].to_numpy().astype(np.int64)))

    @property
    def node_pool(self) -> torch.Tensor:
        """Global node ids (users then items) of the entities that exist by `end`."""
        return torch.cat([self.user_pool, self.item_pool + self.graph.num_users])

    @property
    def train_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.train_edges)

    @property
    def eval_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.eval_edges)


def period_split(snapshot: GraphSnapshot, start: float, end: float, seed: int = 0,
                 max_eval_users: int = 0) -> PeriodSplit:
    """Train on everything before `start` and the new users' edges but their last; evaluate on
    the rest of start..end, by users split in half (validation, test). `max_eval_users` (0:
    all): at most that many of the evaluated users, drawn by `seed`."""
    before = edges_until(snapshot, start)
    period = edges_between(snapshot, start, end).with_row_index("_pos")
    first_t = snapshot.users["first_t"]
    new_user = pl.Series(first_t.to_numpy()[period["user_idx"].to_numpy()] > start)
    period = period.with_columns(new_user=new_user)
    last_of_new = (
        period.filter(pl.col("new_user"))
        .group_by("user_idx").agg(last=pl.col("_pos").max(), count=pl.len())
        .filter(pl.col("count") > 1)["last"]
    )
    to_eval = (~period["new_user"]) | period["_pos"].is_in(last_of_new)
    eval_edges = period.filter(to_eval).drop("_pos", "new_user")
    train_edges = pl.concat([before, period.filter(~to_eval).drop("_pos", "new_user")])

    # "Now" is the training time: an entity first seen later has age 0, like one never seen, so
    # age-aware mixing cannot learn which items are about to appear.
    graph = build_graph(snapshot, train_edges, now=start)
    item_pool = torch.from_numpy(np.flatnonzero(snapshot.items["first_t"].to_numpy() <= end))
    user_pool = torch.from_numpy(np.flatnonzero(first_t.to_numpy() <= end))
    eval_users = np.unique(eval_edges["user_idx"].to_numpy())
    rng = np.random.default_rng(seed)
    if 0 < max_eval_users < eval_users.size:
        eval_users = np.sort(rng.choice(eval_users, max_eval_users, replace=False))
    in_val = rng.random(eval_users.size) < 0.5
    return PeriodSplit(
        start=start, end=end, train_edges=train_edges, eval_edges=eval_edges, graph=graph,
        item_pool=item_pool, user_pool=user_pool,
        val_users=torch.from_numpy(eval_users[in_val]),
        test_users=torch.from_numpy(eval_users[~in_val]),
        new_users=torch.from_numpy(new_entities(snapshot, "user", start, end).to_numpy().copy()))
