import dataclasses

import pytest
import torch

from bc_ray.core.evaluation import recall_at_k
from bc_ray.core.methods import get_method
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import Alignment, VersionTrainer
from bc_ray.core.transforms import TransformChain, make_transform
from bc_ray.core.version import PreviousVersion, split_evaluator, train_version
from bc_ray.exceptions import ConfigError, TrainingError

SPEC = VersionSpec(num_layers=2, hidden_dim=16)
CONFIG = TrainConfig(epochs=6, batch_size=512, lr=5e-3, eval_every=2, warmup_epochs=2)


@pytest.fixture(scope="module")
def split(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8)


def _popularity_recall(split):
    eu, ei = split.eval_pairs
    ku, ki = split.train_pairs
    degree = torch.bincount(ki, minlength=split.graph.num_items).float()
    return recall_at_k(torch.ones(split.graph.num_users, 1), degree[:, None], eu, ei, ku, ki,
                       item_pool=split.item_pool)


def test_training_learns_and_is_reproducible(split):
    runs = []
    for _ in range(2):
        outcome = train_version(get_method("non-bc"), SPEC, split.graph, CONFIG, None,
                                lambda targets: split_evaluator(split, targets, users=None),
                                item_pool=split.item_pool)
        runs.append(outcome)
    history = runs[0].result.history
    assert history[-1]["bpr"] < history[0]["bpr"] * 0.8
    first, second = (torch.cat(r.model.embed(split.graph)) for r in runs)
    assert torch.equal(first, second)
    eu, ei = split.eval_pairs
    ku, ki = split.train_pairs
    recall = recall_at_k(*runs[0].model.embed(split.graph), eu, ei, ku, ki,
                         item_pool=split.item_pool)
    assert recall > 0.8 * _popularity_recall(split)


def test_sampled_minibatches_train_too(split):
    config = dataclasses.replace(CONFIG, mode="sampled", fanout=5)
    outcome = train_version(get_method("non-bc"), SPEC, split.graph, config, None)
    assert outcome.result.history[-1]["bpr"] < outcome.result.history[0]["bpr"]


