"""Model families that each break one rule of bc_ray's model contract: the tiny plug-in
(tests/models/plugin) with one member changed. `bc-ray model check` must name the rule each
breaks (tests/models/test_check.py); they load as `tests.models.broken_families:Name`."""

from __future__ import annotations

import io

import numpy as np
import torch
from bc_ray_tiny_family import BPRTask, TinyFamily, TinyModel, TinySpec
from torch import nn

from bc_ray.core.losses import bpr_loss
from bc_ray.core.triples import Triples
from bc_ray.models import TaskStep, Vocabularies


class _Uneven(BPRTask):
    def epoch(self, epoch: int) -> list:
        batches = super().epoch(epoch)
        return batches[:-1] if self.rank == 1 else batches


class UnevenRanks(TinyFamily):
    """Rank 1 takes one step fewer than rank 0 (DDP would wait for it for ever)."""

    def task(self, model, graph, config, *, rank=0, world_size=1, item_pool=None, device=None):
        return _Uneven(graph, config, rank, world_size, item_pool)


class _Idle(TinyModel):
    def __init__(self, spec, vocab) -> None:
        super().__init__(spec, vocab)
        self.unused = nn.Linear(spec.dim, spec.dim)  # never called by forward


class UnusedWeight(TinyFamily):
    """A weight no step uses (Ray Train's DDP stops on it)."""

    def build(self, spec, vocab):
        return _Idle(spec, vocab)


class ForgetfulSpec(TinyFamily):
    """Reads every version record back as the default spec."""

    def spec_from_dict(self, data):
        return TinySpec()


class LossyLightModel(TinyFamily):
    """The light model refresh tasks read has lost its item ID rows."""

    def from_bytes(self, data, *, light=False):
        model = super().from_bytes(data, light=light)
        if light:
            with torch.no_grad():
                model.ids["item"].weight.zero_()
        return model


class SortedEmbed(TinyFamily):
    """Returns the rows of the nodes asked for in sorted order, not in the order asked."""

    def embed(self, model, inputs, nodes):
        return super().embed(model, inputs, np.sort(nodes))


class UnpicklableInputs(TinyFamily):
    """What its embed step reads cannot go through Ray's object store."""

    def embed_inputs(self, spec, graph):
        return graph, lambda nodes: nodes

    def embed(self, model, inputs, nodes):
        return super().embed(model, inputs[0], nodes)


class _Neighbourly(TinyModel):
    def forward(self, graph):
        """A user adds the mean of its items' own rows, an item the mean of its users' ID rows:
        new interactions move both ends, an item's changed features move its users."""
        z_user, z_item = super().forward(graph)
        edge_user, edge_item = graph.edge_user, graph.edge_item
        users = self.ids["user"](edge_user.clamp(max=self.ids["user"].padding_idx))
        item_sums = torch.zeros_like(z_item).index_add(0, edge_item, users)
        user_sums = torch.zeros_like(z_user).index_add(0, edge_user, z_item[edge_item])
        return (z_user + user_sums / _counts(edge_user, z_user.shape[0]),
                z_item + item_sums / _counts(edge_item, z_item.shape[0]))


def _counts(index: torch.Tensor, size: int) -> torch.Tensor:
    return torch.bincount(index, minlength=size).clamp(min=1)[:, None]


class Neighbourly(TinyFamily):
    """A model whose rows depend on the interactions, with the `affected` it needs: the ends of
    new interactions, the added or changed entities and their neighbours (no rule broken)."""

    def build(self, spec, vocab):
        return _Neighbourly(spec, vocab)

    def affected(self, spec, inputs, changes):
        entities = torch.from_numpy(changes.entities)
        users, items = entities[entities < inputs.num_users], entities[entities >= inputs.num_users]
        of_items = torch.isin(inputs.edge_item + inputs.num_users, items)
        of_users = torch.isin(inputs.edge_user, users)
        neighbours = torch.cat([inputs.edge_user[of_items],
                                inputs.edge_item[of_users] + inputs.num_users]).numpy()
        return np.union1d(np.union1d(changes.touched, changes.entities), neighbours)


class StaleItems(Neighbourly):
    """`affected` names the users new interactions touch and the new entities, not the items."""

    def affected(self, spec, inputs, changes):
        users = changes.touched[changes.touched < inputs.num_users]
        return np.union1d(users, changes.entities)


class ForgetsNewItems(TinyFamily):
    """`affected` names the users new interactions touch, and nothing else."""

    def affected(self, spec, inputs, changes):
        return changes.touched[changes.touched < inputs.num_users]


class BuildFails(TinyFamily):
    def build(self, spec, vocab):
        raise ValueError("this model needs a GPU")


