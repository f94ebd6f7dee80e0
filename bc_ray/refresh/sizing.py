"""What a refresh must hold, what the cluster gives it, and the number of node ranges that makes
the first fit the second (`bc-ray refresh` without `--partitions`).

The unpartitioned refresh's tasks map the whole CSR (8 bytes per directed edge, two per edge,
and a row pointer per node) and two whole layers (float32) from their node's object store:
`16 E + N (8 + 8 d)` bytes, held once per node; the driver holds as much while it builds them,
and the layer builder one more layer. A partitioned task holds, privately, its range's
share of the CSR and of the layers and its halo's node ids (at most one per edge end of its
rows, and never more than every node); the halo's rows it reads in place from the object store
(`halo.py`), pages its node holds once for every task that reads them. Before that, the task
that builds a range's graph holds its edge ends a few times over while it sorts them
(`BUILD_BYTES_PER_END`), the most of a range's tasks unless its rows are few and wide (the
tasks that read the edge files for it, `edge_shuffle.py`, hold a few flushes). A node
offers its Ray `memory` resource (what KubeRay sets from a pod's memory, or `ray start
--memory`); a task of `c` CPUs gets `c / CPUs` of it. A plan fits when twice what it must hold
is within that (measured peaks ran at 1.5x: RESULTS §10).
"""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError
from bc_ray.partition.task_memory import HEADROOM, MAX_PARTITIONS, MB, too_big
from bc_ray.store.state import StoreState, VersionRecord

BUILD_BYTES_PER_END = 48  # a range graph's build: its ends' keys copied, sorted, kept
SPLIT_BYTES_PER_NODE = 5  # and its columns' renumbering: a position and a flag per node


@dataclass(frozen=True)
class GraphSize:
    """A snapshot's size as its log record gives it (no file is read)."""

    edges: int
    nodes: int
    dim: int  # the widest layer

    @classmethod
    def of(cls, state: StoreState, version: VersionRecord) -> GraphSize | None:
        stats = state.snapshot().stats
        if not {"users", "items", "edges"} <= set(stats):
            return None
        edges = int(stats.get("visible_edges", stats["edges"]))
        dim = int(version.spec.get("hidden_dim", version.dim))
        return cls(edges, int(stats["users"]) + int(stats["items"]), max(dim, version.dim))

    def whole_bytes(self) -> int:
        """The whole CSR and two whole layers: what the unpartitioned refresh's tasks map from
        their node's object store."""
        return 16 * self.edges + self.nodes * (8 + 8 * self.dim)

    def unpartitioned_bytes(self) -> int:
        """What the unpartitioned refresh holds on one node: the object store's copy of the
        graph and two layers, the driver's own while it builds them, and the layer builder's
        layer."""
        return 2 * self.whole_bytes() + 4 * self.dim * self.nodes

    def task_bytes(self, parts: int) -> int:
        """What a task of an average range must hold over `parts` ranges."""
        return range_bytes(2 * self.edges // parts, self.nodes // parts, self.dim, self.nodes)


def build_bytes(edge_ends: int, rows: int, nodes: int) -> int:
    """What the task that builds a range's graph holds: its ends a few times over while they
    are sorted, its row pointers, and a table over every node to renumber its columns. The
    pieces its keys came in stay mapped from the object store until it ends (a node's cost,
    8 bytes an end): it copies them, since it sorts in place and they are read-only there."""
    return BUILD_BYTES_PER_END * edge_ends + 8 * rows + SPLIT_BYTES_PER_NODE * nodes


def range_bytes(edge_ends: int, rows: int, dim: int, nodes: int) -> int:
    """The most one of a range's tasks holds: the build of its graph (`build_bytes`), or a
    layer (its CSR rows, its halo's node ids, at most one per edge end and never more than
    every node, and its own rows in and out; the halo's rows are read in place)."""
    build = build_bytes(edge_ends, rows, nodes)
    halo = min(nodes, edge_ends)
    layer = 8 * edge_ends + 8 * rows + 8 * halo + 2 * rows * 4 * dim
    return max(build, layer)


def node_memory(nodes: list[dict]) -> int | None:
    """The roomiest alive node's Ray `memory` resource (`ray.nodes()`); None when none states
    it."""
    sizes = [node["Resources"]["memory"] for node in nodes
             if node.get("Alive") and "memory" in node.get("Resources", {})]
    return int(max(sizes)) if sizes else None


def node_store(nodes: list[dict]) -> int | None:
    """The roomiest alive node's object store (`object_store_memory`); None when none states
    it."""
    sizes = [node["Resources"]["object_store_memory"] for node in nodes
             if node.get("Alive") and "object_store_memory" in node.get("Resources", {})]
    return int(max(sizes)) if sizes else None


def unpartitioned_fits(size: GraphSize, node_budget: int, store_budget: int | None) -> bool:
    """The whole graph, with headroom, in the largest node's memory, and its object-store copy
    in that node's object store."""
    return (HEADROOM * size.unpartitioned_bytes() <= node_budget
            and (store_budget is None or size.whole_bytes() <= store_budget))


def choose_partitions(size: GraphSize, node_budget: int, slot_budget: int,
                      store_budget: int | None = None) -> int:
    """0 (unpartitioned) while the whole graph and two layers fit a node, else the fewest
    ranges whose average task fits a task's share."""
    if unpartitioned_fits(size, node_budget, store_budget):
        return 0
    for parts in range(2, MAX_PARTITIONS + 1):
        if HEADROOM * size.task_bytes(parts) <= slot_budget:
            return parts
    raise too_big(f"a refresh task of {size.edges:,} edges over {MAX_PARTITIONS} node ranges",
                  size.task_bytes(MAX_PARTITIONS), slot_budget, adapt=True)


def check_unpartitioned(size: GraphSize, node_budget: int, slot_budget: int,
                        store_budget: int | None = None) -> None:
    """Refuse `--partitions 0` on nodes that cannot hold the whole graph and two layers."""
    if unpartitioned_fits(size, node_budget, store_budget):
        return
    parts = choose_partitions(size, node_budget, slot_budget, store_budget)
    store = "" if store_budget is None else f" and {store_budget / MB:,.2f} MB of object store"
    raise ConfigError(f"the unpartitioned refresh holds the whole graph and two layers on one "
                      f"node, {size.unpartitioned_bytes() / MB:,.2f} MB ({HEADROOM:g}x that with "
                      f"headroom; {size.whole_bytes() / MB:,.2f} MB of it in the object store); "
                      f"the largest node here has {node_budget / MB:,.2f} MB{store}: leave "
                      f"--partitions out to have the count chosen (about {parts} node ranges "
                      "by this estimate)")
