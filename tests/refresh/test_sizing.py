"""How many node ranges a refresh needs (no Ray): what a task must hold against what a node
gives it."""

import pytest

from bc_ray.exceptions import ConfigError
from bc_ray.refresh.sizing import GraphSize, check_fits, choose_partitions, slot_memory

SIZE = GraphSize(edges=10_000_000, nodes=958_568, dim=64)


def test_a_task_must_hold_less_as_ranges_are_added():
    whole = SIZE.task_bytes()
    assert whole == 16 * 10_000_000 + 958_568 * (8 + 8 * 64)  # the CSR and two layers
    held = [SIZE.task_bytes(parts) for parts in (2, 4, 8, 32)]
    assert all(a > b for a, b in zip(held, held[1:]))
    assert held[-1] < whole / 3  # the halo bound, min(N, 2E/P) rows, falls slower than 1/P


def test_the_count_is_zero_when_the_unpartitioned_refresh_fits_else_the_fewest_that_fit():
    assert choose_partitions(SIZE, 2 * SIZE.task_bytes()) == 0
    budget = SIZE.task_bytes()  # half what the unpartitioned task needs with its headroom
    parts = choose_partitions(SIZE, budget)
    assert parts >= 2 and 2 * SIZE.task_bytes(parts) <= budget
    assert 2 * SIZE.task_bytes(parts - 1) > budget
    with pytest.raises(ConfigError, match="leave --partitions out"):
        check_fits(SIZE, budget, 0)
    check_fits(SIZE, budget, parts)
    with pytest.raises(ConfigError, match="even over 4096 node ranges"):
        choose_partitions(SIZE, 1_000)


def test_a_task_gets_its_share_of_the_roomiest_nodes_memory():
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "memory": 8e9}},
             {"Alive": True, "Resources": {"CPU": 2.0, "memory": 6e9}},
             {"Alive": False, "Resources": {"CPU": 1.0, "memory": 64e9}}]
    assert slot_memory(1.0, nodes) == 3e9  # 6 GB over 2 CPUs beats 8 GB over 4
    assert slot_memory(2.0, nodes) == 6e9
    assert slot_memory(1.0, [{"Alive": True, "Resources": {"CPU": 2.0}}]) is None
