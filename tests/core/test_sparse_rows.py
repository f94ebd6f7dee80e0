"""Row-sparse ID tables in sampled mode: only the batch's rows move, unseen rows stay zero, and
two real gloo ranks end with the mean of their sparse gradients (what DDP does for dense ones)."""

import dataclasses
import os

import pytest
import torch
import torch.distributed as dist

from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.splits import period_split
from bc_ray.core.sparse_rows import (
    CombinedOptimizer,
    RowwiseAdagrad,
    average_sparse_gradients,
)
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import VersionTrainer
from tests.helpers import gloo_ranks

SPEC = VersionSpec(num_layers=2, hidden_dim=8)
CONFIG = TrainConfig(epochs=1, batch_size=64, lr=1e-2, fanout=3, sparse_ids_min_nodes=0)


@pytest.fixture(scope="module")
def split(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8)


def _trainer(split, mode: str, **changes) -> VersionTrainer:
    torch.manual_seed(0)
    model = build_model(SPEC, split.graph)
    user_degree, item_degree = split.graph.degrees()
    model.zero_unseen_ids(user_degree > 0, item_degree > 0)
    return VersionTrainer(model, split.graph, dataclasses.replace(CONFIG, mode=mode, **changes))


@pytest.mark.parametrize("id_optimizer", [torch.optim.SparseAdam, RowwiseAdagrad])
def test_sampled_steps_move_only_the_rows_of_the_batch(split, id_optimizer):
    name = "adam" if id_optimizer is torch.optim.SparseAdam else "rowwise_adagrad"
    trainer = _trainer(split, "sampled", id_optimizer=name, id_lr=0.05)
    assert isinstance(trainer.optimizer, CombinedOptimizer)
    dense, ids = trainer.optimizer.parts
    assert type(ids) is id_optimizer
    assert ids.param_groups[0]["lr"] == 0.05 and dense.param_groups[0]["lr"] == CONFIG.lr
    assert trainer.sparse_parameter_names() == ["model.ids.user.weight", "model.ids.item.weight"]
    before = trainer.model.ids["user"].weight.detach().clone()
    batch = trainer.task.epoch_triples(1).slice(0, 8)
    trainer.step(batch)
    grad = trainer.model.ids["user"].weight.grad
    assert grad.is_sparse
    moved = (trainer.model.ids["user"].weight.detach() != before).any(dim=1)
    touched = torch.zeros_like(moved)
    touched[grad.coalesce().indices()[0]] = True
    assert moved.any() and torch.equal(moved, touched)
    user_degree, _ = split.graph.degrees()
    assert moved.sum() < (user_degree > 0).sum()  # a mini-batch's rows, not the table


def test_entities_without_training_edges_keep_a_zero_id_row(split):
    trainer = _trainer(split, "sampled")
    for epoch in (1, 2):
        trainer.run_epoch(epoch)
    user_degree, item_degree = split.graph.degrees()
    for entity, degree in (("user", user_degree), ("item", item_degree)):
        table = trainer.model.ids[entity].weight.detach()[: degree.numel()]
        assert (degree == 0).any()
        assert torch.count_nonzero(table[degree == 0]) == 0


def test_full_graph_mode_and_small_tables_keep_dense_adam(split):
    trainer = _trainer(split, "full")
    assert isinstance(trainer.optimizer, torch.optim.Adam) and not trainer.sparse_parameters
    small = dataclasses.replace(CONFIG, mode="sampled",
                                sparse_ids_min_nodes=split.graph.num_nodes)
    trainer = VersionTrainer(build_model(SPEC, split.graph), split.graph, small)
    assert isinstance(trainer.optimizer, torch.optim.Adam) and not trainer.sparse_parameters


def _rank_gradients(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    table = torch.nn.Embedding(10, 3, sparse=True)
    rows = torch.tensor([[1, 4, 4], [4, 7, 9]][rank])  # row 4 on both ranks, twice on rank 0
    table(rows).mul(rank + 1).sum().backward()
    average_sparse_gradients([table.weight])
    results[rank] = table.weight.grad.to_dense()
    empty = torch.nn.Embedding(10, 3, sparse=True)
    if rank == 1:  # a rank whose batch touched no row of this table
        empty(torch.tensor([2])).sum().backward()
    average_sparse_gradients([empty.weight])
    results[f"empty{rank}"] = empty.weight.grad.to_dense()
    dist.destroy_process_group()


def test_two_gloo_ranks_average_their_row_gradients():
    results = gloo_ranks(_rank_gradients, 2)
    expected = torch.zeros(10, 3)
    expected[[1, 4]] += torch.tensor([1.0, 2.0])[:, None]  # rank 0: rows 1, 4, 4 times 1
    expected[[4, 7, 9]] += 2.0  # rank 1: rows 4, 7, 9 times 2
    expected /= 2
    assert torch.equal(results[0], expected) and torch.equal(results[1], expected)
    lone = torch.zeros(10, 3)
    lone[2] = 0.5
    assert torch.equal(results["empty0"], lone) and torch.equal(results["empty1"], lone)
