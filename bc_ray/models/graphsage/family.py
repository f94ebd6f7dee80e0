"""GraphSAGE as a model family: the paper's model, trained with BPR link prediction, refreshed by
its own layer-wise strategy (`bc_ray/refresh`: one Ray Data stage per layer, cached inner
layers for incremental refreshes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from bc_ray.core.family import Changes, Vocabularies
from bc_ray.core.family_base import FamilyBase
from bc_ray.core.graph import GraphTensors
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.warmstart import warm_start
from bc_ray.models.graphsage.inference import layer_frontiers, layerwise_embed
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.serialization import model_from_bytes, model_to_bytes
from bc_ray.models.graphsage.spec import DEFAULT_SPEC, VersionSpec
from bc_ray.models.graphsage.task import LinkPredictionTask


class GraphSAGE(FamilyBase):
    name: ClassVar[str] = "graphsage"
    spec_type: ClassVar[type] = VersionSpec
    refresh_strategy: ClassVar[str] = "layerwise"

    def default_spec(self) -> VersionSpec:
        return DEFAULT_SPEC

    def parse_spec(self, text: str, base: VersionSpec | None = None) -> VersionSpec:
        return VersionSpec.parse(text, base=base if base is not None else DEFAULT_SPEC)

    def spec_from_dict(self, data: Mapping[str, Any]) -> VersionSpec:
        return VersionSpec.from_dict(dict(data))

    def grown(self, spec: VersionSpec, version: int, width_step: int) -> VersionSpec:
        return spec.grown(version, width_step=width_step)

    def build(self, spec: VersionSpec, vocab: Vocabularies) -> EmbeddingModel:
        return EmbeddingModel(spec, vocab.num_users, vocab.num_items, vocab.user_vocab,
                              vocab.item_vocab)

    def task(self, model: EmbeddingModel, graph: GraphTensors, config: TrainConfig, *,
             rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
             device: torch.device | None = None) -> LinkPredictionTask:
        return LinkPredictionTask(model, graph, config, rank=rank, world_size=world_size,
                                  item_pool=item_pool, device=device)

    def warm_start(self, model: EmbeddingModel, previous: EmbeddingModel, graph: GraphTensors,
                   strategy: str, seed: int) -> None:
        warm_start(model, previous, graph, strategy, seed=seed)

    def to_bytes(self, model: EmbeddingModel) -> bytes:
        return model_to_bytes(model)

    def from_bytes(self, data: bytes, *, light: bool = False) -> EmbeddingModel:
        return model_from_bytes(data, light=light)

    def embed(self, model: EmbeddingModel, inputs: GraphTensors,
              nodes: np.ndarray) -> np.ndarray:
        """Layer-wise over the whole graph, then the rows asked for (the refresh's own strategy
        runs the layers as Ray Data stages instead)."""
        z = layerwise_embed(model, inputs)[-1]
        return z[torch.from_numpy(np.asarray(nodes, dtype=np.int64))].numpy()

    def affected(self, spec: VersionSpec, inputs: GraphTensors, changes: Changes) -> np.ndarray:
        """An L-layer GNN's output: within L-1 hops of new edges, L hops of changed inputs."""
        return layer_frontiers(inputs, torch.from_numpy(changes.touched),
                               torch.from_numpy(changes.entities), spec.num_layers)[-1].numpy()

    def incremental_blocker(self, spec: VersionSpec) -> str | None:
        if spec.cold_start_mixing:
            return "age-aware mixing changes every input as time passes"
        return None

    def cached_layers(self, spec: VersionSpec) -> int:
        """Inner layers a refresh caches for the next incremental one."""
        return spec.num_layers - 1
