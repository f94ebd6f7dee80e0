"""A plug-in family installed where a job starts but not on the cluster's nodes is refused
before any Ray Train worker or refresh task starts (models/on_cluster.py), with one line naming
the node and its import error, instead of a worker group's traceback."""

from __future__ import annotations

import shutil

import pytest

from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError
from bc_ray.models import get_family
from bc_ray.models.on_cluster import check_loads_on_cluster
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from bc_ray.train.config import GateConfig, TrainJobConfig
from bc_ray.train.job import run_training
from tests.conftest import PLUGINS

pytestmark = pytest.mark.ray
NOT_ON_NODES = r"model family 'driver_only:TinyFamily' loads here but not on 1 of the cluster's 1 "


@pytest.fixture
def driver_only(tmp_path, monkeypatch) -> str:
    """The tiny family as a module only this process can import (the test cluster's workers
    have the repository and tests/models/plugin on their PYTHONPATH, not tmp_path)."""
    shutil.copy(PLUGINS / "bc_ray_tiny_family" / "__init__.py", tmp_path / "driver_only.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "driver_only:TinyFamily"


def _job(uri: str, model: str, workers: int) -> TrainJobConfig:
    return TrainJobConfig(store=uri, model=model, spec=get_family(model).default_spec(),
                          num_workers=workers, train=TrainConfig(epochs=1, batch_size=1024),
                          gate=GateConfig(max_align_error_rel=5.0, min_recall_vs_parent=0.0))


def test_a_family_the_nodes_cannot_import_is_refused_before_workers(ray_cluster, tmp_path,
                                                                    small_snapshot, driver_only):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.6))
    with pytest.raises(ConfigError, match=NOT_ON_NODES) as refused:
        run_training(_job(uri, driver_only, workers=2))
    assert "No module named 'driver_only'" in str(refused.value)
    assert "install the package that provides it on every node" in str(refused.value)
    assert store.state().current_version is None  # nothing registered
    # Trained in this process, it is published; its refresh's tasks would load it on the nodes.
    assert run_training(_job(uri, driver_only, workers=0)).status == "published"
    with pytest.raises(ConfigError, match=NOT_ON_NODES):
        run_refresh(RefreshConfig(store=uri, num_tasks=2))
    assert store.state().table(0, "user") is None


def test_families_the_nodes_have_pass(ray_cluster):
    check_loads_on_cluster(["tiny", "graphsage", "sequence"])  # tiny: on the workers' path


def test_a_node_with_another_release_of_the_plugin_is_refused(ray_cluster, tiny_release_0_2):
    with pytest.raises(ConfigError, match=(
            r"model family 'tiny' is bc-ray-tiny-family==0\.2 here but "
            r"bc-ray-tiny-family==0\.1 on 1 of the cluster's 1 nodes \(node .* at .*\); install "
            r"one release on every node and where the job is launched")):
        check_loads_on_cluster(["tiny"])
