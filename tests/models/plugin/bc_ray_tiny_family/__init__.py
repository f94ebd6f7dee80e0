"""A tiny bc_ray model family: matrix factorisation (an ID row plus the mean of the entity's
feature codes, trained with BPR on sampled triples; no graph). FamilyBase supplies the rest:
the spec from/to text and records, the model as bytes, refresh by `model.embed`."""

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from bc_ray.core.encoders import FeatureEncoder, id_tables
from bc_ray.core.losses import bpr_loss
from bc_ray.core.triples import TripleSampler
from bc_ray.models import FamilyBase, TaskStep


@dataclass(frozen=True)
class TinySpec:
    family: ClassVar[str] = "tiny"
    dim: int = 8

    @property
    def output_dim(self) -> int:
        return self.dim

    def to_dict(self) -> dict:
        return asdict(self)


class TinyModel(nn.Module):
    def __init__(self, spec: TinySpec, vocab) -> None:
        super().__init__()
        self.spec, self.vocab, self.output_dim = spec, vocab, spec.dim
        self.ids = id_tables(self, {"user": vocab.num_users, "item": vocab.num_items}, spec.dim)
        self.features = nn.ModuleDict({"user": FeatureEncoder(vocab.user_vocab, spec.dim),
                                       "item": FeatureEncoder(vocab.item_vocab, spec.dim)})

    def forward(self, graph):
        """(z_user, z_item) of every entity of `graph`."""
        return (self.entities("user", graph.num_users, graph),
                self.entities("item", graph.num_items, graph))

    def entities(self, entity: str, count: int, graph):
        """An entity newer than the model (not in its ID table) gets the zero padding row."""
        ids = torch.arange(count).clamp(max=self.ids[entity].padding_idx)
        return self.ids[entity](ids) + self.features[entity](graph.features(entity), count)

    @torch.no_grad()  # read as constants (targets, scores, refresh); training calls forward
    def embed(self, graph):
        return self(graph)


class BPRTask:
    def __init__(self, graph, config, rank: int, world_size: int, item_pool) -> None:
        self.graph, self.config, self.rank, self.world_size = graph, config, rank, world_size
        self.sampler = TripleSampler(graph.edge_user, graph.edge_item, graph.num_items,
                                     config.negatives, config.user_uniform, item_pool)
        self.sparse_parameters = []

    def epoch(self, epoch: int) -> list:
        """This rank's equal share of the epoch's triples: every rank takes as many steps."""
        triples = self.sampler.epoch(seed=self.config.seed * 1_000_003 + epoch)
        share, size = len(triples) // self.world_size, self.config.batch_size
        mine = triples.slice(self.rank * share, (self.rank + 1) * share)
        return [mine.slice(start, start + size) for start in range(0, share, size)]

    def examples(self, batch) -> int:
        return len(batch)

    def step(self, model, batch) -> TaskStep:
        z = torch.cat(model(self.graph))
        shift = self.graph.num_users  # items are nodes num_users..
        user, pos, neg = batch.user, batch.pos + shift, batch.neg + shift
        nodes = torch.unique(torch.cat([user, pos, neg]))
        return TaskStep(bpr_loss(z[user], z[pos], z[neg]), nodes, z[nodes])


class TinyFamily(FamilyBase):
    name: ClassVar[str] = "tiny"
    spec_type: ClassVar[type] = TinySpec

    def build(self, spec, vocab):
        return TinyModel(spec, vocab)

    def task(self, model, graph, config, *, rank=0, world_size=1, item_pool=None, device=None):
        return BPRTask(graph, config, rank, world_size, item_pool)