class _Fixed(TinyModel):
    def entities(self, entity, count, graph):
        """Indexes its ID table by every entity of the graph, newer ones too (out of range)."""
        return self.ids[entity](torch.arange(count)) + self.features[entity](
            graph.features(entity), count)


class FixedVocabulary(TinyFamily):
    """A model that cannot embed entities newer than itself."""

    def build(self, spec, vocab):
        return _Fixed(spec, vocab)


class _EveryOtherStep(TinyModel):
    def __init__(self, spec, vocab) -> None:
        super().__init__(spec, vocab)
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, graph):
        """The scale takes part in every other call only (DDP fails on the first without it)."""
        self.calls += 1
        z_user, z_item = super().forward(graph)
        return (z_user * self.scale, z_item) if self.calls % 2 else (z_user, z_item)


class UsedEveryOtherStep(TinyFamily):
    def build(self, spec, vocab):
        return _EveryOtherStep(spec, vocab)


class _Strided(BPRTask):
    def epoch(self, epoch: int) -> list:
        """Rank r takes every world_size-th triple from r: shares differ by one."""
        triples = self.sampler.epoch(seed=self.config.seed * 1_000_003 + epoch)
        every = torch.arange(self.rank, len(triples), self.world_size)
        mine = Triples(triples.user[every], triples.pos[every], triples.neg[every])
        size = self.config.batch_size
        return [mine.slice(start, start + size) for start in range(0, len(mine), size)]


class StridedRanks(TinyFamily):
    """Ranks whose shares differ by one example: as many steps only at most batch sizes."""

    def task(self, model, graph, config, *, rank=0, world_size=1, item_pool=None, device=None):
        return _Strided(graph, config, rank, world_size, item_pool)


class AffectedOutOfRange(TinyFamily):
    def affected(self, spec, inputs, changes):
        return np.arange(-1, inputs.num_nodes + 1)


class ChangedFeaturesNotSpread(Neighbourly):
    """Names both ends of new interactions and the changed entities, but not the neighbours
    whose rows a changed entity's features move."""

    def affected(self, spec, inputs, changes):
        return np.union1d(changes.touched, changes.entities)


class BytesForgetTheSpec(TinyFamily):
    """Reads every model back with the default spec: right for version 0's, not version 1's."""

    def grown(self, spec, version, width_step):
        return TinySpec(dim=spec.dim + width_step)

    def from_bytes(self, data, *, light=False):
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = self.build(self.default_spec(), Vocabularies(**payload["vocab"]))
        model.load_state_dict(payload["state"])
        return model


class NaNLoss(TinyFamily):
    def task(self, model, graph, config, *, rank=0, world_size=1, item_pool=None, device=None):
        return _NaN(graph, config, rank, world_size, item_pool)


class _NaN(BPRTask):
    def step(self, model, batch):
        found = super().step(model, batch)
        found.loss = found.loss * float("nan")
        return found


class NoFineTune(TinyFamily):
    """finetune-m0 that starts M_1 fresh instead of from M_0."""

    def fine_tune_from(self, model, previous):
        return None


class _SparseExtra(TinyModel):
    def __init__(self, spec, vocab) -> None:
        super().__init__(spec, vocab)
        self.extra = nn.Embedding(4, spec.dim, sparse=True)

    def forward(self, graph, extra: bool = True):
        """A row-sparse table, which training leaves out of every other step."""
        z_user, z_item = super().forward(graph)
        if extra:
            z_user = z_user + self.extra(torch.zeros(z_user.shape[0], dtype=torch.long))
        return z_user, z_item


class _SparseTask(BPRTask):
    def __init__(self, model, *args) -> None:
        super().__init__(*args)
        self.sparse_parameters = [model.extra.weight]
        self.steps = 0

    def step(self, model, batch) -> TaskStep:
        self.steps += 1
        z = torch.cat(model(self.graph, extra=self.steps % 2 == 1))
        shift = self.graph.num_users
        user, pos, neg = batch.user, batch.pos + shift, batch.neg + shift
        nodes = torch.unique(torch.cat([user, pos, neg]))
        return TaskStep(bpr_loss(z[user], z[pos], z[neg]), nodes, z[nodes])


class SparseSometimes(TinyFamily):
    """No rule broken: a row-sparse weight (`sparse_parameters`) may skip a step, since bc_ray
    averages those itself, outside DDP."""

    def build(self, spec, vocab):
        return _SparseExtra(spec, vocab)

    def task(self, model, graph, config, *, rank=0, world_size=1, item_pool=None, device=None):
        return _SparseTask(model, graph, config, rank, world_size, item_pool)
