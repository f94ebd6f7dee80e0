"""What a Ray task may hold: its share of a node's Ray `memory` resource, the headroom a plan
keeps above what it counts, and the error that says what helps when a plan does not fit (its
remedies name `bc-ray refresh`'s options; the sharded bump's workers have their own plan,
`train/worker_memory`). Plans are also bounded in their number of node ranges
(`MAX_PARTITIONS`).
"""

from __future__ import annotations

from bc_ray.exceptions import ConfigError

HEADROOM = 2.0  # a process's peak against what it must hold
MAX_PARTITIONS = 256  # the most node ranges a plan makes (a refresh stage: P x (P + 3) objects)
MB = 1 << 20


def slot_memory(cpus_per_task: float, nodes: list[dict]) -> int | None:
    """The memory a task of `cpus_per_task` CPUs gets on the roomiest alive node: its share of
    the node's, by CPUs; None when no node states its memory."""
    best = None
    for node in nodes:
        resources = node.get("Resources", {})
        if not node.get("Alive") or "memory" not in resources or not resources.get("CPU"):
            continue
        share = resources["memory"] * min(1.0, cpus_per_task / resources["CPU"])
        best = share if best is None else max(best, share)
    return None if best is None else int(best)


def too_big(what: str, need: int, budget: int, adapt: bool) -> ConfigError:
    """The error for a plan whose `what` must hold more than a task gets, saying what helps."""
    remedy = ("give the nodes more memory, or the tasks more CPUs (--cpus-per-task)" if adapt
              else "use more --partitions, or leave it out to have the count chosen")
    return ConfigError(f"{what} must hold {need / MB:,.2f} MB ({HEADROOM:g}x that with "
                       f"headroom); a task here gets {budget / MB:,.2f} MB: {remedy}")
