"""A sharded bump's plan of its workers' memory: what each holds, counted node by node as its
rows hold them; how many the nodes Ray reports can place; and a cluster that cannot place every
worker refused with what helps, where one that can has each worker ask for its peak."""

import numpy as np
import pytest

from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import ConfigError
from bc_ray.train.worker_memory import (
    PEAK_OVER_STATE,
    placeable,
    plan_worker_memory,
    worker_state_bytes,
)

GB = 1 << 30
USERS, ITEMS, ROW = 40, 15, 100


def _degrees() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.concatenate([rng.integers(0, 20, USERS), rng.integers(0, 60, ITEMS)])


def _owners(workers: int) -> RowOwners:
    degrees = _degrees()
    return RowOwners.balanced(degrees[:USERS], degrees[USERS:], workers, ROW)


def _node(cpus: float, memory: float | None, alive: bool = True) -> dict:
    resources = {"CPU": cpus, **({} if memory is None else {"memory": memory})}
    return {"Alive": alive, "Resources": resources}


def test_a_workers_state_is_its_nodes_rows_and_their_edge_ends():
    degrees = _degrees()
    owners = _owners(3)
    state = worker_state_bytes(owners, degrees, ROW)
    for rank in range(3):
        nodes = owners.nodes_of(rank).numpy()
        assert nodes.size == owners.num_rows(rank)
        assert state[rank] == nodes.size * (ROW + 8) + 8 * int(degrees[nodes].sum())
    assert sum(state) == degrees.size * (ROW + 8) + 8 * int(degrees.sum())


def test_workers_are_placed_by_cpus_and_memory_on_alive_nodes():
    nodes = [_node(2, 10 * GB), _node(8, 3 * GB), _node(16, 64 * GB, alive=False)]
    assert placeable(1, 4 * GB, nodes) == 2  # the first node by both; the second by neither
    assert placeable(0.5, 1 * GB, nodes) == 4 + 3
    assert placeable(2, 1 * GB, nodes) == 1 + 3


def test_a_worker_asks_for_its_peak_and_a_cluster_that_cannot_place_them_is_refused():
    owners, degrees = _owners(2), _degrees()
    state = worker_state_bytes(owners, degrees, ROW)
    need = int(PEAK_OVER_STATE * max(state))
    plan = plan_worker_memory(owners, degrees, ROW, 1.0, [_node(2, 2 * need)], aligned=True)
    assert plan.request == need and plan.resources == {"memory": float(need)}
    assert plan.state == tuple(state)
    # Two nodes of one worker's room each place both.
    both = plan_worker_memory(owners, degrees, ROW, 1.0, [_node(1, need)] * 2, aligned=False)
    assert both.request == need

    # Short of every worker's peak together: no count of workers helps, so none is offered.
    together = PEAK_OVER_STATE * sum(state)
    with pytest.raises(ConfigError) as refused:
        plan_worker_memory(owners, degrees, ROW, 1.0, [_node(2, together - 1)], aligned=True)
    message = str(refused.value)
    for said in ("over 2 workers", "its alignment targets", "the workers together peak near",
                 "--id-optimizer rowwise_adagrad", "more memory"):
        assert said in message, said
    assert "--num-workers" not in message
    # Memory enough in all, but no node with one worker's room: smaller workers would fit.
    with pytest.raises(ConfigError) as refused:
        plan_worker_memory(owners, degrees, ROW, 1.0, [_node(1, need - 1)] * 3, aligned=False)
    message = str(refused.value)
    for said in ("can place 0 such worker(s) of 1 CPU", "more, smaller workers (--num-workers",
                 "--id-optimizer rowwise_adagrad"):
        assert said in message, said
    assert "alignment targets" not in message


def test_nodes_that_state_no_memory_ask_for_none():
    owners, degrees = _owners(2), _degrees()
    plan = plan_worker_memory(owners, degrees, ROW, 1.0, [_node(2, None)], aligned=False)
    assert plan.request is None and plan.resources == {}
