"""The sequence foundation model as a model family: a causal transformer over users' histories,
trained by next-item prediction, refreshed by mapping `embed` over runs of entities.

A user's embedding reads only its own last `max_len` interactions and features, an item's only
its own inputs, so an incremental refresh recomputes the users with new interactions, the new or
changed entities, and every user whose window holds a changed item (`affected`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from bc_ray.core.family import Changes, Vocabularies
from bc_ray.core.family_base import FamilyBase
from bc_ray.core.graph import GraphTensors
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.warmstart import warm_start
from bc_ray.models.sequence.history import SequenceInputs, sequence_inputs, users_holding
from bc_ray.models.sequence.model import SequenceModel, embed_nodes
from bc_ray.models.sequence.spec import SequenceSpec
from bc_ray.models.sequence.task import NextItemTask


class SequenceTransformer(FamilyBase):
    name: ClassVar[str] = "sequence"
    spec_type: ClassVar[type] = SequenceSpec

    def parse_spec(self, text: str, base: SequenceSpec | None = None) -> SequenceSpec:
        return SequenceSpec.parse(text, base=base)

    def spec_from_dict(self, data: Mapping[str, Any]) -> SequenceSpec:
        return SequenceSpec.from_dict(dict(data))

    def grown(self, spec: SequenceSpec, version: int, width_step: int) -> SequenceSpec:
        return spec.grown(version, width_step=width_step)

    def build(self, spec: SequenceSpec, vocab: Vocabularies) -> SequenceModel:
        return SequenceModel(spec, vocab)

    def task(self, model: SequenceModel, graph: GraphTensors, config: TrainConfig, *,
             rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
             device: torch.device | None = None) -> NextItemTask:
        return NextItemTask(model, graph, config, rank=rank, world_size=world_size,
                            item_pool=item_pool, device=device)

    def warm_start(self, model: SequenceModel, previous: SequenceModel, graph: GraphTensors,
                   strategy: str, seed: int) -> None:
        """ID rows, feature and position tables as core warmstart does; a transformer block
        is copied only where its shape is unchanged (its fused q/k/v matrix and its heads do
        not survive a corner copy into a wider one)."""
        fresh = {name: value.detach().clone() for name, value in model.state_dict().items()
                 if name.startswith("blocks.")}
        warm_start(model, previous, graph, strategy, seed=seed)
        old = previous.state_dict()
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if name in fresh and (name not in old or old[name].shape != value.shape):
                    value.copy_(fresh[name])

    def from_bytes(self, data: bytes, *, light: bool = False) -> SequenceModel:
        """`light`: take the loaded tensors as the weights (no copy) in inference processes."""
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = SequenceModel(self.spec_from_dict(payload["spec"]),
                              Vocabularies(**payload["vocab"]), initialize=False)
        model.load_state_dict(payload["state"], assign=light)
        return model.eval()

    # -- refresh ------------------------------------------------------------------------------
    def embed_inputs(self, spec: SequenceSpec, graph: GraphTensors) -> SequenceInputs:
        return sequence_inputs(graph, spec.max_len)

    def embed(self, model: SequenceModel, inputs: SequenceInputs,
              nodes: np.ndarray) -> np.ndarray:
        return embed_nodes(model, inputs, nodes)

    def affected(self, spec: SequenceSpec, inputs: SequenceInputs,
                 changes: Changes) -> np.ndarray:
        """Users with new interactions or a changed row, users whose last `max_len` items hold
        a new or changed item, and those items (`inputs`: the new graph's)."""
        touched = np.asarray(changes.touched, dtype=np.int64)
        entities = np.asarray(changes.entities, dtype=np.int64)
        users = np.union1d(touched[touched < inputs.num_users],
                           entities[entities < inputs.num_users])
        items = entities[entities >= inputs.num_users]
        holders = users_holding(inputs.recent, items - inputs.num_users)
        return np.union1d(np.union1d(users, holders), items)

    def incremental_blocker(self, spec: SequenceSpec) -> str | None:
        if spec.cold_start_mixing:
            return "age-aware mixing changes every input as time passes"
        return None
