"""What a refresh measured and wrote, as typed results: a `StageResult` per stage, a
`WrittenFile` per Parquet file a task of the final stage wrote (returned by the sink's write
tasks, as Ray's Iceberg sink returns its data files), and the `RefreshOutcome` they add up to.

`RefreshOutcome.stats` is the one place they become the refresh's stats dict: the log records it
with each table (without `rows`), the CLI prints it, and the lifecycle and benchmarks read it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bc_ray.store.state import FileRecord
from bc_ray.store.tables import ENTITIES, TableFiles

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """One stage: the nodes it covered, its wall-clock seconds and, for stages of Ray Data tasks,
    their compute seconds per task slot (start-up and scheduling excluded)."""

    label: str  # layer0, layer1, ..., and the final stage's "layer<L>+write" or "sampled+write"
    nodes: int
    seconds: float
    compute_seconds: float | None = None  # None: computed by the driver

    def logged(self) -> StageResult:
        """This stage, said in the job's log as it ends: a long refresh's progress."""
        compute = ("" if self.compute_seconds is None else
                   f"; {self.compute_seconds:.2f}s of compute per task slot")
        logger.info("%s: %d nodes in %.1fs (%.0f nodes/s%s)", self.label, self.nodes,
                    self.seconds, self.nodes / self.seconds if self.seconds else 0.0, compute)
        return self

    def to_dict(self) -> dict:
        numbers: dict = {"nodes": int(self.nodes), "seconds": round(self.seconds, 3)}
        if self.compute_seconds is not None:
            numbers["compute_seconds"] = round(self.compute_seconds, 3)
        return numbers


@dataclass(frozen=True)
class WrittenFile:
    """One Parquet file a task of the final stage wrote (not visible before the commit)."""

    entity: str
    path: str
    size: int
    sha256: str
    rows: int
    compute_seconds: float  # the task's compute time for these rows
    worker_node: str

    @property
    def record(self) -> FileRecord:
        return FileRecord(self.path, self.size, self.sha256)


@dataclass(frozen=True)
class RefreshOutcome:
    """A refresh of one version, published (or about to be) under `refresh_id`."""

    version: int
    refresh_id: str
    mode: str
    reason: str
    inference: str
    nodes: int
    inner: tuple[StageResult, ...]  # layer0..layer<L-1> (none for sampled inference); a
    # partitioned refresh first has "ranges": the plan and the range graphs built
    affected_nodes: int | None  # None: sampled inference (every node, not reported)
    final: StageResult
    files: tuple[WrittenFile, ...]
    seconds: float  # the whole job up to the commit
    partitions: dict | None = None  # a partitioned refresh's ranges, hubs and halos

    @property
    def rows(self) -> dict[str, int]:
        return {e: sum(f.rows for f in self.files if f.entity == e) for e in ENTITIES}

    def records(self, entity: str) -> list[FileRecord]:
        return [f.record for f in self.files if f.entity == entity]

    @property
    def worker_nodes(self) -> list[str]:
        return sorted({f.worker_node for f in self.files})

    @property
    def stats(self) -> dict:
        """The refresh's numbers by name, in the order (and with the rounding) that the log,
        the CLI's output and its readers have always had."""
        stats: dict = {"mode": self.mode, "reason": self.reason, "inference": self.inference,
                       "nodes": self.nodes}
        stats.update((stage.label, stage.to_dict()) for stage in self.inner)
        if self.affected_nodes is not None:
            stats["affected_nodes"] = self.affected_nodes
        stats[self.final.label] = self.final.to_dict()
        stats["rows"] = self.rows
        stats["worker_nodes"] = self.worker_nodes
        affected = self.nodes if self.affected_nodes is None else self.affected_nodes
        stats["affected_fraction"] = round(affected / self.nodes, 4)
        if self.partitions is not None:
            stats["partitions"] = self.partitions
        stats["seconds"] = round(self.seconds, 3)
        stats["rows_per_second"] = round(sum(self.rows.values()) / stats["seconds"], 1)
        return stats

    def tables(self, dim: int, caches: dict[str, dict[str, FileRecord]] | None = None
               ) -> list[TableFiles]:
        """The user and item tables its files make, as one log entry publishes them."""
        return [TableFiles(e, self.records(e), self.rows[e], dim, stats=self.table_stats(),
                           cache=(caches or {}).get(e, {})) for e in ENTITIES]

    def table_stats(self) -> dict:
        """What the log records with each entity's table: the stats without the row counts
        (each table has its own)."""
        return {k: v for k, v in self.stats.items() if k != "rows"}
