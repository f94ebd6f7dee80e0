"""The version spec: the architecture of one embedding model version, as typed data.

Versions grow as in the paper: 2 layers at first, 3 from version 2 on, and the width grows by 64
per version (`VersionSpec.grown`). The output dimension may change between versions; the backward
transform B_k bridges it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from bc_ray.core.family_base import parse_fields
from bc_ray.exceptions import ConfigError

AGGREGATIONS = ("mean", "sum", "max")
ALIASES = {"layers": "num_layers", "hidden": "hidden_dim", "out": "out_dim", "agg": "aggregation",
           "ids": "id_embeddings", "bn": "batch_norm", "mixing": "cold_start_mixing"}


@dataclass(frozen=True)
class VersionSpec:
    family: ClassVar[str] = "graphsage"
    num_layers: int = 2
    hidden_dim: int = 256
    out_dim: int | None = None
    aggregation: str = "mean"
    id_embeddings: bool = True
    batch_norm: bool = True
    cold_start_mixing: bool = False

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"version spec: num_layers must be >= 1, got {self.num_layers}")
        if self.hidden_dim < 1:
            raise ConfigError(f"version spec: hidden_dim must be >= 1, got {self.hidden_dim}")
        if self.out_dim is not None and self.out_dim < 1:
            raise ConfigError(f"version spec: out_dim must be >= 1, got {self.out_dim}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"version spec: aggregation {self.aggregation!r} is not one of "
                              f"{AGGREGATIONS}")

    @property
    def output_dim(self) -> int:
        return self.out_dim or self.hidden_dim

    def grown(self, version: int, width_step: int = 64, deepen_at: int = 2) -> VersionSpec:
        """The spec of `version` when this one is version 0 (the paper's growth schedule)."""
        layers = self.num_layers + (1 if version >= deepen_at else 0)
        hidden = self.hidden_dim + width_step * version
        out = None if self.out_dim is None else self.out_dim + width_step * version
        return dataclasses.replace(self, num_layers=layers, hidden_dim=hidden, out_dim=out)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VersionSpec:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"version spec has unknown field(s) {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def parse(cls, text: str, base: VersionSpec | None = None) -> VersionSpec:
        """`layers=3,hidden=320,out=128,agg=mean,ids=true` (any subset, in any order; the rest
        from `base`, else the defaults); a key given twice is refused."""
        return parse_fields(cls, text, cls.family, ALIASES, base=base)


# The product default: a small model that trains in minutes on CPUs (the paper's sizes are a
# --spec away).
DEFAULT_SPEC = VersionSpec(num_layers=2, hidden_dim=64)
