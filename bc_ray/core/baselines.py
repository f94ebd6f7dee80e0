"""Two simple recommenders a trained embedding model must beat before its numbers mean anything.

- **Popularity**: every user gets the items with the most training interactions (that the user
  has not seen). As embeddings: users are a constant 1, items their training degree, so the
  same Recall@K code ranks them.
- **BPR-MF**: graph-free matrix factorisation, one free vector per user and item and a bias per
  item (score <u, i> + b_i), trained with the same BPR loss, triples, regulariser and early
  stopping as the graph models, its regularisation strength chosen on validation. A user it has
  no edges of is ranked by the biases (learnt popularity). A GNN that loses to it is not using
  the graph.

Neither has a backward transform: they are reference rows of the intended task only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bc_ray.core.losses import bpr_loss, embedding_l2
from bc_ray.core.triples import TripleSampler
from bc_ray.exceptions import ConfigError

# Validation Recall@K of a (z_user, z_item) pair: what BPR-MF is stopped early and tuned on.
Validate = Callable[[torch.Tensor, torch.Tensor], float]


def popularity_embeddings(edge_item: torch.Tensor, num_users: int,
                          num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """<z_u, z_i> = the item's number of training interactions, for every user."""
    degree = torch.bincount(edge_item, minlength=num_items).to(torch.float32)
    return torch.ones(num_users, 1), degree[:, None]


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64
    lr: float = 5e-3
    # Embedding regularisation strengths tried; validation Recall@K picks one.
    regs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    batch_size: int = 4096
    epochs: int = 300
    eval_every: int = 2
    patience: int = 6  # evaluations without a better validation score before stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.batch_size < 1 or self.epochs < 1 or self.eval_every < 1:
            raise ConfigError("BPR-MF dim, batch_size, epochs and eval_every must be >= 1")
        if self.lr <= 0 or not self.regs or min(self.regs) < 0:
            raise ConfigError("BPR-MF needs lr > 0 and at least one regularisation >= 0")


@dataclass
class MFResult:
    z_user: torch.Tensor
    z_item: torch.Tensor
    reg: float
    validation: float  # the selected state's validation score
    selected_epoch: int
    stopped_epoch: int


def train_bpr_mf(edge_user: torch.Tensor, edge_item: torch.Tensor, num_users: int,
                 num_items: int, validate: Validate, config: MFConfig = MFConfig(),
                 item_pool: torch.Tensor | None = None) -> MFResult:
    """The best of one early-stopped run per regularisation strength, by validation score."""
    best: MFResult | None = None
    for reg in config.regs:
        result = _train_one(edge_user, edge_item, num_users, num_items, validate, config, reg,
                            item_pool)
        if best is None or result.validation > best.validation:
            best = result
    return best


def refit_bpr_mf(edge_user: torch.Tensor, edge_item: torch.Tensor, num_users: int,
                 num_items: int, chosen: MFResult, config: MFConfig = MFConfig(),
                 item_pool: torch.Tensor | None = None) -> MFResult:
    """The selected run's regularisation and epoch count, retrained on all the edges known at
    the version's time (validation held some back; a vector is only learnt from its edges)."""
    config = dataclasses.replace(config, epochs=max(chosen.selected_epoch, 1))
    result = _train_one(edge_user, edge_item, num_users, num_items, None, config, chosen.reg,
                        item_pool)
    return dataclasses.replace(result, validation=chosen.validation,
                               selected_epoch=chosen.selected_epoch)


def _train_one(edge_user, edge_item, num_users, num_items, validate: Validate | None,
               config: MFConfig, reg: float, item_pool) -> MFResult:
    """Early-stopped on `validate`; without one, the last of `config.epochs` epochs."""
    generator = torch.Generator().manual_seed(config.seed)
    users = torch.nn.Parameter(torch.randn(num_users, config.dim, generator=generator) * 0.1)
    items = torch.nn.Parameter(torch.randn(num_items, config.dim, generator=generator) * 0.1)
    bias = torch.nn.Parameter(torch.zeros(num_items, 1))
    optimizer = torch.optim.Adam([users, items, bias], lr=config.lr)
    sampler = TripleSampler(edge_user, edge_item, num_items, item_pool=item_pool)
    seen_user = torch.bincount(edge_user, minlength=num_users) > 0
    seen_item = torch.bincount(edge_item, minlength=num_items) > 0

    def tables() -> tuple[torch.Tensor, torch.Tensor]:
        return _with_bias(users.detach(), items.detach(), bias.detach(), seen_user, seen_item)

    best_score, best_state, best_epoch, waited, epoch = -1.0, None, 0, 0, 0
    for epoch in range(1, config.epochs + 1):
        triples = sampler.epoch(config.seed * 100_003 + epoch)
        for start in range(0, len(triples), config.batch_size):
            batch = triples.slice(start, start + config.batch_size)
            u, p, n = users[batch.user], items[batch.pos], items[batch.neg]
            scored = (torch.cat([u, torch.ones(len(u), 1)], dim=1),
                      torch.cat([p, bias[batch.pos]], dim=1),
                      torch.cat([n, bias[batch.neg]], dim=1))
            loss = bpr_loss(*scored) + reg * embedding_l2(u, p, n)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if validate is None or (epoch % config.eval_every and epoch != config.epochs):
            continue
        state = tables()
        score = validate(*state)
        if best_state is None or score > best_score:
            best_score, best_epoch, waited, best_state = score, epoch, 0, state
        else:
            waited += 1
            if config.patience and waited >= config.patience:
                break
    if validate is None:
        return MFResult(*tables(), reg, float("nan"), epoch, epoch)
    return MFResult(*best_state, reg, best_score, best_epoch, epoch)


def fold_in_users(z_user: torch.Tensor, z_item: torch.Tensor, edge_user: torch.Tensor,
                  edge_item: torch.Tensor) -> torch.Tensor:
    """`z_user` where each user with no vector (no training edges: all zeros but the bias
    column) but with edges in (`edge_user`, `edge_item`) gets the mean of those items'
    vectors: what a graph model's aggregation gives a user first seen after training, so
    BPR-MF is compared on the same edges, not denied the new users' known interactions."""
    dim = z_user.shape[1] - 1  # the last column pairs with the item bias
    untrained = ~z_user[:, :dim].any(dim=1)
    chosen = untrained[edge_user]
    users, items = edge_user[chosen], edge_item[chosen]
    if not len(users):
        return z_user
    sums = torch.zeros(len(z_user), dim).index_add_(0, users, z_item[items, :dim])
    counts = torch.bincount(users, minlength=len(z_user))
    folded = counts > 0
    out = z_user.clone()
    out[folded, :dim] = sums[folded] / counts[folded, None]
    return out


def _with_bias(users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor,
               seen_user: torch.Tensor, seen_item: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Tables whose dot product is <u, i> + b_i. An entity without training edges keeps a zero
    vector (its random init carries nothing), so a user first seen later is ranked by the
    item bias alone: popularity, as the model learnt it."""
    z_user = torch.cat([users * seen_user[:, None], torch.ones(len(users), 1)], dim=1)
    return z_user, torch.cat([items * seen_item[:, None], bias], dim=1)
