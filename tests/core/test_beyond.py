"""The switches beyond the paper: warm start, age-aware mixing, the orthogonal (stable) space."""

import dataclasses

import pytest
import torch

from bc_ray.core.methods import get_method
from bc_ray.core.mixing import AgeMixing
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.transforms import TransformChain, make_transform
from bc_ray.core.version import PreviousVersion, prepare_trainer, train_version
from bc_ray.core.warmstart import truncation_start, warm_start
from bc_ray.exceptions import ConfigError

SPEC = VersionSpec(hidden_dim=16)
CONFIG = TrainConfig(epochs=3, batch_size=1024, lr=5e-3, eval_every=3, warmup_epochs=0)


@pytest.fixture(scope="module")
def splits(small_snapshot):
    return period_split(small_snapshot, 0.5, 0.7), period_split(small_snapshot, 0.7, 0.9)


@pytest.fixture(scope="module")
def previous(splits):
    return train_version(get_method("non-bc"), SPEC, splits[0].graph, CONFIG, None).model


def test_warm_start_with_the_same_spec_reproduces_the_previous_model(splits, previous):
    graph = splits[1].graph
    model = build_model(SPEC, graph)
    degree = graph.degrees()
    model.zero_unseen_ids(degree[0] > 0, degree[1] > 0)
    warm_start(model, previous, graph, "mean")
    known = previous.ids["item"].weight[:-1].abs().sum(1) > 0
    old_graph = splits[0].graph  # where the entities new to `graph` have no edges yet
    z_old = previous.eval()(old_graph)[old_graph.num_users:][known]
    z_new = model.eval()(old_graph)[old_graph.num_users:][known]
    assert torch.allclose(z_old, z_new, atol=1e-5)


def test_wider_versions_copy_the_overlap_and_initialise_new_entities(splits, previous):
    graph = splits[1].graph
    wider = SPEC.grown(1, width_step=8)
    degree = graph.degrees()
    trained = previous.ids["user"].weight[:-1].abs().sum(1) > 0
    new = (degree[0] > 0) & ~trained
    assert new.any()
    for strategy in ("mean", "metadata"):
        model = build_model(wider, graph)
        model.zero_unseen_ids(degree[0] > 0, degree[1] > 0)
        warm_start(model, previous, graph, strategy, seed=1)
        assert torch.equal(model.convs[0].lin_l.weight[:16, :16], previous.convs[0].lin_l.weight)
        rows = model.ids["user"].weight[:-1]
        assert torch.equal(rows[trained][:, :16], previous.ids["user"].weight[:-1][trained])
        assert rows[new].abs().sum(1).gt(0).all()  # new entities no longer start at zero
        mean = previous.ids["user"].weight[:-1][trained].mean(0)
        if strategy == "mean":
            assert (rows[new][:, :16].mean(0) - mean).abs().max() < 0.1
    transform = make_transform("linear", 24, 16)
    truncation_start(transform)
    assert torch.equal(transform.weight_matrix(), torch.eye(16, 24))
    with pytest.raises(ConfigError, match="warm start"):
        TrainConfig(warm_start="hot")


def test_warm_start_is_a_training_switch(splits, previous):
    prev = PreviousVersion(0, SPEC, TransformChain([16]).amplifiers(), model=previous)
    config = dataclasses.replace(CONFIG, warm_start="metadata")
    trainer = prepare_trainer(get_method("bc-aligner"), SPEC.grown(1, 8), splits[1].graph,
                              config, prev)
    assert torch.equal(trainer.joint.transform.weight_matrix(), torch.eye(16, 24))
    result = trainer.fit()
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_age_aware_mixing_gates_by_age_and_drops_ids_in_training(splits):
    mixing = AgeMixing(4, id_dropout=1.0)
    assert mixing.gate(torch.tensor([0.0])).mean() < mixing.gate(torch.tensor([0.3])).mean()
    ids, meta, age = torch.ones(5, 4), torch.zeros(5, 4), torch.full((5,), 0.5)
    assert torch.equal(mixing.train()(ids, meta, age), torch.zeros(5, 4))  # every ID dropped
    assert mixing.eval()(ids, meta, age).min() > 0.5  # old entities keep their ID
    split = splits[1]
    assert split.graph.now == split.start  # future entities look brand new (age 0)
    spec = dataclasses.replace(SPEC, cold_start_mixing=True)
    outcome = train_version(get_method("non-bc"), spec, split.graph, CONFIG, None)
    assert outcome.model.mixing is not None
    assert torch.isfinite(torch.cat(outcome.model.embed(split.graph))).all()


def test_orthogonal_transform_keeps_the_space_stable(splits, previous):
    prev = PreviousVersion(0, SPEC, TransformChain([16]).amplifiers(), model=previous)
    outcome = train_version(get_method("bc-aligner-orth"), SPEC.grown(1, 8), splits[1].graph,
                            CONFIG, prev)
    weight = torch.from_numpy(outcome.transform[0])
    assert weight.shape == (16, 24)
    assert torch.allclose(weight @ weight.T, torch.eye(16), atol=1e-4)
