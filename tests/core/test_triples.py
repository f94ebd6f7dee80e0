"""BPR triples: who is drawn, how often, and that negatives are not positives."""

from collections import Counter

import numpy as np
import pytest
import torch

from bc_ray.core.triples import TripleSampler

# user 0 has 6 edges, user 1 one, user 3 two (user 2 none); 8 items
EDGE_USER = torch.tensor([0, 0, 0, 0, 0, 0, 1, 3, 3])
EDGE_ITEM = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 7])


def _pairs(sampler: TripleSampler, epochs: int, size: int) -> Counter:
    drawn = Counter()
    for seed in range(epochs):
        triples = sampler.epoch(seed, size=size)
        drawn.update(zip(triples.user.tolist(), triples.pos.tolist()))
    return drawn


def test_users_are_drawn_uniformly_then_one_of_their_edges():
    drawn = _pairs(TripleSampler(EDGE_USER, EDGE_ITEM, 8), epochs=600, size=50)
    total = sum(drawn.values())
    by_user = Counter()
    for (user, _), count in drawn.items():
        by_user[user] += count
    assert set(by_user) == {0, 1, 3}
    for user in (0, 1, 3):  # a third each, whatever their degree (30k draws: sd 0.0027)
        assert abs(by_user[user] / total - 1 / 3) < 0.015
    edges_of_0 = [drawn[(0, item)] / by_user[0] for item in range(6)]
    assert max(abs(share - 1 / 6) for share in edges_of_0) < 0.02
    assert set(drawn) == set(zip(EDGE_USER.tolist(), EDGE_ITEM.tolist()))


def test_by_edge_an_epoch_is_every_edge_once():
    sampler = TripleSampler(EDGE_USER, EDGE_ITEM, 8, user_uniform=False)
    triples = sampler.epoch(3)
    assert sorted(zip(triples.user.tolist(), triples.pos.tolist())) == sorted(
        zip(EDGE_USER.tolist(), EDGE_ITEM.tolist()))


def test_negatives_are_not_positives_and_draws_ignore_the_edges_order():
    sampler = TripleSampler(EDGE_USER, EDGE_ITEM, 8)
    positives = set(zip(EDGE_USER.tolist(), EDGE_ITEM.tolist()))
    triples = sampler.epoch(7, size=2000)
    assert not positives & set(zip(triples.user.tolist(), triples.neg.tolist()))
    order = torch.from_numpy(np.random.default_rng(0).permutation(EDGE_USER.numel()))
    shuffled = TripleSampler(EDGE_USER[order], EDGE_ITEM[order], 8).epoch(7, size=2000)
    for name in ("user", "pos", "neg"):
        assert torch.equal(getattr(triples, name), getattr(shuffled, name))


def test_no_edges_give_an_empty_epoch():
    empty = torch.zeros(0, dtype=torch.long)
    assert len(TripleSampler(empty, empty, 4).epoch(0)) == 0


def test_csr_rows_draw_as_the_edge_list_does():
    """A sharded worker's sampler reads its users' CSR rows in place (items as global node ids,
    after an offset): the same triples as the edge list of those users gives, negatives
    included, under both negative samplers."""
    first_user, offset = 2, 100  # rows of users 2..4; items stored as 100 + item
    crow = np.array([0, 0, 3, 5])  # user 2 none, user 3 three items, user 4 two
    items = np.array([1, 4, 6, 0, 7]) + offset
    edge_user, edge_item = torch.tensor([3, 3, 3, 4, 4]), torch.tensor([1, 4, 6, 0, 7])
    for negatives in ("uniform", "popularity"):
        for user_uniform in (True, False):
            rows = TripleSampler.from_rows(crow, items, first_user, 8, offset, negatives,
                                           user_uniform)
            edges = TripleSampler(edge_user, edge_item, 8, negatives, user_uniform)
            for size in (None, 300):
                got, expected = rows.epoch(11, size=size), edges.epoch(11, size=size)
                for name in ("user", "pos", "neg"):
                    assert torch.equal(getattr(got, name), getattr(expected, name))
            assert rows.num_edges == 5
    drawn = TripleSampler.from_rows(crow, items, first_user, 8, offset).epoch(5, size=500)
    positives = set(zip(edge_user.tolist(), edge_item.tolist()))
    assert not positives & set(zip(drawn.user.tolist(), drawn.neg.tolist()))
    with pytest.raises(ValueError, match="4 items for rows that hold 5"):
        TripleSampler.from_rows(crow, items[:4], first_user, 8, offset)
