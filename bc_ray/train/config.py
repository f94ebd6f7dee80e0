"""Typed configuration of a training job (built once at the edge: CLI or job entry point)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bc_ray.core.family import ModelSpec
from bc_ray.core.registry import get_family
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError

TARGET_SOURCES = ("model", "stored")
# Product defaults: small models that train in minutes on CPUs.
DEFAULT_TRAIN = TrainConfig(epochs=30, batch_size=4096, lr=3e-3, eval_every=5, warmup_epochs=10)


@dataclass(frozen=True)
class GateConfig:
    """A candidate is published only if it is good enough; otherwise it is recorded as rejected.

    - `max_align_error_rel`: mean ||B_k z_k - z_{k-1}|| / mean ||z_{k-1}|| on the held-out sample,
      of its users and items together and each.
    - `min_recall_vs_parent`: Recall@50 of the candidate over that of the current version,
      both measured on the same held-out edges.
    - `min_recall`: an absolute floor (also applies to version 0).
    """

    max_align_error_rel: float = 0.5
    min_recall_vs_parent: float = 0.8
    min_recall: float = 0.0


@dataclass(frozen=True)
class FaultInjection:
    """Chaos testing: worker `rank` kills its own process (SIGKILL) at `epoch`, once per marker."""

    rank: int
    epoch: int
    marker: str


@dataclass(frozen=True)
class TrainJobConfig:
    store: str
    method: str = "bc-aligner"
    # The model family: graphsage, sequence, a bc_ray.models entry point, or package.module:Class
    # (None: the current version's family, so a scheduled bump keeps it; graphsage at first).
    model: str | None = None
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    spec: ModelSpec | None = None  # of `model`'s family; None: the parent's, or its default
    train: TrainConfig = DEFAULT_TRAIN
    holdout: float = 0.05  # replayed timelines: the last fraction of the visible edges
    holdout_days: float = 7.0  # grown (ingested) snapshots: the last calendar days
    # Held-out users evaluated (a draw; 0: all): Recall@50 ranks every item for each, so without
    # a bound a bump's evaluations grow as users x items while its steps are budgeted.
    max_eval_users: int = 20_000
    targets: str = "model"
    # GraphSAGE with its graph, ID tables and targets sharded across the workers, the edge list
    # never loaded whole (`sharded_job`).
    sharded: bool = False
    gate: GateConfig = field(default_factory=GateConfig)
    checkpoint_every: int = 5
    max_failures: int = 2
    # On a cluster that autoscales, how long to wait for the nodes a bump's workers need.
    placement_timeout_s: float = 900.0
    run_name: str | None = None
    fault: FaultInjection | None = None

    def __post_init__(self) -> None:
        if self.spec is not None:  # a spec names its family: the job trains that family
            named = get_family(self.model).name if self.model else self.spec.family
            if named != self.spec.family:
                raise ConfigError(f"--spec is a {self.spec.family} spec but --model is "
                                  f"{self.model!r}")
            if self.model is None:
                object.__setattr__(self, "model", self.spec.family)
        if self.num_workers < 0:
            raise ConfigError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker}")
        if not 0.0 < self.holdout < 0.5:
            raise ConfigError(f"--holdout must be in (0, 0.5), got {self.holdout}")
        if self.holdout_days <= 0:
            raise ConfigError(f"--holdout-days must be positive, got {self.holdout_days}")
        if self.max_eval_users < 0:
            raise ConfigError(f"--max-eval-users must be >= 0, got {self.max_eval_users}")
        if self.targets not in TARGET_SOURCES:
            raise ConfigError(f"--targets must be one of {TARGET_SOURCES}, got {self.targets!r}")
        if self.sharded and self.num_workers < 1:
            raise ConfigError("--sharded trains on Ray Train workers: set --num-workers >= 1")
        if self.sharded and self.use_gpu:
            raise ConfigError("--sharded exchanges ID rows over gloo on the CPU: drop --use-gpu")
        if not 0 <= self.placement_timeout_s < float("inf"):
            raise ConfigError(f"--placement-timeout must be a number of seconds >= 0, got "
                              f"{self.placement_timeout_s}")
        if self.checkpoint_every < 1:
            raise ConfigError("--checkpoint-every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainJobConfig:
        data = dict(data)
        if data.get("spec"):
            data["spec"] = get_family(data.get("model")).spec_from_dict(data["spec"])
        data["train"] = TrainConfig(**data["train"])
        data["gate"] = GateConfig(**data["gate"])
        data["fault"] = FaultInjection(**data["fault"]) if data.get("fault") else None
        return cls(**data)