def test_ranks_take_equal_disjoint_shards(split):
    model = build_model(SPEC, split.graph)
    shards = [VersionTrainer(model, split.graph, CONFIG, rank=r, world_size=2).task.epoch_triples(3)
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    whole = VersionTrainer(model, split.graph, CONFIG).task.epoch_triples(3)
    assert torch.equal(torch.cat([shards[0].user, shards[1].user]),
                       whole.user[: 2 * len(shards[0])])


def test_joint_alignment_pulls_towards_the_previous_version(split, small_snapshot):
    previous = train_version(get_method("non-bc"), SPEC, split.graph, CONFIG, None)
    prev = PreviousVersion(0, SPEC, TransformChain([16]).amplifiers(), model=previous.model)
    later = period_split(small_snapshot, 0.8, 1.0)
    errors = {}
    for name in ("non-bc", "bc-aligner"):
        outcome = train_version(get_method(name), SPEC.grown(1, 8), later.graph, CONFIG, prev)
        targets, _ = prev.targets(later.graph)
        z = torch.cat(outcome.model.embed(later.graph))
        weight, bias = outcome.transform
        predicted = z @ torch.from_numpy(weight).T + torch.from_numpy(bias)
        errors[name] = (predicted - targets).norm(dim=1).mean().item()
    assert errors["bc-aligner"] < 0.5 * errors["non-bc"]


def test_bad_inputs_raise_clear_errors(split):
    with pytest.raises(ConfigError, match="mode"):
        TrainConfig(mode="turbo")
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("bc-magic")
    targets = torch.full((split.graph.num_nodes, 8), float("nan"))
    with pytest.raises(TrainingError, match="NaN"):
        Alignment(make_transform("linear", 16, 8), targets,
                  torch.ones(split.graph.num_nodes, dtype=torch.bool))
    unnormalised = build_model(dataclasses.replace(SPEC, batch_norm=False), split.graph)
    diverging = dataclasses.replace(CONFIG, lr=1e30, epochs=3, reg=0.0)
    with pytest.raises(TrainingError, match="diverged"):
        VersionTrainer(unnormalised, split.graph, diverging).fit()


def test_early_stopping_ends_after_patience_evaluations_without_a_better_state(split):
    """Issue 15: the same rule for every method; the epoch it stopped at is recorded."""
    recalls = iter([0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3])

    def scripted(model, transform):
        return {"recall": next(recalls)}

    config = dataclasses.replace(CONFIG, epochs=8, eval_every=1, warmup_epochs=1, patience=2)
    trainer = VersionTrainer(build_model(SPEC, split.graph), split.graph, config,
                             evaluator=scripted)
    result = trainer.fit()
    assert (result.selected_epoch, result.stopped_epoch) == (2, 4)
    assert len(result.history) == 4
    full = VersionTrainer(build_model(SPEC, split.graph), split.graph,
                          dataclasses.replace(config, patience=0),
                          evaluator=lambda model, transform: {"recall": 0.1})
    assert full.fit().stopped_epoch == 8  # patience 0: every epoch, as before
    with pytest.raises(ConfigError, match="patience"):
        dataclasses.replace(config, patience=-1)


def test_long_epochs_report_progress(split):
    """Issue 16: a sampled epoch over a large graph runs for minutes; it reports steps, edges/s
    and an ETA on the way (here every step, with a zero interval)."""
    config = dataclasses.replace(CONFIG, mode="sampled", fanout=5, batch_size=256)
    trainer = VersionTrainer(build_model(SPEC, split.graph), split.graph, config)
    seen: list[dict] = []
    stats = trainer.run_epoch(1, seen.append, progress_every_s=0.0)
    assert [s["step"] for s in seen] == list(range(1, stats["steps"] + 1))
    assert all(s["steps"] == stats["steps"] and s["edges_per_s"] > 0 for s in seen)
    assert seen[-1]["eta_s"] == 0 and seen[0]["eta_s"] > 0


def test_a_step_budget_bounds_training_whatever_the_graphs_size(split):
    """Issue 29: a bump on a large graph trains `max_steps` steps in all, of at most
    `edges_per_epoch` examples per epoch, and the last epoch is evaluated and selectable."""
    evaluated: list[int] = []

    def scored(model, transform):
        evaluated.append(len(evaluated))
        return {"recall": 0.1 * len(evaluated)}

    config = dataclasses.replace(CONFIG, epochs=50, eval_every=10, warmup_epochs=40,
                                 batch_size=256, edges_per_epoch=600, max_steps=7)
    trainer = VersionTrainer(build_model(SPEC, split.graph), split.graph, config,
                             evaluator=scored)
    result = trainer.fit()
    assert [h["steps"] for h in result.history] == [3, 3, 1]  # ceil(600 / 256) per epoch
    assert trainer.steps_done == 7 and result.stopped_epoch == 3
    assert len(trainer.task.epoch_triples(4)) == 3 * 256  # drawn for the budget, not every edge
    assert evaluated == [0] and result.selected_epoch == 3  # the last epoch, though in warm-up
    full = VersionTrainer(build_model(SPEC, split.graph), split.graph,
                          dataclasses.replace(CONFIG, epochs=1, batch_size=256))
    assert full.run_epoch(1)["steps"] > 3  # without a budget: every edge
    resumed = VersionTrainer(build_model(SPEC, split.graph), split.graph, config)
    resumed.load_state(trainer.state())
    assert resumed.steps_done == 7 and resumed.budget_spent
    with pytest.raises(ConfigError, match="max_steps"):
        dataclasses.replace(config, max_steps=-1)


def test_the_last_epoch_selected_keeps_no_copy_and_an_earlier_one_is_restored(split):
    """Issue 29: a selected last epoch is the live state (no copy of the tables beside it); a
    state selected earlier is restored by `result()` and survives a checkpoint round trip."""
    config = dataclasses.replace(CONFIG, epochs=4, eval_every=1, warmup_epochs=0)

    def weights(module) -> dict:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    rising = iter([0.1, 0.2, 0.3, 0.4])
    trainer = VersionTrainer(build_model(SPEC, split.graph), split.graph, config,
                             evaluator=lambda model, transform: {"recall": next(rising)})
    live_at_end: dict = {}
    result = trainer.fit(on_epoch=lambda stats: live_at_end.update(weights(trainer.joint)))
    assert result.selected_epoch == 4 and trainer.state()["best_state"] is None
    assert all(torch.equal(v, live_at_end[k]) for k, v in trainer.joint.state_dict().items())

    falling = iter([0.1, 0.4, 0.3, 0.2])
    at_epoch: dict[int, dict] = {}
    earlier = VersionTrainer(build_model(SPEC, split.graph), split.graph, config,
                             evaluator=lambda model, transform: {"recall": next(falling)})
    picked = earlier.fit(on_epoch=lambda stats: at_epoch.update({
        stats["epoch"]: weights(earlier.joint)}))
    assert picked.selected_epoch == 2
    assert all(torch.equal(v, at_epoch[2][k]) for k, v in earlier.joint.state_dict().items())
    saved = earlier.state()
    assert saved["best_state"] is not None
    resumed = VersionTrainer(build_model(SPEC, split.graph), split.graph, config)
    resumed.load_state(saved)
    assert resumed.result().selected_epoch == 2
    assert all(torch.equal(v, at_epoch[2][k]) for k, v in resumed.joint.state_dict().items())
