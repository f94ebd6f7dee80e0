"""The sequence family's version spec: the transformer's architecture and its training objective,
as typed data that round-trips through the version record.

Versions grow as GraphSAGE's do (`SequenceSpec.grown`): the width by `width_step` per version and
one more layer from version 2; the head count drops to the largest one that still divides the new
width, so every grown spec is valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bc_ray.core.family_base import parse_fields, spec_from_fields
from bc_ray.exceptions import ConfigError

ALIASES = {"layers": "num_layers", "heads": "num_heads", "len": "max_len", "out": "out_dim",
           "neg": "negatives", "next": "predict_next", "temp": "temperature",
           "ids": "id_embeddings", "mixing": "cold_start_mixing"}


@dataclass(frozen=True)
class SequenceSpec:
    """`dim`: token and hidden width; `max_len`: interactions a user's embedding reads (its last
    ones); `negatives`: items sampled per batch for the sampled softmax; `predict_next`: each
    position scores the next n interactions (1: plain next-item prediction)."""

    family: ClassVar[str] = "sequence"
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 50
    dropout: float = 0.1
    negatives: int = 128
    predict_next: int = 1
    temperature: float = 1.0
    out_dim: int | None = None
    id_embeddings: bool = True
    cold_start_mixing: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "num_layers", "num_heads", "max_len", "negatives", "predict_next"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sequence spec: {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ConfigError(f"sequence spec: num_heads ({self.num_heads}) must divide dim "
                              f"({self.dim})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"sequence spec: dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise ConfigError(f"sequence spec: temperature must be > 0, got {self.temperature}")
        if self.out_dim is not None and self.out_dim < 1:
            raise ConfigError(f"sequence spec: out_dim must be >= 1, got {self.out_dim}")

    @property
    def output_dim(self) -> int:
        return self.out_dim or self.dim

    def grown(self, version: int, width_step: int = 64, deepen_at: int = 2) -> SequenceSpec:
        """The spec of `version` when this one is version 0 (the paper's growth schedule)."""
        dim = self.dim + width_step * version
        heads = max(h for h in range(1, self.num_heads + 1) if dim % h == 0)
        out = None if self.out_dim is None else self.out_dim + width_step * version
        return dataclasses.replace(self, dim=dim, num_heads=heads, out_dim=out,
                                   num_layers=self.num_layers + (1 if version >= deepen_at else 0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceSpec:
        return spec_from_fields(cls, dict(data), cls.family)

    @classmethod
    def parse(cls, text: str, base: SequenceSpec | None = None) -> SequenceSpec:
        """`dim=64,layers=2,heads=2,len=50,neg=128,next=1` (any subset, in any order; the
        rest from `base`, else the defaults)."""
        return parse_fields(cls, text, cls.family, ALIASES, base=base)
