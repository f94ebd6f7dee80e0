"""How many node ranges a refresh needs (no Ray): what it must hold against what the nodes
offer."""

import pytest

from bc_ray.exceptions import ConfigError
from bc_ray.partition.task_memory import slot_memory
from bc_ray.refresh.sizing import (
    GraphSize,
    check_unpartitioned,
    choose_partitions,
    node_memory,
    range_bytes,
)

SIZE = GraphSize(edges=10_000_000, nodes=958_568, dim=64)


def test_a_task_must_hold_less_as_ranges_are_added():
    whole = SIZE.whole_bytes()
    assert whole == 16 * 10_000_000 + 958_568 * (8 + 8 * 64)  # the CSR and two layers
    # On one node: the object store's copy, the driver's while it builds it, the builder's layer.
    assert SIZE.unpartitioned_bytes() == 2 * whole + 4 * 64 * 958_568
    held = [SIZE.task_bytes(parts) for parts in (2, 4, 8, 32)]
    assert all(a > b for a, b in zip(held, held[1:]))
    # ~1/P: the halo's rows are read in place from the object store, so what falls slower
    # (at most a node id per halo row, the build's table over every node) is small.
    assert held[2] <= 1.1 * held[0] * 2 / 8
    # The most a range's tasks hold: the build of its graph, which holds its edge ends several
    # times over, unless its rows are few and wide (a layer's rows in and out).
    assert range_bytes(1000, 10, 64, 10**3) == 48 * 1000 + 8 * 10 + 5 * 10**3
    assert range_bytes(1000, 1000, 64, 10**3) == (8 * 1000 + 8 * 1000 + 1000 * 8
                                                  + 2 * 1000 * 4 * 64)  # halo ids, no rows
    # The build renumbers the columns through a table over every node: a small range of a
    # large graph holds that, whatever its own size.
    assert range_bytes(10, 10, 4, 10**6) == 48 * 10 + 8 * 10 + 5 * 10**6


def test_unpartitioned_while_the_graph_fits_a_node_else_the_fewest_ranges_that_fit_a_task():
    whole = SIZE.unpartitioned_bytes()
    assert choose_partitions(SIZE, node_budget=2 * whole, slot_budget=whole // 8) == 0
    # ... and its object-store copy fits the node's object store.
    assert choose_partitions(SIZE, node_budget=2 * whole, slot_budget=whole // 2,
                             store_budget=SIZE.whole_bytes() - 1) > 0
    slot = whole // 2
    parts = choose_partitions(SIZE, node_budget=whole, slot_budget=slot)
    assert parts >= 2 and 2 * SIZE.task_bytes(parts) <= slot
    assert parts == 2 or 2 * SIZE.task_bytes(parts - 1) > slot
    with pytest.raises(ConfigError, match="leave --partitions out"):
        check_unpartitioned(SIZE, node_budget=whole, slot_budget=slot)
    check_unpartitioned(SIZE, node_budget=2 * whole, slot_budget=1)
    with pytest.raises(ConfigError, match="give the nodes more memory"):
        choose_partitions(SIZE, node_budget=whole, slot_budget=1_000)


def test_a_task_gets_its_share_of_the_roomiest_nodes_memory():
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "memory": 8e9}},
             {"Alive": True, "Resources": {"CPU": 2.0, "memory": 6e9}},
             {"Alive": False, "Resources": {"CPU": 1.0, "memory": 64e9}}]
    assert slot_memory(1.0, nodes) == 3e9  # 6 GB over 2 CPUs beats 8 GB over 4
    assert slot_memory(2.0, nodes) == 6e9
    assert node_memory(nodes) == 8e9  # the unpartitioned graph is held once per node
    assert slot_memory(1.0, [{"Alive": True, "Resources": {"CPU": 2.0}}]) is None
    assert node_memory([]) is None
