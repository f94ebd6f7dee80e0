"""`bc-ray rollback` (issue 17): an earlier published version becomes current again when its
model and tables are kept; refused with the reason when they are not; readers, Serve's state
and the next bump follow it; the rolled-back version's files go through retention."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bc_ray import read_embeddings
from bc_ray.cli.main import app
from bc_ray.exceptions import NotFoundError, StoreError
from bc_ray.serve.state import ServingState
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.versions import rollback_version
from tests.helpers import publish_fake_version, refresh_fake_tables

runner = CliRunner()


def _store(uri: str, dims: list[int], keep_versions: int) -> tuple[Store, dict[int, dict]]:
    """Versions with these dimensions, each published and refreshed (tables per version)."""
    rng = np.random.default_rng(0)
    store = Store(uri, retention=RetentionPolicy(keep_versions=keep_versions,
                                                 staging_grace_seconds=0))
    matrices = {}
    for dim in dims:
        version = publish_fake_version(store, dim, rng)
        matrices[version] = refresh_fake_tables(store, version, 30, rng)
    return store, matrices


def _embeddings(frame) -> np.ndarray:
    return np.stack(frame["embedding"].to_numpy())


def test_rollback_makes_the_previous_version_current_for_every_reader(store_uri):
    store, matrices = _store(store_uri, [8, 6], keep_versions=2)
    assert ServingState.load(store).current == 1
    result = runner.invoke(app, ["rollback", "--store", store_uri, "--reason", "bad recall",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"current_version": 0, "rolled_back": [1]}

    state = store.state()
    assert state.current_version == 0 and state.versions[1].status == "rolled_back"
    assert "bad recall" in state.versions[1].reasons[0]
    latest = read_embeddings(store_uri, "item")
    assert latest["source_version"].unique().to_list() == [0]
    np.testing.assert_allclose(_embeddings(latest), matrices[0]["item"], rtol=1e-6)
    with pytest.raises(NotFoundError, match=r"not a published version on the current "
                                            r"lineage \[0\] \(it was rolled back\)"):
        read_embeddings(store_uri, "item", version=1)
    served = ServingState.load(store)  # what Serve's next poll loads
    assert served.current == 0 and served.tables["item"].version == 0
    # retention unreferenced the rolled-back version's model and tables
    assert state.versions[1].model_removed and state.table(1, "item") is None
    # the next bump is trained against version 0 and serves version 0 through its B_k
    rng = np.random.default_rng(1)
    bumped = publish_fake_version(store, 4, rng)
    assert bumped == 2 and store.state().versions[2].parent == 0
    refresh_fake_tables(store, bumped, 30, rng)
    through_chain = read_embeddings(store_uri, "item", version=0, prefer_stored=False)
    assert through_chain["source_version"].unique().to_list() == [2]


def test_rollback_is_refused_with_its_reason(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = _store(uri, [8, 6, 6], keep_versions=1)
    before = store.state().seq
    with pytest.raises(StoreError, match="retention removed its model and its user table"):
        rollback_version(store)
    with pytest.raises(StoreError, match="already the current version"):
        rollback_version(store, to=2)
    with pytest.raises(StoreError, match="not an earlier published version"):
        rollback_version(store, to=7)
    assert store.state().seq == before  # nothing was committed
    result = runner.invoke(app, ["rollback", "--store", uri, "--to", "0"])
    assert result.exit_code != 0 and "retention removed" in str(result.exception or
                                                                 result.output)
    single, _ = _store(f"file://{tmp_path}/single", [8], keep_versions=2)
    with pytest.raises(StoreError, match="first published version"):
        rollback_version(single)


def test_the_default_retention_keeps_what_a_rollback_needs(tmp_path):
    store, _ = _store(f"file://{tmp_path}/store", [8, 6, 6], keep_versions=2)
    assert RetentionPolicy().keep_versions == 2
    record = rollback_version(store, to=1)
    assert record.version == 1 and store.state().versions[2].status == "rolled_back"
    with pytest.raises(StoreError, match="retention removed"):  # version 0 was outside it
        rollback_version(store, to=0)
