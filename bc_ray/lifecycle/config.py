"""The demo's typed configuration, apart from the demo itself so the CLI reads its defaults
without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError


@dataclass(frozen=True)
class DemoConfig:
    store: str
    dataset: str = "synthetic"
    versions: int = 3
    scale: float = 1.0
    method: str = "bc-aligner"
    model: str = "graphsage"  # the model family (graphsage, sequence, a plug-in)
    num_workers: int = 2
    epochs: int = 30
    hidden: int = 64
    width_step: int = 16
    start: float = 0.5
    step: float = 0.1
    port: int = 8000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.versions < 1:
            raise ConfigError("--versions must be >= 1")
        if self.start + (self.versions + 1) * self.step > 1.0 + 1e-9:
            raise ConfigError(f"{self.versions} versions from t={self.start} in steps of "
                              f"{self.step} need labels past t=1; use fewer versions")
        if self.scale <= 0:
            raise ConfigError("--scale must be positive")

    def time(self, version: int) -> float:
        return round(self.start + version * self.step, 10)
