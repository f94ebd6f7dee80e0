"""Whether a job's workers can be placed: node by node (a worker sits on one node), and, on a
cluster with no autoscaler, a bump its nodes cannot hold, or a refresh none of whose tasks they
can, refused at once, in words, as an error the same command would meet again (exit 2). The
autoscaling side: tests/cluster."""

import pytest
import ray

from bc_ray.exceptions import PlacementError, exit_status
from bc_ray.placement import Placement, Workers, autoscaler_running, placeable
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import check_task_placement
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.runs import check_placement, worker_resources


def _node(alive: bool = True, **resources: float) -> dict:
    return {"Alive": alive, "Resources": resources}


def test_workers_are_counted_node_by_node():
    nodes = [_node(CPU=3), _node(CPU=3), _node(alive=False, CPU=64)]
    assert placeable({"CPU": 2}, nodes) == 2  # not 3: the cluster's 6 CPUs are on two nodes
    assert placeable({"CPU": 1.5}, nodes) == 4
    assert placeable({"CPU": 1, "GPU": 1}, nodes) == 0
    assert placeable({"CPU": 1, "GPU": 1}, nodes + [_node(CPU=8, GPU=2)]) == 2
    assert placeable({"CPU": 0.5, "memory": 3 * 2**30},
                     [_node(CPU=4, memory=7 * 2**30)]) == 2


def test_what_a_worker_asks_for_is_said_in_its_units():
    said = Workers(3, {"CPU": 1.5, "memory": 3 * 2**30}).said()
    assert said == "3 worker(s) of 1.5 CPU, 3,072 MB memory"
    assert Workers(2, {"CPU": 1}, "task").said() == "2 task(s) of 1 CPU"
    gpu = TrainJobConfig(store="file:///x", num_workers=2, use_gpu=True, cpus_per_worker=4)
    assert worker_resources(gpu) == {"CPU": 4, "GPU": 1.0}


def test_without_an_autoscaler_a_bump_the_nodes_cannot_hold_is_refused_at_once(ray_cluster):
    assert not autoscaler_running()  # the test cluster: ray.init, no autoscaling config
    cpus = ray.cluster_resources()["CPU"]
    with Placement(timeout_s=600) as placement:
        assert placement.wait(Workers(2, {"CPU": 1}))
        assert not placement.wait(Workers(1, {"CPU": cpus + 1}))  # no waiting out the 600 s
        with pytest.raises(PlacementError, match="no autoscaler is asked") as refused:
            check_placement(TrainJobConfig(store="file:///x", num_workers=int(cpus) + 1),
                            placement)
        assert exit_status(refused.value) == 2
        with pytest.raises(PlacementError, match="needs 1 GPUs; the cluster has 0"):
            check_placement(TrainJobConfig(store="file:///x", num_workers=1, use_gpu=True),
                            placement)
        # A refresh needs one node that can run a task; as many as --num-tasks are not needed.
        check_task_placement(RefreshConfig(store="file:///x", num_tasks=int(cpus) + 1),
                             placement)
        with pytest.raises(PlacementError, match="no node of the cluster can run a refresh "
                                                 f"task of {cpus + 1:g} CPU") as refused:
            check_task_placement(RefreshConfig(store="file:///x", cpus_per_task=cpus + 1),
                                 placement)
        assert exit_status(refused.value) == 2
