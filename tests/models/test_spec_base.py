"""`--spec` changes the keys it names and nothing else: the rest come from the spec a bump
would train without it (the current version's, else the family's default), never from the
dataclass's own defaults (GraphSAGE's `hidden_dim=256` where its family default is 64: a
`--spec mixing=true` trained a model four times wider)."""

from __future__ import annotations

import dataclasses

import pytest

from bc_ray.cli.train_cmd import _with_spec
from bc_ray.core.family_base import parse_spec_onto
from bc_ray.core.registry import get_family
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.spec import DEFAULT_SPEC, VersionSpec
from bc_ray.models.sequence.spec import SequenceSpec
from bc_ray.store.state import VersionRecord
from bc_ray.train.config import TrainJobConfig

GRAPHSAGE, SEQUENCE = get_family("graphsage"), get_family("sequence")


def _version(family: str, spec: dict) -> VersionRecord:
    return VersionRecord(version=0, status="published", parent=None, dim=8, method="bc-aligner",
                         spec=spec, snapshot_id="s", cutoff=0.5, files={}, family=family)


def test_keys_not_named_come_from_the_family_default_or_the_base():
    assert GRAPHSAGE.parse_spec("mixing=true") == \
        dataclasses.replace(DEFAULT_SPEC, cold_start_mixing=True)
    base = VersionSpec(num_layers=3, hidden_dim=96, out_dim=32)
    assert GRAPHSAGE.parse_spec("hidden=128", base=base) == \
        VersionSpec(num_layers=3, hidden_dim=128, out_dim=32)
    assert GRAPHSAGE.parse_spec("hidden=64", base=base).hidden_dim == 64  # a default, named
    assert SEQUENCE.parse_spec("heads=1", base=SequenceSpec(dim=24, num_heads=2)) == \
        SequenceSpec(dim=24, num_heads=1)
    with pytest.raises(ConfigError, match="hidden_dim is given twice"):
        GRAPHSAGE.parse_spec("hidden=64,hidden=128")


def test_a_bump_keeps_the_current_versions_spec_but_for_what_spec_names():
    current = _version("graphsage", VersionSpec(num_layers=3, hidden_dim=96).to_dict())
    job = _with_spec(TrainJobConfig(store="file:///nowhere"), "mixing=true", current)
    assert (job.model, job.spec) == ("graphsage", VersionSpec(
        num_layers=3, hidden_dim=96, cold_start_mixing=True))
    other_family = _with_spec(TrainJobConfig(store="file:///nowhere", model="sequence"),
                              "heads=1", current)
    assert other_family.spec == SequenceSpec(num_heads=1)
    first = _with_spec(TrainJobConfig(store="file:///nowhere"), "mixing=true", None)
    assert first.spec == dataclasses.replace(DEFAULT_SPEC, cold_start_mixing=True)


def test_a_family_whose_parser_takes_no_base_reads_the_text_its_own_way():
    class Older:
        def parse_spec(self, text: str) -> str:
            return f"parsed {text}"

    assert parse_spec_onto(Older(), "dim=4", base=object()) == "parsed dim=4"
