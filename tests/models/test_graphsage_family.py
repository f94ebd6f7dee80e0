"""GraphSAGE's incremental reach: new edges change layer l within l-1 hops of their endpoints,
a changed feature row within l hops of its entity (its input h_0 changed), so the rows the
refresh recomputes (`GraphSAGE.affected`, the refresh's `layer_frontiers`) hold every row that
really changed and nothing outside them moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bc_ray.core.family import Vocabularies
from bc_ray.core.graph import GraphTensors
from bc_ray.core.splits import period_split
from bc_ray.models import get_family
from bc_ray.models.graphsage.spec import VersionSpec
from tests.models.grow import grown_graph

FAMILY = get_family("graphsage")


@pytest.fixture(scope="module")
def split(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8)


def _embed(model, graph: GraphTensors) -> np.ndarray:
    return np.concatenate([z.numpy() for z in model.embed(graph)])


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_affected_holds_every_changed_row_and_the_rest_stay(split, layers):
    spec = VersionSpec(num_layers=layers, hidden_dim=16)
    graph = split.graph
    torch.manual_seed(0)
    model = FAMILY.build(spec, Vocabularies.of(graph)).eval()
    quiet = int(torch.bincount(graph.edge_item, minlength=graph.num_items)[:50].argmin())
    grown, changes = grown_graph(graph, split, users=3, item=quiet)
    changed = np.flatnonzero(np.abs(_embed(model, grown) - _embed(model, graph)).max(1) > 1e-5)
    affected = FAMILY.affected(spec, grown, changes)
    assert np.isin(changed, affected).all()
    assert graph.num_users + quiet in changed  # the feature change alone moved its row
    untouched = np.setdiff1d(np.arange(graph.num_nodes), affected)
    assert np.allclose(_embed(model, grown)[untouched], _embed(model, graph)[untouched],
                       atol=1e-5)
