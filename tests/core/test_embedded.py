"""The model contract bc_ray reads (core/embedded.py, core/family_base.py's spec text): a plug-in
that breaks it gets one error naming the rule, where it breaks, instead of users and items
silently swapped, a dtype error inside a loss, or a spec field quietly read as text. Built on
the test-only `tiny` family (tests/models/plugin), without Ray."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pytest
import torch

from bc_ray.core.embedded import check_step, embedded
from bc_ray.core.family import TaskStep, Vocabularies
from bc_ray.core.family_base import parse_fields, spec_from_fields
from bc_ray.core.splits import period_split
from bc_ray.exceptions import ConfigError, ShapeError
from bc_ray_tiny_family import TinyFamily, TinySpec


@pytest.fixture(scope="module")
def graph(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8).graph


@pytest.fixture
def model(graph):
    return TinyFamily().build(TinySpec(dim=8), Vocabularies.of(graph))


def test_embeddings_are_read_in_eval_mode_as_checked_constants(model, graph):
    model.train()
    seen = []
    original = type(model).embed

    def watched(self, graph_):
        seen.append(self.training)
        z_user, _ = original(self, graph_)
        return z_user, torch.nn.Parameter(torch.zeros(graph_.num_items, 8))  # needs grad

    model.embed = watched.__get__(model)
    z_user, z_item = embedded(model, graph)
    assert seen == [False] and model.training  # eval while embedding, its mode restored after
    assert z_user.shape == (graph.num_users, 8) and z_item.shape == (graph.num_items, 8)
    assert not z_item.requires_grad  # read as a constant: no backward through it later


@pytest.mark.parametrize("broken, message", [
    (lambda u, i: (i, u), r"z_user has shape .* expected .*\(are users and items swapped\?\)"),
    (lambda u, i: (u.double(), i), r"z_user is torch.float64, expected torch.float32"),
    (lambda u, i: (u[:, :4], i), r"z_user has shape \(\d+, 4\), expected \(\d+, 8\)"),
    (lambda u, i: torch.cat([u, i]), r"must return \(z_user, z_item\), two tensors; got Tensor"),
])
def test_an_embed_that_breaks_the_contract_is_one_error_naming_the_rule(model, graph, broken,
                                                                          message):
    original = type(model).embed
    model.embed = lambda graph_: broken(*original(model, graph_))
    with pytest.raises(ShapeError, match=message):
        embedded(model, graph)


def test_a_step_is_checked_against_its_nodes():
    z = torch.zeros(3, 8)
    check_step(TaskStep(torch.tensor(0.0), torch.tensor([1, 4, 9]), z), 8, "Task", first=True)
    with pytest.raises(ShapeError, match="sorted and unique"):
        check_step(TaskStep(torch.tensor(0.0), torch.tensor([4, 1, 9]), z), 8, "Task", True)
    check_step(TaskStep(torch.tensor(0.0), torch.tensor([4, 1, 9]), z), 8, "Task", False)
    with pytest.raises(ShapeError, match=r"z has shape \(2, 8\) for \(3,\) nodes"):
        check_step(TaskStep(torch.tensor(0.0), torch.tensor([1, 4, 9]), z[:2]), 8, "T", False)
    with pytest.raises(ShapeError, match="z is torch.float64"):
        check_step(TaskStep(torch.tensor(0.0), torch.tensor([1, 4, 9]), z.double()), 8, "T",
                   False)


@dataclasses.dataclass(frozen=True)
class RichSpec:
    family: ClassVar[str] = "rich"
    dim: int = 8
    agg: Literal["mean", "max"] = "mean"
    widths: tuple[int, ...] = (16, 8)

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")


def test_spec_text_is_read_by_field_type_or_refused_by_name():
    assert parse_fields(RichSpec, "dim=4,agg=max", "rich") == RichSpec(dim=4, agg="max")
    for text, message in [("dim=4,dim=64", "rich spec: dim is given twice"),
                          ("agg=sum", r"rich spec: agg must be one of \['max', 'mean'\]"),
                          ("widths=32", "a field of type tuple.* cannot be read from key=value"),
                          ("dim=0", r"rich spec \{'dim': 0\}: dim must be >= 1, got 0")]:
        with pytest.raises(ConfigError, match=message):
            parse_fields(RichSpec, text, "rich")


def test_a_spec_record_round_trips_its_tuples():
    spec = RichSpec(widths=(32, 16))
    recorded = {"dim": 8, "agg": "mean", "widths": [32, 16]}  # as JSON gives it back
    assert spec_from_fields(RichSpec, recorded, "rich") == spec
    assert spec_from_fields(TinySpec, {"dim": 4}, "tiny") == TinySpec(dim=4)


def test_a_model_whose_width_is_not_its_specs_is_refused(model, graph):
    model.output_dim = 4  # B_k is built for the spec's 8
    with pytest.raises(ShapeError, match="output_dim is 4 but its spec's is 8"):
        embedded(model, graph)
