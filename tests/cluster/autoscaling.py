"""A bump on a cluster that autoscales (`v1`): its head has 1 CPU and no worker node, and Ray's
own autoscaler (v1: KubeRay's default) starts nodes of 2 CPUs, at most 2, and one stating a GPU,
as local raylets (its fake multi-node provider). A bump of 2 workers x 2 CPUs must ask it for
them, wait and train; one of 3 such workers, more than its node types can ever hold, must give
up after --placement-timeout as a temporary error, its request standing while it waits; a
`--use-gpu` worker asked for must start the GPU node; once the idle nodes are gone, a refresh of
2-CPU tasks must wait for nodes to run them. Each withdraws its request when it ends.

`v2-readonly`: a head running autoscaler v2 with no cluster config (KubeRay's without
autoscaling), whose monitor only mirrors the nodes: a bump it cannot hold is refused as soon as
the monitor reports that no node type can, not after --placement-timeout.
(v2 with the fake provider cannot start here: the wheel lacks the provider's default config.)

Run by test_autoscaling.py in its own process (the test session's shared cluster stays up).
Prints one JSON line: what each bump did, and the cluster's nodes.

    python -m tests.cluster.autoscaling file:///tmp/store v1|v2-readonly
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

# The provider starts its nodes only in a process that says the cluster is fake, and the
# autoscaler's round is 5 s by default.
os.environ.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                  RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")

import ray  # noqa: E402
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.exceptions import PlacementError, exit_status  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.placement import (  # noqa: E402
    Placement,
    Workers,
    autoscaler_running,
)
from bc_ray.refresh.config import RefreshConfig  # noqa: E402
from bc_ray.refresh.job import run_refresh  # noqa: E402
from bc_ray.store.snapshots import publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.train.config import GateConfig, TrainJobConfig  # noqa: E402
from bc_ray.train.job import run_training  # noqa: E402
from bc_ray.train.runs import worker_resources  # noqa: E402
from tests.conftest import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REQUEST_KEY = b"autoscaler_resource_request"  # where request_resources leaves its bundles


def autoscaling_config(gcs_address: str) -> dict:
    """A cluster.yaml for the fake provider: a 1-CPU head, up to two 2-CPU workers and a GPU
    one."""
    empty = ("initialization_commands", "setup_commands", "head_setup_commands",
             "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
             "cluster_synced_files", "rsync_exclude", "rsync_filter")
    provider = {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                "disable_node_updaters": True, "disable_launch_config_check": True}
    return {
        "cluster_name": "autoscaling-test", "max_workers": 3, "idle_timeout_minutes": 0.1,
        "upscaling_speed": 1.0, "auth": {"ssh_user": "ray"}, "file_mounts": {},
        "file_mounts_sync_continuously": False, **{key: [] for key in empty},
        "provider": provider, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2, "object_store_memory": 200 * 2**20},
                           "node_config": {}, "min_workers": 0, "max_workers": 2},
            # A GPU the raylet states (none is used): cluster.yaml's gpu_worker, scaled to 0.
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200 * 2**20},
                           "node_config": {}, "min_workers": 0, "max_workers": 1}},
    }


def requested() -> list[dict]:
    """The bundles autoscaler v1 is asked for now (`request_resources`, by whoever)."""
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(REQUEST_KEY) or b"[]")


def job(uri: str, workers: int, timeout_s: float) -> TrainJobConfig:
    return TrainJobConfig(
        store=uri, num_workers=workers, cpus_per_worker=2, placement_timeout_s=timeout_s,
        spec=VersionSpec(hidden_dim=16), gate=GateConfig(min_recall=0.0),
        train=TrainConfig(epochs=2, batch_size=512, eval_every=2, warmup_epochs=0))


def publish(uri: str) -> None:
    raw = generate(SyntheticConfig(num_users=300, num_items=100, num_edges=4000))
    publish_snapshot(Store(uri), build_snapshot(raw).with_cutoff(0.8))


def too_many(uri: str) -> dict:
    """3 workers of 2 CPUs, which the node types can never hold: the request stands while the
    bump waits (as read meanwhile), and is withdrawn when it gives up."""
    during: list = []

    def read_while_waiting() -> None:
        deadline = time.time() + 6
        while time.time() < deadline:
            during.append(requested())
            if during[-1]:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=read_while_waiting)
    sampler.start()
    try:
        run_training(job(uri, workers=3, timeout_s=6))
        return {"raised": None}
    except PlacementError as error:
        sampler.join()
        return {"raised": str(error), "exit_status": exit_status(error),
                "request_during": during[-1], "request_after": requested()}


def bumps(uri: str) -> dict:
    deadline = time.time() + 60
    while not autoscaler_running():  # its first round reports
        if time.time() > deadline:
            raise RuntimeError("the autoscaler never reported")
        time.sleep(0.5)
    report: dict = {"cpus_before": ray.cluster_resources().get("CPU"),
                    "head": ray.get_runtime_context().get_node_id()}
    publish(uri)
    started = time.monotonic()
    trained = run_training(job(uri, workers=2, timeout_s=240))
    report["train"] = {"status": trained.status, "seconds": time.monotonic() - started,
                       "worker_nodes": trained.metrics.get("worker_nodes"),
                       "request_after": requested()}
    report["nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    report["too_many"] = too_many(uri)
    # The GPU workers a `--use-gpu` bump asks for start as they are asked (no bump runs: the
    # node's GPU is only stated).
    gpu = TrainJobConfig(store=uri, num_workers=1, use_gpu=True)
    with Placement(timeout_s=120) as placement:
        report["gpu"] = {"placed": placement.wait(Workers(1, worker_resources(gpu))),
                         "gpus": ray.cluster_resources().get("GPU", 0.0)}
    report["gpu"]["request_after"] = requested()
    report["refresh"] = refresh_from_zero(uri)
    return report


def refresh_from_zero(uri: str) -> dict:
    """Once the idle nodes are gone, a refresh of 2-CPU tasks waits for the nodes it asks for
    before it sizes itself by them."""
    deadline = time.time() + 120
    while ray.cluster_resources().get("CPU") != 1.0:  # the autoscaler's idle timeout: 6 s
        if time.time() > deadline:
            raise RuntimeError(f"the idle nodes never went: {ray.cluster_resources()}")
        time.sleep(1)
    refreshed = run_refresh(RefreshConfig(store=uri, mode="full", num_tasks=2, cpus_per_task=2,
                                          placement_timeout_s=240))
    return {"rows": refreshed.stats["rows"], "nodes": refreshed.stats["worker_nodes"],
            "request_after": requested()}


def readonly_v2(uri: str) -> dict:
    """Autoscaler v2's monitor on a cluster with no config only mirrors the nodes: asked for
    workers its nodes cannot hold, it reports that no node type can, and the bump is refused
    then (its pods name their node type, as KubeRay's do)."""
    publish(uri)
    time.sleep(6)  # its first rounds report
    report: dict = {"autoscaler": autoscaler_running()}
    try:
        run_training(job(uri, workers=2, timeout_s=240))
    except PlacementError as error:
        report.update(raised=str(error), exit_status=exit_status(error))
    return report


def main(uri: str, mode: str) -> None:
    faulthandler.dump_traceback_later(200)  # where it hangs, if it does, before the timeout
    port = free_port()
    head = {"num_cpus": 1, "object_store_memory": 200 * 2**20, "include_dashboard": False,
            "gcs_server_port": port}
    config = None
    if mode == "v1":
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as config:
            json.dump(autoscaling_config(f"127.0.0.1:{port}"), config)
        head.update(autoscaling_config=config.name, env_vars={
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID})
    else:  # as KubeRay starts a head without autoscaling: every process of it runs v2
        os.environ.update(RAY_enable_autoscaler_v2="1", RAY_NODE_TYPE_NAME="headgroup",
                          RAY_CLOUD_INSTANCE_ID="bc-ray-head-0")
    cluster = Cluster(initialize_head=True, head_node_args=head)
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        report = bumps(uri) if mode == "v1" else readonly_v2(uri)
    finally:
        # The autoscaler's nodes are its children, and outlive the cluster's shutdown.
        started = psutil.Process().children(recursive=True)
        ray.shutdown()
        cluster.shutdown()
        for process in started:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if config is not None:
            os.unlink(config.name)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
