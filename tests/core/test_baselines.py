"""The simple recommenders a trained model must beat: popularity and graph-free BPR-MF."""

import torch

from bc_ray.core.baselines import (
    MFConfig,
    fold_in_users,
    popularity_embeddings,
    refit_bpr_mf,
    train_bpr_mf,
)
from bc_ray.core.evaluation import recall_at_k


def _planted(num_users=120, num_items=60, groups=3, per_user=8, seed=0):
    """Users of group g interact only with items of group g; one held-out item per user."""
    generator = torch.Generator().manual_seed(seed)
    size = num_items // groups
    users, items = [], []
    for user in range(num_users):
        group = user % groups
        chosen = torch.randperm(size, generator=generator)[:per_user + 1] + group * size
        users += [user] * (per_user + 1)
        items += chosen.tolist()
    users, items = torch.tensor(users), torch.tensor(items)
    last = torch.arange(num_users) * (per_user + 1) + per_user
    train = torch.ones(users.numel(), dtype=torch.bool)
    train[last] = False
    return (users[train], items[train]), (users[~train], items[~train]), num_users, num_items


def _recall(z_user, z_item, train, held):
    return recall_at_k(z_user, z_item, *held, *train, k=10)


def test_popularity_ranks_items_by_training_interactions():
    z_user, z_item = popularity_embeddings(torch.tensor([2, 2, 2, 0, 1, 1]), 3, 4)
    scores = (z_user @ z_item.T)[0]
    assert scores.tolist() == [1.0, 2.0, 3.0, 0.0]
    assert z_user.shape == (3, 1) and torch.equal(z_user @ z_item.T, scores.expand(3, 4))


def test_bpr_mf_learns_what_popularity_cannot():
    """Every item is equally popular here, so only a model of who likes what finds the held-out
    items: BPR-MF must rank them well above popularity (chance)."""
    train, held, num_users, num_items = _planted()
    seen = []

    def validate(z_user, z_item):
        seen.append(z_user.shape)
        return _recall(z_user, z_item, train, held)

    config = MFConfig(dim=8, lr=2e-2, regs=(1e-3, 1e-1), batch_size=256, epochs=30,
                      eval_every=5, patience=2)
    result = train_bpr_mf(*train, num_users, num_items, validate, config)
    assert seen and all(shape == (num_users, 9) for shape in seen)  # 8 + the bias column
    assert result.reg in config.regs and 0 < result.selected_epoch <= result.stopped_epoch
    mf = _recall(result.z_user, result.z_item, train, held)
    popular = _recall(*popularity_embeddings(train[1], num_users, num_items), train, held)
    assert mf == result.validation
    assert mf > 0.6 and mf > 2 * popular, (mf, popular)


def test_refit_trains_the_chosen_setting_on_every_known_edge():
    """A user whose only edges were held out for validation gets a learnt vector once refitted
    on all known edges; before, it had none (a zero vector: ranked by the item biases alone)."""
    train, held, num_users, num_items = _planted()
    config = MFConfig(dim=8, lr=2e-2, regs=(1e-2,), batch_size=256, epochs=10, eval_every=5)
    keep = train[0] != 0  # user 0's training edges are withheld from the first fit
    first = (train[0][keep], train[1][keep])
    chosen = train_bpr_mf(*first, num_users, num_items,
                          lambda u, i: _recall(u, i, train, held), config)
    assert torch.count_nonzero(chosen.z_user[0, :-1]) == 0  # no edges: ranked by the biases
    assert torch.equal(chosen.z_user[:, -1], torch.ones(num_users))
    refit = refit_bpr_mf(*train, num_users, num_items, chosen, config)
    assert refit.reg == chosen.reg and refit.stopped_epoch == chosen.selected_epoch
    liked = train[1][train[0] == 0]
    others = torch.tensor([i for i in range(num_items) if i not in set(liked.tolist())])
    score = refit.z_user[0] @ refit.z_item.T
    assert score[liked].mean() > score[others].mean() + 0.5


def test_a_user_first_seen_after_training_is_folded_in_from_its_known_edges():
    """BPR-MF has no vector for a user without training edges; given the edges the graph models
    embed with, such a user gets the mean of its items' vectors and finds its group's items,
    while users with a vector keep it."""
    train, held, num_users, num_items = _planted()
    config = MFConfig(dim=8, lr=2e-2, regs=(1e-2,), batch_size=256, epochs=20, eval_every=5)
    keep = train[0] >= 3  # users 0-2 (one per group) are first seen after training
    trained = train_bpr_mf(train[0][keep], train[1][keep], num_users, num_items,
                           lambda u, i: _recall(u, i, train, held), config)
    folded = fold_in_users(trained.z_user, trained.z_item, *train)
    assert torch.equal(folded[3:], trained.z_user[3:]) and torch.equal(folded[:, -1],
                                                                        trained.z_user[:, -1])
    for user in range(3):
        assert torch.count_nonzero(trained.z_user[user, :-1]) == 0
        liked = train[1][train[0] == user]
        assert torch.allclose(folded[user, :-1], trained.z_item[liked, :-1].mean(dim=0))
    cold = torch.arange(3)
    before = recall_at_k(trained.z_user, trained.z_item, *held, *train, k=10, users=cold)
    after = recall_at_k(folded, trained.z_item, *held, *train, k=10, users=cold)
    assert after > before, (before, after)
