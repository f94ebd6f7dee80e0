"""finetune-m0 on a snapshot that grew since M_{k-1} (`fine_tune_copy`, the default of every
family): M_{k-1}'s weights and rows are copied, rows of entities and feature codes added since
keep their fresh initialisation, the ID tables' padding row stays last and zero."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from bc_ray.core.encoders import FeatureEncoder, id_tables
from bc_ray.core.warmstart import fine_tune_copy
from bc_ray.exceptions import ConfigError


@dataclass(frozen=True)
class Spec:
    family: ClassVar[str] = "test"
    dim: int = 4


class Model(nn.Module):
    def __init__(self, users: int, codes: int, spec: Spec = Spec(), note: str = "") -> None:
        super().__init__()
        self.spec, self.note = spec, note
        self.ids = id_tables(self, {"user": users}, spec.dim)
        self.features = FeatureEncoder({"genre": codes}, spec.dim)
        self.head = nn.Linear(spec.dim, spec.dim)

    def get_extra_state(self) -> dict:
        return {"note": self.note}

    def set_extra_state(self, state: dict) -> None:
        self.note = state["note"]


def test_grown_tables_keep_the_old_rows_and_the_new_rows_fresh():
    torch.manual_seed(0)
    previous, model = Model(users=5, codes=3, note="M_0"), Model(users=8, codes=4)
    fresh_users = model.ids["user"].weight.detach().clone()
    fresh_codes = model.features.bags["genre"].weight.detach().clone()
    fine_tune_copy(model, previous)
    users, old_users = model.ids["user"].weight, previous.ids["user"].weight
    assert torch.equal(users[:5], old_users[:5])  # the 5 users M_0 knew
    assert torch.equal(users[5:8], fresh_users[5:8])  # 3 users added since
    assert users.shape[0] == 9 and not users[8].any()  # the padding row, last and zero
    codes = model.features.bags["genre"].weight
    assert torch.equal(codes[:3], previous.features.bags["genre"].weight)
    assert torch.equal(codes[3], fresh_codes[3])  # a code added since
    assert torch.equal(model.head.weight, previous.head.weight)
    assert model.note == "M_0"  # a module's extra state comes along


def test_another_architecture_is_refused():
    with pytest.raises(ConfigError, match="finetune-m0 cannot change the architecture"):
        fine_tune_copy(Model(users=5, codes=3, spec=Spec(dim=8)), Model(users=5, codes=3))
