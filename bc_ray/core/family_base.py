"""Defaults for a model family's optional members (`bc_ray.models.FamilyBase`): a family needs
only its spec class, `build` and `task`; refresh then embeds through the model's own `embed` over
the whole graph, and specs read `key=value` text by their fields' types."""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
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


def spec_from_fields(spec_type: type, data: dict[str, Any], family: str) -> ModelSpec:
    """A dataclass spec from its record, refusing fields it does not have. A tuple field comes
    back from JSON as a list: made a tuple again, so the spec equals the one recorded."""
    known = {f.name for f in dataclasses.fields(spec_type)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{family} spec has unknown field(s) {sorted(unknown)}; it has "
                          f"{sorted(known)}")
    hints = _hints(spec_type, family)
    data = {name: tuple(value) if isinstance(value, list) and _origin(hints[name]) is tuple
            else value for name, value in data.items()}
    return _built(spec_type, data, family)


def parse_fields(spec_type: type, text: str, family: str,
                 aliases: Mapping[str, str] | None = None, base: ModelSpec | None = None
                 ) -> ModelSpec:
    """`key=value,key=value` into a dataclass spec, each value read by its field's type (bool,
    int, float, str or an optional one); a key given twice is refused, not the last one kept.
    Fields not named keep `base`'s values (else the dataclass's defaults)."""
    aliases = dict(aliases or {})
    hints = _hints(spec_type, family)
    fields = {f.name for f in dataclasses.fields(spec_type)}
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        name = aliases.get(key.strip(), key.strip())
        if not sep or name not in fields:
            raise ConfigError(f"cannot read {family} spec part {part!r}; expected key=value with "
                              f"keys {sorted(set(aliases) | fields)}")
        if name in values:
            raise ConfigError(f"{family} spec: {name} is given twice")
        values[name] = _typed(hints[name], raw.strip(), f"{family} spec: {name}")
    if base is not None:
        values = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(spec_type)
                     if f.init}, **values}
    return _built(spec_type, values, family)


def _hints(spec_type: type, family: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec_type)
    except Exception as error:  # noqa: BLE001 - a hint imported only for type checkers
        raise ConfigError(f"{family} spec: its field types cannot be read at run time "
                          f"({type(error).__name__}: {error}); import what they name at run "
                          "time") from None


def _built(spec_type: type, values: dict[str, Any], family: str) -> ModelSpec:
    """The spec, or its own refusal of the values (a `__post_init__` check) as one line."""
    infinite = [name for name, value in values.items()
                if isinstance(value, float) and not math.isfinite(value)]
    if infinite:  # the version record (JSON) would hold null
        raise ConfigError(f"{family} spec: {', '.join(infinite)} must be a finite number")
    try:
        return spec_type(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{family} spec {values}: {error}") from None


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint) or hint


def _typed(hint: Any, raw: str, what: str) -> Any:
    """`raw` as the field's type: bool, int, float, str or one of a Literal's values, or None
    for an optional field; any other type is refused by name, never read as text."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) \
        else (hint,)
    if raw.lower() in ("none", "null") and type(None) in kinds:
        return None
    kind = next((k for k in kinds if k is not type(None)), str)
    if typing.get_origin(kind) is typing.Literal:
        choices = {str(choice): choice for choice in typing.get_args(kind)}
        if raw not in choices:
            raise ConfigError(f"{what} must be one of {sorted(choices)}, got {raw!r}")
        return choices[raw]
    if kind not in (bool, int, float, str):
        raise ConfigError(f"{what}: a field of type {kind} cannot be read from key=value text; "
                          "the family reads it in its own parse_spec")
    if kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{what} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if kind in (int, float):
        try:
            number = kind(raw)
        except ValueError:
            raise ConfigError(f"{what} must be a number ({kind.__name__}), got {raw!r}") from None
        if not math.isfinite(number):  # the version record (JSON) cannot hold it
            raise ConfigError(f"{what} must be a finite number, got {raw!r}")
        return number
    return raw
