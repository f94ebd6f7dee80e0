"""The publication gate reads users and items each: pooled, one entity's broken alignment could
pass on the strength of the other's."""

from __future__ import annotations

import torch

from bc_ray.core.evaluation import relative_alignment_error, relative_error_by_entity
from bc_ray.train.config import GateConfig
from bc_ray.train.gate import gate


def test_an_entity_over_the_bound_is_a_reason_even_when_both_together_are_not():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(100, 8, generator=generator)
    predicted = target.clone()
    predicted[:10] += 2.0 * torch.randn(10, 8, generator=generator)  # the users, broken
    is_user = torch.arange(100) < 10
    _, pooled = relative_alignment_error(predicted, target)
    by_entity = relative_error_by_entity(predicted, target, is_user)
    assert by_entity["item"] == 0.0 and pooled < 0.5 < by_entity["user"]
    metrics = {"recall_at_50": 0.2, "align_error_rel": pooled,
               "align_error_rel_by_entity": by_entity}
    assert gate(metrics, GateConfig()) == [
        f"relative alignment error {by_entity['user']:.3f} of the users exceeds 0.5"]
    assert gate({**metrics, "align_error_rel_by_entity": {"item": 0.0}}, GateConfig()) == []
    assert relative_error_by_entity(predicted, target, torch.zeros(100, dtype=torch.bool)) == {
        "item": pooled}  # an entity with no rows in the sample is not measured
