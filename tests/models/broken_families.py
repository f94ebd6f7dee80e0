"""Model families that each break one rule of bc_ray's model contract: the tiny plug-in
(tests/models/plugin) with one member changed. `bc-ray model check` must name the rule each
breaks (tests/models/test_check.py); they load as `tests.models.broken_families:Name`."""

from __future__ import annotations

import numpy as np
import torch
from bc_ray_tiny_family import BPRTask, TinyFamily, TinyModel, TinySpec
from torch import nn


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
        """An item adds the mean ID row of its users: new interactions move items."""
        z_user, z_item = super().forward(graph)
        edge_user, edge_item = graph.edge_user, graph.edge_item
        users = self.ids["user"](edge_user.clamp(max=self.ids["user"].padding_idx))
        sums = torch.zeros_like(z_item).index_add(0, edge_item, users)
        counts = torch.bincount(edge_item, minlength=z_item.shape[0]).clamp(min=1)
        return z_user, z_item + sums / counts[:, None]


class StaleItems(TinyFamily):
    """Items depend on their interactions, but `affected` names only users and new entities."""

    def build(self, spec, vocab):
        return _Neighbourly(spec, vocab)

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
