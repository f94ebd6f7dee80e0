"""The pre-checks that refuse training before it starts, on a cluster whose autoscaler may
start GPU nodes that are not up yet: they plan by every node it may start, not by the nodes
alive. The cluster is a real local one; its autoscaler is stood in for by what autoscaler v2
reports to the GCS, its cluster config (a `ClusterConfig` in the GCS's key-value store, where
Ray Train's own resource check reads it too). Ray's fake autoscaling cluster is not used: its
start and stop run `ray stop --force`, which would stop the test session's cluster. Run by
test_autoscaling.py in its own process; prints one JSON line.

    python -m tests.cluster.autoscaling
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import ray
from ray.core.generated import autoscaler_pb2
from ray.experimental.internal_kv import _internal_kv_put

from bc_ray.cluster import schedulable_nodes, total_resources
from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import BcRayError
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.runs import check_placement
from bc_ray.train.worker_memory import plan_worker_memory

GB = 1 << 30


def _report_config() -> None:
    """What autoscaler v2 reports: a 1-CPU head, and up to two GPU nodes of 2 CPUs and 4 GB."""
    config = autoscaler_pb2.ClusterConfig()
    for name, resources, most in (("head", {"CPU": 1}, 1),
                                  ("gpu_node", {"CPU": 2, "GPU": 1, "memory": 4 * GB}, 2)):
        group = config.node_group_configs.add(name=name, min_count=0, max_count=most)
        group.resources.update(resources)
    _internal_kv_put(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, config.SerializeToString(),
                     overwrite=True, namespace=ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE)


def _refusal(check) -> str | None:
    try:
        check()
    except BcRayError as error:
        return str(error)
    return None


def main() -> None:
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR)
    report: dict = {}
    try:
        report["alive"] = total_resources(schedulable_nodes())  # no autoscaler yet
        report["refused_alive"] = _refusal(lambda: check_placement(TrainJobConfig(
            store="file:///unused", num_workers=2, use_gpu=True, cpus_per_worker=0.5)))
        _report_config()
        report["types"] = sorted(n["NodeType"] for n in schedulable_nodes())
        report["totals"] = total_resources(schedulable_nodes())
        report["two_gpu_workers"] = _refusal(lambda: check_placement(
            TrainJobConfig(store="file:///unused", num_workers=2, use_gpu=True)))
        report["three_gpu_workers"] = _refusal(lambda: check_placement(
            TrainJobConfig(store="file:///unused", num_workers=3, use_gpu=True)))
        # Two sharded workers of ~0.9 GB at their peaks fit the GPU nodes' 4 GB each; of ~5 GB
        # they fit none.
        users, items = np.full(1000, 2), np.full(100, 20)
        owners = RowOwners.balanced(users, items, 2, 0)
        degrees = np.concatenate([users, items])
        plan = plan_worker_memory(owners, degrees, 900_000, 1.0, schedulable_nodes(), False)
        report["sharded_request"] = plan.request
        report["sharded_too_big"] = _refusal(lambda: plan_worker_memory(
            owners, degrees, 5_000_000, 1.0, schedulable_nodes(), False))
    finally:
        ray.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main()
