"""Typed configuration of a refresh job."""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError

MODES = ("auto", "full", "incremental")
WRITE_COST = 16  # writing a row to Parquet, in edges aggregated (measured at 10M edges)
INFERENCE = ("layerwise", "sampled")


@dataclass(frozen=True)
class RefreshConfig:
    store: str
    mode: str = "auto"  # auto: incremental when the previous refresh allows it, else full
    inference: str = "layerwise"
    fanout: int = 10  # for sampled inference
    num_tasks: int = 2  # inference tasks at once (Ray Data task slots)
    cpus_per_task: float = 1.0  # per inference task
    use_gpu: bool = False
    block_nodes: int = 32_768  # nodes per chunk: one output block each
    rows_per_file: int = 1_000_000  # at most, per file: the last stage has a task per file
    # Node ranges of a partitioned layer-wise refresh; 0: unpartitioned; None: chosen from the
    # graph's size and the cluster's memory (sizing.py: unpartitioned whenever it fits).
    partitions: int | None = None
    # On a cluster that autoscales, how long to wait for a node that can run a task.
    placement_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"refresh mode {self.mode!r} is not one of {MODES}")
        if self.inference not in INFERENCE:
            raise ConfigError(f"inference {self.inference!r} is not one of {INFERENCE}")
        if self.num_tasks < 1 or self.block_nodes < 1:
            raise ConfigError("--num-tasks and --block-nodes must be >= 1")
        if not self.cpus_per_task > 0:
            raise ConfigError(f"--cpus-per-task must be positive, got {self.cpus_per_task}")
        if not 0 <= self.placement_timeout_s < float("inf"):
            raise ConfigError(f"--placement-timeout must be a number of seconds >= 0, got "
                              f"{self.placement_timeout_s}")
        if self.partitions is not None and self.partitions < 0:
            raise ConfigError(f"--partitions must be >= 0, got {self.partitions}")
        if self.partitions and self.use_gpu:
            raise ConfigError("--partitions computes on the CPU; leave --use-gpu or "
                              "--partitions out")
        if self.partitions and self.inference != "layerwise":
            raise ConfigError("--partitions splits the layer-wise refresh; it cannot be used "
                              "with --inference sampled")
        if self.inference == "sampled" and self.mode == "incremental":
            raise ConfigError("incremental refresh needs layer-wise inference")

    @property
    def gpus_per_task(self) -> int:
        return 1 if self.use_gpu else 0

    @property
    def task_resources(self) -> dict[str, float]:
        """What each inference or range task asks Ray for."""
        return {"CPU": self.cpus_per_task, **({"GPU": 1.0} if self.use_gpu else {})}
