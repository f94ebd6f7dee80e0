"""What a refresh task must hold, what the cluster gives a task, and the number of node ranges
that makes the first fit the second (`bc-ray refresh` without `--partitions`).

A layer task of the unpartitioned refresh maps the whole CSR (8 bytes per directed edge, two per
edge, and a row pointer per node) and two whole layers (float32): `16 E + N (8 + 8 d)` bytes. A
partitioned task holds its share of those, `(16 E + N (8 + 8 d)) / P`, and its halo, at most
`min(N, 2 E / P)` rows of the previous layer (every edge end of its rows at most once); before
that, the task that builds a range's graph holds its edge ends a few times over while it sorts
them (`BUILD_BYTES_PER_END`), the most of any of a range's tasks on a sparse graph. What a
task may use is the node's Ray `memory` resource (what KubeRay sets from a pod's memory, or
`ray start --memory`) shared by the node's CPUs: a task of `c` CPUs gets `c / CPUs` of it on
the largest node. A plan fits when twice what a task must hold is within that (measured peaks
run at 1.5x what a task must hold: docs/scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError
from bc_ray.store.state import StoreState, VersionRecord

HEADROOM = 2.0  # a process's peak against what it must hold
BUILD_BYTES_PER_END = 48  # a range graph's build: the ends as read, their keys, sorted, kept
MAX_PARTITIONS = 4096
MB = 1 << 20


@dataclass(frozen=True)
class GraphSize:
    """A snapshot's size as its log record gives it (no file is read)."""

    edges: int
    nodes: int
    dim: int  # the widest layer (GraphSAGE's hidden width)

    @classmethod
    def of(cls, state: StoreState, version: VersionRecord) -> GraphSize | None:
        stats = state.snapshot().stats
        if not {"users", "items", "edges"} <= set(stats):
            return None
        edges = int(stats.get("visible_edges", stats["edges"]))
        dim = int(version.spec.get("hidden_dim", version.dim))
        return cls(edges, int(stats["users"]) + int(stats["items"]), max(dim, version.dim))

    def task_bytes(self, parts: int = 0) -> int:
        """What one task must hold: a layer task unpartitioned (0), or over `parts` ranges the
        more of a range's layer task and the task that builds its graph (average ranges)."""
        whole = 16 * self.edges + self.nodes * (8 + 8 * self.dim)
        if not parts:
            return whole
        halo = min(self.nodes, 2 * self.edges // parts)
        layer = whole // parts + 4 * self.dim * halo
        return max(layer, build_bytes(2 * self.edges // parts, self.nodes // parts))


def build_bytes(edge_ends: int, rows: int) -> int:
    """What the task building a range's graph holds (besides the batch it is reading)."""
    return BUILD_BYTES_PER_END * edge_ends + 8 * rows


def slot_memory(cpus_per_task: float, nodes: list[dict]) -> int | None:
    """The memory a task of `cpus_per_task` CPUs gets on the roomiest alive node (`ray.nodes()`);
    None when no node states its memory."""
    best = None
    for node in nodes:
        resources = node.get("Resources", {})
        if not node.get("Alive") or "memory" not in resources or not resources.get("CPU"):
            continue
        share = resources["memory"] * min(1.0, cpus_per_task / resources["CPU"])
        best = share if best is None else max(best, share)
    return None if best is None else int(best)


def choose_partitions(size: GraphSize, budget: int) -> int:
    """0 (unpartitioned) when it fits `budget`, else the fewest ranges that do."""
    if HEADROOM * size.task_bytes() <= budget:
        return 0
    for parts in range(2, MAX_PARTITIONS + 1):
        if HEADROOM * size.task_bytes(parts) <= budget:
            return parts
    raise ConfigError(f"a refresh task of {size.edges:,} edges and {size.nodes:,} nodes needs "
                      f"{size.task_bytes(MAX_PARTITIONS) / MB:,.1f} MB even over "
                      f"{MAX_PARTITIONS} node ranges; a task here gets {budget / MB:,.1f} MB: "
                      "give the nodes more memory or the tasks more CPUs (--cpus-per-task)")


def check_fits(size: GraphSize, budget: int, parts: int) -> None:
    """Refuse a plan whose tasks cannot fit, naming what would."""
    need = HEADROOM * size.task_bytes(parts)
    if need <= budget:
        return
    what = "the unpartitioned refresh" if not parts else f"{parts} node ranges"
    raise ConfigError(f"with {what} a refresh task must hold {size.task_bytes(parts) / MB:,.1f} "
                      f"MB ({HEADROOM:g}x that with headroom); a task here gets "
                      f"{budget / MB:,.1f} MB: leave --partitions out to have the count chosen "
                      f"(about {choose_partitions(size, budget)} node ranges by this estimate)")
