"""Defaults for a model family's optional members (`bc_ray.models.FamilyBase`): a family needs
only its spec class, `build` and `task`; refresh then embeds through the model's own `embed` over
the whole graph, and specs read `key=value` text by their fields' types (`bc_ray.key_values`,
whose `parse_fields` and `spec_from_fields` plug-ins import from here too)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from bc_ray.core.embedded import embedded
from bc_ray.core.encoders import EntityTables
from bc_ray.core.family import (
    API_VERSION,
    Changes,
    EmbeddingModule,
    ModelSpec,
)
from bc_ray.core.graph import GraphTensors, shared_tensor
from bc_ray.key_values import parse_fields, spec_from_fields
from bc_ray.core.module_bytes import module_from_bytes, module_to_bytes
from bc_ray.core.warmstart import fine_tune_copy
from bc_ray.exceptions import ConfigError


class FamilyBase:
    """Defaults for the optional members, so a family needs only its spec, `build`, `task` (and
    `parse_spec`/`spec_from_dict` when its spec is not a flat dataclass). Refresh then embeds
    through the model's own `embed` over the whole graph, which is right for any model and fast
    enough for small ones; override `embed_inputs`/`embed`/`affected` to scale."""

    name: ClassVar[str]
    spec_type: ClassVar[type]
    api_version: ClassVar[int] = API_VERSION
    refresh_strategy: ClassVar[str] = "entities"

    def default_spec(self) -> ModelSpec:
        return self.spec_type()

    def spec_from_dict(self, data: Mapping[str, Any]) -> ModelSpec:
        return spec_from_fields(self.spec_type, dict(data), self.name)

    def parse_spec(self, text: str, base: ModelSpec | None = None) -> ModelSpec:
        return parse_fields(self.spec_type, text, self.name,
                            base=base if base is not None else self.default_spec())

    def grown(self, spec: ModelSpec, version: int, width_step: int) -> ModelSpec:
        return spec

    def prepare(self, model: EmbeddingModule, graph: GraphTensors) -> None:
        """A model with ID tables (`EntityTables`) keeps a zero row for every entity without
        training interactions, so it embeds them like brand-new ones."""
        if isinstance(model, EntityTables):
            user_degree, item_degree = graph.degrees()
            model.zero_unseen_ids(user_degree > 0, item_degree > 0)

    def warm_start(self, model: EmbeddingModule, previous: EmbeddingModule, graph: GraphTensors,
                   strategy: str, seed: int) -> None:
        raise ConfigError(f"the {self.name} model family has no warm start; use --warm-start off")

    def fine_tune_from(self, model: EmbeddingModule, previous: EmbeddingModule) -> None:
        """Every weight of M_{k-1}; tables grown since for new entities or feature codes keep
        their fresh rows (`fine_tune_copy`)."""
        fine_tune_copy(model, previous)

    def to_bytes(self, model: EmbeddingModule) -> bytes:
        return module_to_bytes(model, self.name)

    def from_bytes(self, data: bytes, *, light: bool = False) -> EmbeddingModule:
        return module_from_bytes(self, data)

    def embed_inputs(self, spec: ModelSpec, graph: GraphTensors) -> Any:
        return graph

    def embed(self, model: EmbeddingModule, inputs: Any, nodes: np.ndarray) -> np.ndarray:
        z_user, z_item = embedded(model, inputs)
        return torch.cat([z_user, z_item])[shared_tensor(nodes)].numpy()  # nodes: read-only

    def affected(self, spec: ModelSpec, inputs: Any, changes: Changes) -> np.ndarray:
        return np.arange(inputs.num_nodes, dtype=np.int64)  # every node: always correct

    def incremental_blocker(self, spec: ModelSpec) -> str | None:
        return None

    def cached_layers(self, spec: ModelSpec) -> int:
        """Inner layers a layer-wise refresh strategy caches for the next incremental one."""
        return 0


def parse_spec_onto(family: Any, text: str, base: ModelSpec | None) -> ModelSpec:
    """`--spec` text with the keys it does not name taken from `base` (the current version's
    spec) or the family's default: `mixing=true` changes that and nothing else. A family whose
    `parse_spec` takes no `base` (written before it had one) reads the text its own way."""
    parameters = inspect.signature(family.parse_spec).parameters
    if "base" in parameters:
        return family.parse_spec(text, base=base)
    return family.parse_spec(text)


def has_warm_start(family: object) -> bool:
    """Whether a family starts M_k from M_{k-1} (FamilyBase's default refuses to)."""
    return getattr(type(family), "warm_start", None) is not FamilyBase.warm_start


