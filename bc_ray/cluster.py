"""Connecting to Ray: an existing cluster (address, or RAY_ADDRESS inside `ray job submit`) or a
local one started on demand; and the nodes work may be placed on, an autoscaler's included."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


FAST_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
                    # HAProxy's first start takes over 5 s (Serve's default readiness limit) on
                    # a busy 2-core machine; past the limit Serve kills and restarts it forever.
                    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
                    # A stopping replica stays reachable this long so load balancers can drop
                    # it (default 30 s); Serve's own HAProxy drops it at once, and the 30 s made
                    # every shutdown wait. Raise it when an external load balancer sits in front.
                    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


def enable_fast_ingress() -> None:
    """Ray Serve's HAProxy + direct ingress (feature flags in Ray 2.60): HTTP goes from HAProxy
    straight to the replicas instead of through the Python proxy actor, which halves small-request
    latency. Must be set before the cluster (its Serve controller) starts."""
    for key, value in FAST_INGRESS_ENV.items():
        os.environ.setdefault(key, value)


def connect(address: str | None = None, num_cpus: int | None = None,
            quiet: bool = False) -> None:
    """`quiet` keeps worker logs off the driver's terminal (errors still surface as exceptions)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, logging_level=logging.WARNING)
        return
    # "local" always starts a fresh cluster (pass --address auto to join a running local one).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=not quiet)


UNBOUNDED_NODES = 1 << 20  # a node type an autoscaler may start without a limit


def schedulable_nodes() -> list[dict]:
    """The nodes work may be placed on, as `ray.nodes()` gives them (`Alive`, `Resources`), each
    with a `Count`: where an autoscaler has reported its cluster config (autoscaler v2, as
    KubeRay's and the cluster launcher's run it), every node type at its most (those alive now
    are among them), since a request it can grow into waits for nodes rather than failing;
    otherwise the nodes alive now. Checks that refuse work before it starts (a worker count, a
    worker's memory) plan by these, as Ray Train's own check does."""
    import ray

    types = _autoscaled_node_types()
    if types is not None:
        return types
    return [{**node, "Count": 1} for node in ray.nodes() if node.get("Alive")]


def total_resources(nodes: list[dict]) -> dict[str, float]:
    """Each resource summed over `nodes` (`schedulable_nodes`), counts taken."""
    totals: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.get("Resources", {}).items():
            totals[name] = totals.get(name, 0.0) + amount * node.get("Count", 1)
    return totals


def _autoscaled_node_types() -> list[dict] | None:
    """The autoscaler's node types at their most, or None where it reported none (no autoscaler,
    or v1's, which keeps its config to itself). Ray's own readers of the config (Ray Train's
    resource check, Ray Data's shuffle) go through the same private accessor."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private accessor: without it, plan by the nodes alive
        logger.debug("no autoscaler config readable", exc_info=True)
        return None
    if config is None or not config.node_group_configs:
        return None
    types = []
    for group in config.node_group_configs:
        count = UNBOUNDED_NODES if group.max_count < 0 else int(group.max_count)
        if count:
            types.append({"Alive": True, "NodeType": group.name, "Count": count,
                          "Resources": {k: float(v) for k, v in group.resources.items()}})
    return types
