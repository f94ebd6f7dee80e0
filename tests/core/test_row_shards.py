"""ID rows sharded across real gloo ranks: each rank holds only the rows it owns, gathers any row
by global id, and its lazy Adam moves exactly the rows the unsharded table would, by the same
amounts (the mean of every rank's gradient, as DDP and `average_sparse_gradients` take it), with
lazy Adam or row-wise Adagrad alike."""

import os
import weakref

import numpy as np
import pytest
import torch
import torch.distributed as dist

from bc_ray.core.node_rows import balanced_bounds, top_up
from bc_ray.core.row_shards import (
    RowOwners,
    ShardedEmbedding,
    ShardedRows,
    deal,
    request,
    to_all,
)
from bc_ray.core.sparse_rows import average_sparse_gradients, id_table_optimizer
from bc_ray.core.trainer import ShardedAlignment
from bc_ray.core.transforms import make_transform
from bc_ray.exceptions import ConfigError, TrainingError
from tests.helpers import gloo_ranks

USERS, ITEMS, DIM, WORLD = 23, 11, 4, 3


def _owners() -> RowOwners:
    rng = np.random.default_rng(0)
    return RowOwners.balanced(rng.integers(0, 9, USERS), rng.integers(0, 30, ITEMS), WORLD)


def _own_rows(owners: RowOwners, table: torch.Tensor, rank: int) -> torch.Tensor:
    (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
    return torch.cat([table[a:b], table[USERS + c:USERS + d]])


def test_every_node_has_one_owner_and_one_row_there():
    owners = _owners()
    nodes = torch.arange(USERS + ITEMS)
    owner = owners.owner(nodes)
    assert owner.min() == 0 and owner.max() == WORLD - 1
    for rank in range(WORLD):
        mine = nodes[owner == rank]
        assert mine.numel() == owners.num_rows(rank)
        assert torch.equal(owners.local_row(mine, rank), torch.arange(mine.numel()))
        assert torch.equal(owners.nodes_of(rank), mine)
        for entity, first, last, offset in owners.spans(rank):  # the same rows, per entity
            shift = USERS if entity == "item" else 0
            assert torch.equal(mine[offset:offset + last - first],
                               torch.arange(first, last) + shift)
        (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
        assert 0 < b - a and 0 < d - c  # every rank owns users and items
    with pytest.raises(ConfigError, match="items"):
        owners.check(USERS, ITEMS + 1)


def test_users_are_cut_as_the_sampler_weighs_them_and_empty_ranges_are_owned_by_none():
    degrees = np.array([5, 0, 1, 1, 9, 0, 1, 1])
    by_user = RowOwners.balanced(degrees, np.array([3, 3]), 2)
    assert by_user.users_of(0) == (0, 4) and by_user.users_of(1) == (4, 8)  # 3 active each
    by_edge = RowOwners.balanced(degrees, np.array([3, 3]), 2, user_uniform=False)
    assert by_edge.users_of(0) == (0, 5)  # the range closes on the user that crosses half
    assert RowOwners.balanced(degrees, np.array([3, 3]), 3, user_uniform=False).users_of(2)[0] > 4
    empty = RowOwners(8, np.array([0, 5, 5, 8]), np.array([0, 1, 1, 2]))
    nodes = torch.arange(10)
    assert empty.num_rows(1) == 0 and not (empty.owner(nodes) == 1).any()
    assert torch.equal(empty.nodes_of(2), torch.tensor([5, 6, 7, 9]))
    assert torch.equal(empty.local_row(empty.nodes_of(2), 2), torch.arange(4))


def test_items_top_up_each_workers_users_to_equal_shares():
    # The first users hold most edges (older users, as a store grows): items are cut so that
    # each worker's users and items together cost about the same, not the items alone.
    rng = np.random.default_rng(3)
    user_degrees = np.concatenate([rng.integers(20, 40, 500), rng.integers(1, 4, 500)])
    item_degrees = np.sort(rng.integers(1, 60, 2000))[::-1]
    row_bytes = 64
    owners = RowOwners.balanced(user_degrees, item_degrees, 2, row_bytes)
    node_cost = 1 + row_bytes // 8

    def share(rank: int) -> int:
        (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
        return int((user_degrees[a:b] + node_cost).sum() + (item_degrees[c:d] + node_cost).sum())

    assert owners.users_of(0) == (0, 500)  # users: equal counts, as the sampler weighs them
    assert abs(share(0) - share(1)) <= item_degrees.max() + node_cost  # one item apart at most
    assert owners.items_of(0)[1] < 1000  # the first worker takes fewer than half the items
    items_alone = balanced_bounds(item_degrees, 2, node_cost)
    assert owners.items_of(0)[1] < items_alone[1]


def test_top_up_levels_what_it_can_and_leaves_parts_above_the_level_alone():
    assert np.allclose(top_up(10.0, np.array([0.0, 0.0])), [5, 5])
    assert np.allclose(top_up(10.0, np.array([2.0, 6.0])), [7, 3])  # both reach 9
    assert np.allclose(top_up(4.0, np.array([100.0, 0.0, 2.0])), [0, 3, 1])  # 3 each, not 35
    assert np.allclose(top_up(0.0, np.array([1.0, 1.0])), [0, 0])
    bounds = balanced_bounds(np.ones(10, dtype=np.int64), 3, 0, base=np.array([0, 9, 0]))
    assert bounds.tolist() == [0, 5, 5, 10]  # the middle part has its share already
    first_full = balanced_bounds(np.ones(10, dtype=np.int64), 3, 0, base=np.array([99, 0, 0]))
    assert first_full.tolist() == [0, 0, 5, 10]  # not one row for a part whose share is none
    with pytest.raises(ValueError, match="one value per part"):
        balanced_bounds(np.ones(10, dtype=np.int64), 3, 0, base=np.array([1, 2]))


def _rank(rank: int, port: int, optimizer: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    owners = _owners()
    whole = torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(5))
    asked = torch.tensor([[0, 30, 30, 7], [33, 1], []][rank], dtype=torch.long)
    rows = ShardedRows(owners, _own_rows(owners, whole, rank))
    results[f"gathered{rank}"] = rows.gather(asked)
    # Ids already in their owners' order go and come back without being reordered.
    ordered = asked[torch.argsort(owners.owner(asked) * (USERS + ITEMS) + asked)]
    results[f"ordered{rank}"] = (ordered, rows.gather(ordered), request(owners, ordered).in_order)
    # Unequal counts to every worker; rows dealt to workers by destination (rank 1 sends none).
    results[f"all{rank}"] = to_all(torch.full((rank + 1, 2), float(rank)))
    sent = torch.tensor([[2, 0, 2, 1], [], [0]][rank], dtype=torch.long)
    results[f"dealt{rank}"] = deal(sent, sent * 10 + rank,
                                   torch.arange(sent.numel() * 3).reshape(-1, 3) + 100 * rank)

    sharded = ShardedEmbedding(owners, _own_rows(owners, whole, rank).clone(), lr=0.1,
                               optimizer=optimizer)
    table = torch.nn.Embedding.from_pretrained(whole.clone(), freeze=False, sparse=True)
    reference = id_table_optimizer(optimizer, [table.weight], lr=0.1)
    for step in range(3):
        nodes = torch.tensor([[1, 4, 4, 30], [33, 4, 12 + step], [20] if step != 1 else []][rank],
                             dtype=torch.long)  # rank 2 looks nothing up in step 1
        scale = torch.arange(1.0, nodes.numel() + 1)[:, None] * (rank + 1)
        (sharded.lookup(nodes) * scale).square().sum().backward()
        results[f"in_order{rank}_{step}"] = sharded._pending[0].in_order
        sharded.apply_gradients()
        (table(nodes) * scale).square().sum().backward()
        average_sparse_gradients([table.weight])
        reference.step()
        table.weight.grad = None
    results[f"mine{rank}"] = sharded.weight.detach().clone()
    results[f"reference{rank}"] = _own_rows(owners, table.weight.detach(), rank)
    results[f"moved{rank}"] = (results[f"mine{rank}"] != _own_rows(owners, whole, rank)).any(1)
    results[f"state{rank}"] = sum(t.numel() for t in sharded.optimizer.state[sharded.weight]
                                  .values() if torch.is_tensor(t) and t.dim() > 0)
    results[f"rows{rank}"] = owners.num_rows(rank)
    dist.destroy_process_group()


@pytest.mark.parametrize("optimizer", ["adam", "rowwise_adagrad"])
def test_three_ranks_gather_rows_and_train_them_as_one_table_would(optimizer):
    results = gloo_ranks(_rank, WORLD, optimizer)
    whole = torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(5))
    for rank, asked in enumerate([[0, 30, 30, 7], [33, 1], []]):
        assert torch.equal(results[f"gathered{rank}"], whole[asked])
        ordered, gathered, in_order = results[f"ordered{rank}"]
        assert in_order and torch.equal(gathered, whole[ordered])
        assert torch.equal(results[f"all{rank}"], torch.tensor([[0.0] * 2] + [[1.0] * 2] * 2
                                                               + [[2.0] * 2] * 3))
    # What each worker was dealt, by sender in rank order, each sender's rows in their order.
    ids, rows = zip(*(results[f"dealt{rank}"] for rank in range(WORLD)), strict=True)
    assert [i.tolist() for i in ids] == [[0, 2], [10], [20, 20]]
    assert [r[:, 0].tolist() for r in rows] == [[3, 200], [9], [0, 6]]
    # Lookups in owner order and out of it both step the rows as the one table does (below).
    assert {results[f"in_order{r}_{s}"] for r in range(WORLD) for s in range(3)} == {True, False}
    owners = _owners()
    moved = torch.zeros(USERS + ITEMS, dtype=torch.bool)
    for rank in range(WORLD):
        torch.testing.assert_close(results[f"mine{rank}"], results[f"reference{rank}"],
                                   rtol=1e-5, atol=1e-6)
        moved[owners.owner(torch.arange(USERS + ITEMS)) == rank] = results[f"moved{rank}"]
    # Exactly the rows some rank looked up moved, wherever they live.
    expected = torch.zeros_like(moved)
    expected[[1, 4, 30, 12, 13, 14, 33, 20]] = True
    assert torch.equal(moved, expected)
    # Adam keeps two moments per value, row-wise Adagrad one float per row.
    per_row = 2 * DIM if optimizer == "adam" else 1
    assert [results[f"state{r}"] for r in range(WORLD)] == [
        per_row * results[f"rows{r}"] for r in range(WORLD)]


def test_rows_replaced_are_the_rows_gathered_and_the_old_ones_are_freed():
    """A caller frees a table it no longer needs by replacing its rows (the alignment targets,
    once no step follows): nothing else may keep the old tensor alive."""
    owners = RowOwners(2, np.array([0, 2]), np.array([0, 1]))  # one worker: no group needed
    table = ShardedRows(owners, torch.arange(9.0).reshape(3, 3))
    old = weakref.ref(table.rows)
    table.rows = -torch.ones(3, 3)
    assert old() is None
    assert torch.equal(table.gather(torch.tensor([2, 0])), -torch.ones(2, 3))


def test_rows_of_the_wrong_worker_or_group_are_refused_by_name():
    owners = _owners()
    with pytest.raises(ConfigError, match=f"worker 0 owns {owners.num_rows(0)} rows, got 2"):
        ShardedRows(owners, torch.zeros(2, DIM))
    rows = ShardedRows(owners, torch.zeros(owners.num_rows(0), DIM))
    with pytest.raises(ConfigError, match="split over 3 workers, the group has 1"):
        rows.gather(torch.tensor([0]))


def test_sharded_targets_with_nan_or_inf_are_refused_where_they_are_used(monkeypatch):
    """Checked a chunk of rows at a time (no copy of the worker's rows): a bad row is found in
    any chunk, and one the mask leaves out does not matter."""
    monkeypatch.setattr("bc_ray.core.trainer.FINITE_CHECK_ROWS", 2)
    owners = RowOwners.balanced(np.array([1, 1, 1]), np.array([1, 1]), 1)
    rows = torch.zeros(5, 2)
    rows[3, 1] = float("inf")
    mask = torch.ones(5, dtype=torch.bool)
    with pytest.raises(TrainingError, match="NaN or inf"):
        ShardedAlignment(make_transform("linear", 2, 2), ShardedRows(owners, rows), mask)
    mask[3] = False
    ShardedAlignment(make_transform("linear", 2, 2), ShardedRows(owners, rows), mask)
