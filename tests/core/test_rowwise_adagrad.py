"""Row-wise Adagrad, the ID tables' optimizer that keeps one float per row: it steps each row by
the rule written out by hand, sparse and dense gradients alike, leaves untouched rows where they
are, and resumes from its state dict exactly (a sharded table's checkpoint too)."""

import logging

import numpy as np
import pytest
import torch

from bc_ray.core.row_shards import RowOwners, ShardedEmbedding
from bc_ray.core.sparse_rows import CombinedOptimizer, RowwiseAdagrad, row_sparse_tables
from bc_ray.core.train_config import ROWWISE_ADAGRAD_LR, TrainConfig
from bc_ray.exceptions import ConfigError

LR, EPS = 0.05, 1e-8


def _by_hand(table: torch.Tensor, gradients: list[torch.Tensor]) -> torch.Tensor:
    """The rule row by row: a row's sum gains the mean of its squared gradient, and the row
    moves by -lr g / (sqrt(sum) + eps); a row without a gradient (all zero) is skipped."""
    table, sums = table.clone(), [0.0] * table.shape[0]
    for grad in gradients:
        for row in range(table.shape[0]):
            if not grad[row].any():
                continue
            sums[row] += float((grad[row] ** 2).mean())
            table[row] -= LR * grad[row] / (sums[row] ** 0.5 + EPS)
    return table


def _gradients() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    out = []
    for touched in ([0, 2, 5], [2, 3], [5, 0, 2]):
        grad = torch.zeros(6, 4)
        grad[touched] = torch.randn(len(touched), 4, generator=generator)
        out.append(grad)
    return out


def _trained(layout: str, gradients: list[torch.Tensor], start: torch.Tensor
             ) -> tuple[torch.Tensor, RowwiseAdagrad]:
    weight = torch.nn.Parameter(start.clone())
    optimizer = RowwiseAdagrad([weight], lr=LR, eps=EPS)
    for grad in gradients:
        weight.grad = {"rows": lambda: grad.to_sparse(1), "values": lambda: grad.to_sparse(),
                       "dense": grad.clone}[layout]()
        optimizer.step()
    return weight.detach(), optimizer


@pytest.mark.parametrize("layout", ["rows", "values", "dense"])
def test_each_row_steps_by_its_own_accumulated_squares(layout):
    """`rows`: an embedding's sparse gradient (one index per row); `values`: one per value."""
    start = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    gradients = _gradients()
    trained, optimizer = _trained(layout, gradients, start)
    torch.testing.assert_close(trained, _by_hand(start, gradients), rtol=1e-5, atol=1e-6)
    assert torch.equal(trained[[1, 4]], start[[1, 4]])  # never touched
    (state,) = optimizer.state.values()
    assert state["sum"].shape == (6,)  # one float per row, whatever the width
    # A row's first step is lr in root-mean-square, as Adam's first step is.
    first = (trained - start)[3]  # row 3 stepped once
    assert float(first.square().mean().sqrt()) == pytest.approx(LR, rel=1e-5)


def test_it_resumes_from_its_state_dict_exactly():
    start = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    gradients = _gradients()
    whole, _ = _trained("rows", gradients, start)
    halfway, optimizer = _trained("rows", gradients[:1], start)
    weight = torch.nn.Parameter(halfway.clone())
    resumed = RowwiseAdagrad([weight], lr=LR, eps=EPS)
    resumed.load_state_dict(optimizer.state_dict())
    for grad in gradients[1:]:
        weight.grad = grad.to_sparse(1)
        resumed.step()
    assert torch.equal(weight.detach(), whole)


def test_an_unknown_id_optimizer_is_refused_by_name():
    with pytest.raises(ConfigError, match="ID optimizer 'sgd' is not one of adam, rowwise_adagrad"):
        TrainConfig(id_optimizer="sgd")


def test_dense_tables_say_the_id_optimizer_does_not_apply(caplog):
    table = torch.nn.Embedding(4, 2, sparse=True)

    class Model(torch.nn.Module):
        def sparse_id_tables(self):
            return [table.weight]

    with caplog.at_level(logging.WARNING, logger="bc_ray.core.sparse_rows"):
        assert row_sparse_tables(Model(), True, "rowwise_adagrad") == [table.weight]
        assert not caplog.records
        assert row_sparse_tables(Model(), False, "rowwise_adagrad") == []
    assert "rowwise_adagrad steps row-sparse ID tables only" in caplog.text


def test_the_id_tables_learning_rate_follows_their_optimizer():
    assert TrainConfig(lr=0.002).id_table_lr == 0.002  # Adam: the dense weights' rate
    assert TrainConfig(lr=0.002, id_optimizer="rowwise_adagrad").id_table_lr == \
        ROWWISE_ADAGRAD_LR  # the rate it was measured to match Adam at
    assert TrainConfig(id_optimizer="rowwise_adagrad", id_lr=0.2).id_table_lr == 0.2
    with pytest.raises(ConfigError, match="id_lr"):
        TrainConfig(id_lr=-1.0)


def test_a_step_without_rows_moves_nothing():
    """A sharded worker whose rows no worker asked for this step steps an empty gradient."""
    weight = torch.nn.Parameter(torch.ones(6, 4))
    optimizer = RowwiseAdagrad([weight], lr=LR)
    weight.grad = torch.sparse_coo_tensor(torch.empty(1, 0, dtype=torch.long),
                                          torch.empty(0, 4), (6, 4))
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(6, 4))


def _sharded_steps(table: ShardedEmbedding, steps: range) -> None:
    for step in steps:
        nodes = torch.tensor([0, 3, 5, step % 6])
        (table.lookup(nodes) * (step + 1)).square().sum().backward()
        table.apply_gradients()


def test_sharded_rows_resume_their_state_from_a_checkpoint():
    """One worker (no group): a checkpoint taken after two steps, restored into a fresh table,
    goes on exactly as the uninterrupted table does; its state belongs to its optimizer."""
    owners = RowOwners.balanced(np.ones(4, dtype=np.int64), np.ones(2, dtype=np.int64), 1)
    start = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    whole = ShardedEmbedding(owners, start.clone(), lr=LR, optimizer="rowwise_adagrad")
    _sharded_steps(whole, range(4))
    first = ShardedEmbedding(owners, start.clone(), lr=LR, optimizer="rowwise_adagrad")
    _sharded_steps(first, range(2))
    saved = first.checkpoint()
    resumed = ShardedEmbedding(owners, torch.zeros(6, 4), lr=LR, optimizer="rowwise_adagrad")
    resumed.restore(saved)
    _sharded_steps(resumed, range(2, 4))
    assert torch.equal(resumed.weight.detach(), whole.weight.detach())
    with pytest.raises(ConfigError, match="trained with rowwise_adagrad, this run steps them "
                                          "with adam: resume with --id-optimizer rowwise_adagrad"):
        ShardedEmbedding(owners, torch.zeros(6, 4), lr=LR).restore(saved)


def test_a_one_table_checkpoint_resumes_only_under_its_id_optimizer():
    dense, table = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(6, 4))
    saved = CombinedOptimizer([dense], [table], 0.1, "adam").state_dict()
    CombinedOptimizer([dense], [table], 0.1, "adam").load_state_dict(saved)
    with pytest.raises(ConfigError, match="trained with adam, this run steps them with "
                                          "rowwise_adagrad"):
        CombinedOptimizer([dense], [table], 0.1, "rowwise_adagrad").load_state_dict(saved)
