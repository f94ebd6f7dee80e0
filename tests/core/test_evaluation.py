import numpy as np
import torch

from bc_ray.core.evaluation import (
    alignment_error,
    degradation_pct,
    recall_at_k,
    roc_auc,
    top_items,
)


def test_recall_matches_brute_force():
    torch.manual_seed(0)
    z_user, z_item = torch.randn(6, 4), torch.randn(30, 4)
    known_user, known_item = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3])
    eval_user, eval_item = torch.tensor([0, 0, 1, 4]), torch.tensor([5, 6, 7, 8])
    got = recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item, k=5)
    expected = []
    for user in (0, 1, 4):
        scores = (z_user[user] @ z_item.T).clone()
        scores[known_item[known_user == user]] = -np.inf
        top = set(torch.topk(scores, 5).indices.tolist())
        truth = set(eval_item[eval_user == user].tolist())
        expected.append(len(top & truth) / len(truth))
    assert abs(got - np.mean(expected)) < 1e-6


def test_items_scored_a_block_at_a_time_give_the_same_top_k():
    """A chunk of users scores the items a block at a time (its scores against every item of a
    large catalogue would not fit), keeping the best across blocks: the same top k, in order,
    with blocked items and each user's known items skipped."""
    generator = torch.Generator().manual_seed(1)
    queries, z_item = torch.randn(7, 4, generator=generator), torch.randn(300, 4,
                                                                          generator=generator)
    blocked = torch.rand(300, generator=generator) < 0.2
    owner = torch.randint(0, 7, (40,), generator=generator)
    known = torch.randint(0, 300, (40,), generator=generator)
    whole = top_items(queries, z_item, blocked, owner, known, 10, block=300)
    scores = queries @ z_item.T
    scores[:, blocked] = -np.inf
    scores[owner, known] = -np.inf
    assert torch.equal(whole, torch.topk(scores, 10, dim=1).indices)
    for block in (1, 7, 64, 299):  # fewer items in a block than k, too
        assert torch.equal(top_items(queries, z_item, blocked, owner, known, 10, block), whole)
    # No known items; k past the catalogue: every item, the blocked ones last.
    none = torch.zeros(0, dtype=torch.long)
    ranked = top_items(queries, z_item, blocked, none, none, 400, block=64)
    assert ranked.shape == (7, 300)
    assert torch.equal(ranked[:, :10], top_items(queries, z_item, blocked, none, none, 10, 300))
    assert not blocked[ranked[:, :int((~blocked).sum())]].any()


def test_auc_rank_statistic():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1])) == 0.5
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_alignment_error_and_degradation():
    assert alignment_error(torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0], [0, 0, 0]])) == 2.5
    assert degradation_pct(9.0, 10.0) == -10.0
