"""The pre-checks that refuse training before it starts, on a cluster whose autoscaler (v2, with
Ray's fake node provider) may start GPU nodes that are not up yet: they plan by every node it
may start, not by the head alone. Run by test_autoscaling.py in its own process (the test
session's shared cluster stays up); prints one JSON line.

    python -m tests.cluster.autoscaling
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import ray
from ray.cluster_utils import AutoscalingCluster

from bc_ray.cluster import schedulable_nodes, total_resources
from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import BcRayError
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.runs import check_placement
from bc_ray.train.worker_memory import plan_worker_memory

GB = 1 << 30
GPU_NODE = {"resources": {"CPU": 2, "GPU": 1, "memory": 4 * GB}, "node_config": {},
            "min_workers": 0, "max_workers": 2}


def _refusal(check) -> str | None:
    try:
        check()
    except BcRayError as error:
        return str(error)
    return None


def main() -> None:
    cluster = AutoscalingCluster(head_resources={"CPU": 1},
                                 worker_node_types={"gpu_node": GPU_NODE}, autoscaler_v2=True)
    cluster.start()
    report: dict = {}
    try:
        ray.init("auto")
        deadline = time.time() + 60
        while not any(n.get("NodeType") == "gpu_node" for n in schedulable_nodes()):
            if time.time() > deadline:
                raise RuntimeError("the autoscaler never reported its config")
            time.sleep(0.5)
        report["alive_gpus"] = ray.cluster_resources().get("GPU", 0.0)
        report["totals"] = total_resources(schedulable_nodes())
        job = TrainJobConfig(store="file:///unused", num_workers=2, use_gpu=True)
        report["two_gpu_workers"] = _refusal(lambda: check_placement(job))
        report["three_gpu_workers"] = _refusal(
            lambda: check_placement(TrainJobConfig(store="file:///unused", num_workers=3,
                                                   use_gpu=True)))
        # Two sharded workers of ~0.9 GB at their peaks fit the GPU nodes' 4 GB each; of ~5 GB
        # they fit none.
        owners = RowOwners.balanced(np.full(1000, 2), np.full(100, 20), 2, 0)
        degrees = np.concatenate([np.full(1000, 2), np.full(100, 20)])
        plan = plan_worker_memory(owners, degrees, 900_000, 1.0, schedulable_nodes(), False)
        report["sharded_request"] = plan.request
        report["sharded_too_big"] = _refusal(lambda: plan_worker_memory(
            owners, degrees, 5_000_000, 1.0, schedulable_nodes(), False))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main()
