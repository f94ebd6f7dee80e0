"""Where a sharded bump's alignment targets come from, decided and checked by the driver before
any pass over the edge files (the targets themselves: `test_sharded_bump.py`)."""

from __future__ import annotations

import dataclasses

import pytest

from bc_ray.exceptions import TrainingError
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState, VersionRecord
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.sharded_job import _check_inputs, target_source

JOB = TrainJobConfig(store="file:///nowhere", sharded=True)
SPEC = VersionSpec(hidden_dim=16)


def _parent(family: str = "graphsage", model_removed: bool = False) -> VersionRecord:
    return VersionRecord(version=3, status="published", parent=2, dim=8, method="bc-aligner",
                         spec={}, snapshot_id="s", cutoff=0.5, files={}, family=family,
                         model_removed=model_removed)


def test_the_targets_are_m_k_minus_1_on_the_training_graph_unless_there_is_no_model():
    assert JOB.targets == "model"  # the default, as for the one-table bump
    assert target_source(JOB, None) is None  # version 0 aligns to nothing
    assert target_source(JOB, _parent()) == "model"
    assert target_source(dataclasses.replace(JOB, targets="stored"), _parent()) == "stored"
    # A published parent's tables are its only embeddings, whatever --targets says.
    assert target_source(JOB, _parent(EXTERNAL_FAMILY)) == "stored"


def test_what_the_targets_need_is_refused_before_the_driver_reads_the_edges():
    unrefreshed = StoreState()  # no tables of any version
    _check_inputs(unrefreshed, SPEC, _parent(), "model")  # model targets need no tables
    with pytest.raises(TrainingError, match=r"not been refreshed.*--targets model"):
        _check_inputs(unrefreshed, SPEC, _parent(), "stored")
    with pytest.raises(TrainingError, match="not been refreshed: run `bc-ray refresh` first$"):
        _check_inputs(unrefreshed, SPEC, _parent(EXTERNAL_FAMILY), "stored")
    with pytest.raises(TrainingError, match=r"model was removed.*--targets stored"):
        _check_inputs(unrefreshed, SPEC, _parent(model_removed=True), "model")
