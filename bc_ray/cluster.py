"""Connecting to Ray: an existing cluster (address, or RAY_ADDRESS inside `ray job submit`) or a
local one started on demand."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


def on_every_node(function: Callable[..., T], *args: Any, timeout_s: float = 120.0
                  ) -> dict[str, tuple[str, T]]:
    """`function(*args)` run by a zero-CPU task pinned to each alive node of the connected
    cluster that can run work (CPUs or GPUs): node ID -> (its address, the answer). What only
    a node's own environment (its image, its PYTHONPATH) can answer. A node that dies or does
    not answer within `timeout_s` is left out, with a warning: it runs no work either."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(function)
    nodes = [node for node in ray.nodes() if node.get("Alive")
             and (node["Resources"].get("CPU") or node["Resources"].get("GPU"))]
    refs = {node["NodeID"]: remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(*args) for node in nodes}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    answers = {}
    for node in nodes:
        ref, address = refs[node["NodeID"]], node["NodeManagerAddress"]
        try:
            if ref not in ready:
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            answers[node["NodeID"]] = (address, ray.get(ref))
        except (ray.exceptions.RayError, TimeoutError) as error:
            logger.warning("node %s (%s) left out: %s", node["NodeID"][:12], address,
                           " ".join(str(error).split())[:200])
    return answers


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
