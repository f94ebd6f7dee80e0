"""Typed configuration of a refresh job."""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError

MODES = ("auto", "full", "incremental")
INFERENCE = ("layerwise", "sampled")


@dataclass(frozen=True)
class RefreshConfig:
    store: str
    mode: str = "auto"  # auto: incremental when the previous refresh allows it, else full
    inference: str = "layerwise"
    fanout: int = 10  # for sampled inference
    num_actors: int = 2  # inference tasks at once (the name predates tasks: CLI compatibility)
    cpus_per_actor: float = 1.0  # per inference task
    use_gpu: bool = False
    block_nodes: int = 32_768  # nodes per chunk: one output block each
    rows_per_file: int = 1_000_000  # at most, per file: the last stage has a task per file
    # Chaos testing: "kill-before-commit" SIGKILLs the driver after every file is written and
    # before the log entry that would publish them.
    chaos: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"refresh mode {self.mode!r} is not one of {MODES}")
        if self.inference not in INFERENCE:
            raise ConfigError(f"inference {self.inference!r} is not one of {INFERENCE}")
        if self.num_actors < 1 or self.block_nodes < 1:
            raise ConfigError("--num-actors and --block-nodes must be >= 1")
        if self.chaos not in (None, "kill-before-commit"):
            raise ConfigError(f"unknown chaos action {self.chaos!r}")
        if self.inference == "sampled" and self.mode == "incremental":
            raise ConfigError("incremental refresh needs layer-wise inference")
