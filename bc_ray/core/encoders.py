"""An entity's input representation, shared by every family that embeds entities from IDs and
metadata: per-field feature embedding bags, and learnable ID tables whose rows of entities never
seen in training stay exactly zero (so a never-seen entity is embedded like a brand-new one)."""

from __future__ import annotations

import torch
from torch import nn

from bc_ray.core.family import Vocabularies
from bc_ray.core.graph import FeatureBag
from bc_ray.core.sparse_rows import masked_gradient

ID_INIT_STD = 0.1


class FeatureEncoder(nn.Module):
    """Sum over fields of the mean embedding of an entity's codes (zeros for no codes)."""

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        self.vocab_sizes = dict(vocab_sizes)
        self.dim = dim
        self.bags = nn.ModuleDict({
            name: nn.EmbeddingBag(max(size, 1), dim, mode="mean")
            for name, size in self.vocab_sizes.items()})
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # carries the device

    def forward(self, features: dict[str, FeatureBag], count: int) -> torch.Tensor:
        out = self.anchor.new_zeros(count, self.dim)
        for name, bag in self.bags.items():
            if name in features:
                known = features[name].limited(self.vocab_sizes[name])
                out = out + bag(known.values, known.offsets)
        return out


def id_tables(owner: nn.Module, counts: dict[str, int], dim: int, *, enabled: bool = True,
              initialize: bool = True) -> nn.ModuleDict:
    """One table per entity with a zero padding row at index `count` (an entity the model was
    not built for). `owner` gets a non-persistent `<entity>_id_trainable` mask per table.
    `initialize=False` leaves the rows uninitialised, for weights about to be loaded (their
    random init is most of a 10M-edge model's load time)."""
    tables = nn.ModuleDict()
    if not enabled:
        return tables
    for entity, count in counts.items():
        tables[entity] = nn.Embedding(count + 1, dim, padding_idx=count,
                                      _weight=None if initialize else torch.empty(count + 1, dim))
        if initialize:
            nn.init.normal_(tables[entity].weight, std=ID_INIT_STD)
            with torch.no_grad():
                tables[entity].weight[count].zero_()
        trainable = torch.ones(count + 1, 1)
        trainable[count] = 0.0
        owner.register_buffer(f"{entity}_id_trainable", trainable, persistent=False)
        # Rows of entities without training edges must stay exactly zero (they stand for
        # "never seen"), but batch statistics couple every row, so they would receive small
        # gradients that Adam turns into full-size steps.
        tables[entity].weight.register_hook(
            lambda grad, name=f"{entity}_id_trainable":
            masked_gradient(grad, getattr(owner, name)))
    return tables


def sparse_id_tables(tables: nn.ModuleDict) -> list[nn.Parameter]:
    """Switch the ID tables to row-sparse gradients (see sparse_rows.py); their weights."""
    for table in tables.values():
        table.sparse = True
    return [table.weight for table in tables.values()]


@torch.no_grad()
def zero_unseen_ids(owner: nn.Module, tables: nn.ModuleDict,
                    seen: dict[str, torch.Tensor]) -> None:
    """Entities without training interactions keep a zero ID row that Adam never moves (no
    gradient), so they are embedded exactly like brand-new entities."""
    for entity, mask in seen.items():
        if entity not in tables:
            continue
        tables[entity].weight[: mask.numel()][~mask] = 0.0
        trainable = getattr(owner, f"{entity}_id_trainable")
        trainable[: mask.numel(), 0] = mask.to(trainable.dtype)


class EntityTables:
    """What every model built from per-entity `encoders` and `ids` tables (and `num_users`,
    `num_items`, `spec`) shares: its vocabularies, output width and the ID-table switches the
    trainer uses. Mixed into the model's nn.Module."""

    @property
    def output_dim(self) -> int:
        return self.spec.output_dim

    @property
    def vocab(self) -> Vocabularies:
        return Vocabularies(self.num_users, self.num_items, self.encoders["user"].vocab_sizes,
                            self.encoders["item"].vocab_sizes)

    def sparse_id_tables(self) -> list[nn.Parameter]:
        """Switch the ID tables to row-sparse gradients (see sparse_rows.py); their weights."""
        return sparse_id_tables(self.ids)

    def zero_unseen_ids(self, user_seen: torch.Tensor, item_seen: torch.Tensor) -> None:
        """Entities without training interactions keep a zero ID row (`zero_unseen_ids`)."""
        zero_unseen_ids(self, self.ids, {"user": user_seen, "item": item_seen})
