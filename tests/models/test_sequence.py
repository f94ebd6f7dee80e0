"""The sequence model family in one process: spec, causality, embedding, incremental refresh's
affected set, training (alone, against a previous version) and data-parallel sharding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bc_ray.core.evaluation import recall_at_k
from bc_ray.core.family import Vocabularies
from bc_ray.core.methods import get_method
from bc_ray.core.registry import family_of, get_family
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.transforms import TransformChain
from bc_ray.core.version import PreviousVersion, train_version
from bc_ray.exceptions import ConfigError, TrainingError
from bc_ray.models.sequence.history import Histories, user_histories
from bc_ray.models.sequence.spec import SequenceSpec
from bc_ray.models.sequence.task import history_windows, window_batch
from tests.models.grow import grown_graph

FAMILY = get_family("sequence")
SPEC = SequenceSpec(dim=16, num_layers=1, num_heads=2, max_len=8, negatives=64)
CONFIG = TrainConfig(epochs=6, batch_size=512, lr=5e-3, eval_every=2, warmup_epochs=2)


@pytest.fixture(scope="module")
def split(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8)


@pytest.fixture(scope="module")
def trained(split):
    return train_version(get_method("non-bc"), SPEC, split.graph,
                         dataclasses.replace(CONFIG, epochs=12), None, item_pool=split.item_pool)


def _model(graph, spec=SPEC, seed=0):
    torch.manual_seed(seed)
    return FAMILY.build(spec, Vocabularies.of(graph)).eval()


def _recall(model, split):
    eu, ei = split.eval_pairs
    ku, ki = split.train_pairs
    return recall_at_k(*model.embed(split.graph), eu, ei, ku, ki, item_pool=split.item_pool)


def test_spec_parses_round_trips_and_refuses_bad_values():
    spec = FAMILY.parse_spec("dim=32,layers=3,heads=4,max_len=20,neg=16,next=2,temp=0.5,out=8")
    assert spec == SequenceSpec(dim=32, num_layers=3, num_heads=4, max_len=20, negatives=16,
                                predict_next=2, temperature=0.5, out_dim=8)
    assert spec.output_dim == 8 and family_of(spec) is FAMILY
    assert FAMILY.spec_from_dict(spec.to_dict()) == spec
    assert FAMILY.parse_spec("") == FAMILY.default_spec()
    for text, problem in [("dim=30,heads=4", "num_heads"), ("dropout=1", "dropout"),
                          ("layers=0", "num_layers"), ("len=x", "max_len"),
                          ("temp=0", "temperature"), ("width=3", "cannot read"),
                          ("next=0", "predict_next"), ("ids=maybe", "true or false")]:
        with pytest.raises(ConfigError, match=problem):
            FAMILY.parse_spec(text)
    with pytest.raises(ConfigError, match="unknown field"):
        FAMILY.spec_from_dict({**spec.to_dict(), "hidden_dim": 3})


def test_grown_specs_widen_deepen_and_keep_heads_valid():
    spec = SequenceSpec(dim=16, num_layers=1, num_heads=4, out_dim=8)
    assert FAMILY.grown(spec, 0, 6) == spec
    one, two = FAMILY.grown(spec, 1, 6), FAMILY.grown(spec, 2, 6)
    assert (one.dim, one.num_layers, one.num_heads, one.output_dim) == (22, 1, 2, 14)
    assert (two.dim, two.num_layers, two.num_heads, two.output_dim) == (28, 2, 4, 20)


def test_later_items_never_change_earlier_positions(split):
    model = _model(split.graph)
    tokens = torch.randn(2, 7, SPEC.dim)
    changed = tokens.clone()
    changed[:, 4] = torch.randn(2, SPEC.dim)
    before, after = model.encode(tokens), model.encode(changed)
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-3)


def test_histories_follow_time_and_windows_cover_every_interaction_once(split):
    graph = split.graph
    histories = user_histories(graph)
    user = int(torch.bincount(graph.edge_user).argmax())
    own = torch.nonzero(graph.edge_user == user).flatten()
    in_time = own[torch.argsort(graph.edge_t[own], stable=True)]
    assert np.array_equal(histories.of(user), graph.edge_item[in_time].numpy())
    windows = history_windows(histories, SPEC.max_len)
    assert (windows.end - windows.start).max() == SPEC.max_len
    covered = np.concatenate([np.arange(s, e) for s, e in zip(windows.start, windows.end)])
    assert np.array_equal(np.sort(covered), np.arange(graph.num_edges))
    task = FAMILY.task(_model(graph), graph, CONFIG)
    assert sum(task.examples(batch) for batch in task.epoch(1)) == graph.num_edges


def test_each_position_scores_the_next_items_of_the_history():
    """History 10..14, windows of 2 items, the next 2 items scored: the exact targets."""
    histories = Histories(np.array([0, 5]), np.arange(10, 15))
    windows = history_windows(histories, 2)
    assert [(s, e) for s, e in zip(windows.start, windows.end)] == [(3, 5), (1, 3), (0, 1)]
    batch = window_batch(histories, windows, 2, np.array([10]))
    ids = batch.item_ids.numpy()
    targets = np.where(batch.targets >= 0, ids[batch.targets.clamp(min=0)], -1)
    assert targets.tolist() == [
        [[-1, -1], [14, -1], [-1, -1]],  # final window 13 14: its last position is z(u)
        [[-1, -1], [12, 13], [13, 14]],  # 11 12: position 0 (the user alone) scores only first
        [[10, 11], [11, 12], [-1, -1]],  # the first window, 10, padded to 2 items
    ]
    assert ids[batch.items.numpy()].tolist()[:2] == [[13, 14], [11, 12]]
    assert batch.final.tolist() == [True, False, False] and batch.lengths.tolist() == [2, 2, 1]
    assert ids[batch.negatives.numpy()].tolist() == [10]


def test_embed_of_any_nodes_equals_the_models_embedding(split):
    model = _model(split.graph)
    z_user, z_item = model.embed(split.graph)
    whole = torch.cat([z_user, z_item]).numpy()
    assert np.isfinite(whole).all()
    inputs = FAMILY.embed_inputs(SPEC, split.graph)
    nodes = np.random.default_rng(0).permutation(split.graph.num_nodes)[:97]
    assert np.allclose(FAMILY.embed(model, inputs, nodes), whole[nodes], atol=1e-5)
    lonely = np.flatnonzero(np.bincount(split.graph.edge_user.numpy(),
                                        minlength=split.graph.num_users) == 0)
    assert lonely.size and np.isfinite(whole[lonely]).all()
    restored = FAMILY.from_bytes(FAMILY.to_bytes(model), light=True)
    assert np.allclose(FAMILY.embed(restored, inputs, nodes), whole[nodes], atol=1e-6)


def test_a_steps_embeddings_are_the_published_ones(split):
    """TaskStep.z: items of the batch and users in their final window, as `embed` gives them."""
    model = _model(split.graph, dataclasses.replace(SPEC, predict_next=2))
    task = FAMILY.task(model, split.graph, CONFIG)
    step = task.step(model, task.epoch(1)[0])
    nodes = step.nodes.numpy()
    assert np.array_equal(nodes, np.unique(nodes)) and (nodes < split.graph.num_users).any()
    inputs = FAMILY.embed_inputs(model.spec, split.graph)
    assert np.allclose(step.z.detach().numpy(), FAMILY.embed(model, inputs, nodes), atol=1e-5)


def test_a_steps_alignment_weighs_users_and_items_by_their_share_of_entities(split):
    """A step holds every item its windows touch but few users: weighted, the users' part of
    its alignment is their share of all entities, whatever their count in the step."""
    model = _model(split.graph)
    task = FAMILY.task(model, split.graph, CONFIG)
    graph = split.graph
    for batch in list(task.epoch(1))[:3]:
        step = task.step(model, batch)
        users = step.nodes < graph.num_users
        weights = step.align_weights
        assert weights.shape == step.nodes.shape and users.any() and (~users).any()
        assert users.sum() < (~users).sum()
        share = graph.num_users / graph.num_nodes
        assert torch.isclose(weights[users].sum(), torch.tensor(share), rtol=1e-5)
        assert torch.isclose(weights.sum(), torch.tensor(1.0), rtol=1e-5)


def test_the_joint_step_hands_the_alignment_the_weights_of_its_masked_rows(split):
    """Rows without an alignment target (mask False) drop out of the weights as of the
    embeddings: the loss sees weight i with embedding i."""
    from bc_ray.core.losses import alignment_single
    from bc_ray.core.trainer import JointModule
    from bc_ray.core.transforms import make_transform

    model = _model(split.graph)
    task = FAMILY.task(model, split.graph, CONFIG)
    joint = JointModule(model, make_transform("identity", SPEC.output_dim, SPEC.output_dim),
                        task)
    batch = task.epoch(1)[0]
    mask = torch.rand(split.graph.num_nodes, generator=torch.Generator().manual_seed(3)) < 0.5
    torch.manual_seed(0)
    _, nodes, rows, predicted, weights, _ = joint(batch, mask)
    torch.manual_seed(0)
    step = task.step(model, batch)
    assert torch.equal(rows, mask[step.nodes]) and 0 < int(rows.sum()) < rows.numel()
    assert torch.equal(weights, step.align_weights[rows])
    target = torch.zeros_like(predicted)
    per_node = predicted.detach().pow(2).mean(1)
    expected = (per_node * weights).sum() / weights.sum()
    assert torch.isclose(alignment_single(predicted.detach(), target, weights), expected)


def test_affected_holds_every_changed_row_and_the_rest_stay(split, trained):
    graph, model = split.graph, trained.model
    item = int(torch.bincount(graph.edge_item).argmax())
    grown, changes = grown_graph(graph, split, users=5, item=item)
    before = np.concatenate([z.numpy() for z in model.embed(graph)])
    after = np.concatenate([z.numpy() for z in model.embed(grown)])
    changed = np.flatnonzero(np.abs(after - before).max(1) > 1e-5)
    affected = FAMILY.affected(SPEC, FAMILY.embed_inputs(SPEC, grown), changes)
    assert changed.size > 5 and graph.num_users + item in changed
    assert np.isin(changed, affected).all()
    assert affected.size < graph.num_nodes / 2
    untouched = np.setdiff1d(np.arange(graph.num_nodes), affected)
    assert np.allclose(after[untouched], before[untouched], atol=1e-5)
    assert FAMILY.incremental_blocker(SPEC) is None
    assert "mixing" in FAMILY.incremental_blocker(dataclasses.replace(SPEC,
                                                                      cold_start_mixing=True))


def test_training_learns_next_items(split, trained):
    history = trained.result.history
    assert history[-1]["softmax"] < history[0]["softmax"] * 0.8
    random = max(_recall(_model(split.graph, seed=seed), split) for seed in range(3))
    assert _recall(trained.model, split) > 1.2 * random


def test_bc_aligner_pulls_towards_the_previous_version(split, small_snapshot, trained):
    prev = PreviousVersion(0, SPEC, TransformChain([SPEC.output_dim]).amplifiers(),
                           model=trained.model)
    later = period_split(small_snapshot, 0.8, 1.0)
    targets, _ = prev.targets(later.graph)
    users = torch.arange(later.graph.num_nodes) < later.graph.num_users
    errors, embedded = {}, {}
    for name in ("non-bc", "bc-aligner", "bc-aligner-refit"):
        outcome = train_version(get_method(name), FAMILY.grown(SPEC, 1, 8), later.graph,
                                CONFIG, prev, item_pool=later.item_pool)
        z = embedded[name] = torch.cat(outcome.model.embed(later.graph))
        weight, bias = outcome.transform
        predicted = z @ torch.from_numpy(weight).T + torch.from_numpy(bias)
        error = (predicted - targets).norm(dim=1)
        errors[name] = {"user": error[users].mean().item(), "item": error[~users].mean().item(),
                        "all": error.pow(2).mean().item()}
    for entity in ("user", "item"):  # users too, though a step holds few of them
        assert errors["bc-aligner"][entity] < 0.5 * errors["non-bc"][entity], (entity, errors)
    # The refit trains the same M_k and puts the exact minimiser of the loss in place of B_k.
    assert torch.equal(embedded["bc-aligner-refit"], embedded["bc-aligner"])
    assert errors["bc-aligner-refit"]["all"] < errors["bc-aligner"]["all"], errors


def test_warm_start_and_fine_tune_start_from_the_previous_model(split, trained):
    previous = trained.model
    same = _model(split.graph, seed=5)
    FAMILY.fine_tune_from(same, previous)
    assert torch.allclose(torch.cat(same.embed(split.graph)),
                          torch.cat(previous.embed(split.graph)))
    wider = _model(split.graph, FAMILY.grown(SPEC, 2, 8), seed=5)
    FAMILY.warm_start(wider, previous, split.graph, "metadata", seed=0)
    old, new = previous.ids["item"].weight, wider.ids["item"].weight
    assert torch.equal(new[:, :SPEC.dim], old)
    assert torch.isfinite(torch.cat(wider.embed(split.graph))).all()
    with pytest.raises(ConfigError, match="finetune-m0"):
        FAMILY.fine_tune_from(wider, previous)


def test_ranks_take_equal_disjoint_shards(split):
    model = _model(split.graph)
    tasks = [FAMILY.task(model, split.graph, CONFIG, rank=r, world_size=3) for r in range(3)]
    shards = [task.epoch_windows(2) for task in tasks]
    assert len({len(shard) for shard in shards}) == 1
    assert len({len(task.epoch(2)) for task in tasks}) == 1
    keys = np.concatenate([shard.start for shard in shards])
    assert np.unique(keys).size == keys.size
    whole = FAMILY.task(model, split.graph, CONFIG).epoch_windows(2)
    assert np.array_equal(keys, whole.start[: keys.size])
    with pytest.raises(ConfigError, match="uniformly"):
        FAMILY.task(model, split.graph, dataclasses.replace(CONFIG, negatives="popularity"))
    with pytest.raises(TrainingError, match="cannot be shared"):
        FAMILY.task(model, split.graph, CONFIG, world_size=10 ** 6).epoch(1)
