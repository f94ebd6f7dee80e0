"""Which folders of embeddings made elsewhere a bump takes (no Ray: the folder rules alone)."""

import os
import shutil
import time

import numpy as np
import pytest

from bc_ray.exceptions import DataError
from bc_ray.io import FileIO
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.job import run_publish
from bc_ray.scheduler.publish_from import folder_outcome, pending, ready_folders, version_of
from bc_ray.store.store import Store
from tests.publish.conftest import embedding_table, put_parquet


def _folder(base: str, rng: np.random.Generator, entities=("user", "item")) -> None:
    for entity in entities:
        put_parquet(f"{base}/{entity}s/part-0.parquet",
                    embedding_table(list(range(40)), rng.normal(size=(40, 4)).astype(np.float32)))


def test_complete_folders_in_name_order_and_published_ones_never_again(tmp_path):
    root = f"file://{tmp_path}/made-elsewhere"
    rng = np.random.default_rng(0)
    for name in ("b-2026-11-22", "a-2026-11-21", "_tmp", ".staging"):
        _folder(f"{root}/{name}", rng)
    _folder(f"{root}/c-half", rng, entities=("user",))  # its items are not there yet
    _folder(f"{root}/d-fresh", rng)  # written just now, no marker: settles first
    _folder(f"{root}/e-marked", rng)
    open(f"{tmp_path}/made-elsewhere/e-marked/_SUCCESS", "w").close()
    for name in ("a-2026-11-21", "b-2026-11-22", "e-marked"):
        for path, _, files in os.walk(f"{tmp_path}/made-elsewhere/{name}"):
            for file in files:
                os.utime(os.path.join(path, file), (time.time() - 600,) * 2)
    io = FileIO(root)
    ready = ready_folders(io, settle_s=60.0)
    assert [f.name for f in ready] == ["a-2026-11-21", "b-2026-11-22", "e-marked"]
    first = ready[0]
    assert first.users == f"file://{tmp_path}/made-elsewhere/a-2026-11-21/users"

    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    run_publish(PublishConfig(store=uri, users=first.users, items=first.items))
    state = store.state()
    assert version_of(state, first).version == 0
    assert [f.name for f in pending(state, ready)] == ["b-2026-11-22", "e-marked"]
    store.commit(lambda _s: [{"type": "run.recorded", "run_id": "bump-1", "kind": "bump",
                              "status": "failed", "publish": [
                                  {"folder": "b-2026-11-22", "uri": ready[1].uri,
                                   "status": "failed", "version": None}]}])
    assert [f.name for f in pending(store.state(), ready)] == ["e-marked"]


def test_a_copy_of_the_current_versions_folder_is_unchanged_and_never_again(tmp_path):
    """Its publish succeeds with nothing to do (the same bytes): the run records it unchanged
    with the current version, and no later bump submits it again."""
    root = tmp_path / "made-elsewhere"
    _folder(f"file://{root}/a-2026-11-21", np.random.default_rng(0))
    shutil.copytree(root / "a-2026-11-21", root / "b-copy")
    for path, _, files in os.walk(root):
        for file in files:
            os.utime(os.path.join(path, file), (time.time() - 600,) * 2)
    first, copy = ready_folders(FileIO(f"file://{root}"), settle_s=60.0)
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    run_publish(PublishConfig(store=uri, users=first.users, items=first.items))
    again = run_publish(PublishConfig(store=uri, users=copy.users, items=copy.items))
    assert (again.status, again.version) == ("already published", 0)
    state = store.state()
    assert folder_outcome(state, copy, succeeded=True) == {"status": "unchanged", "version": 0}
    assert folder_outcome(state, copy, succeeded=False) == {"status": "failed", "version": None}
    assert [f.name for f in pending(state, [first, copy])] == ["b-copy"]
    store.commit(lambda _s: [{"type": "run.recorded", "run_id": "bump-1", "kind": "bump",
                              "status": "succeeded", "publish": [
                                  {"folder": copy.name, "uri": copy.uri,
                                   **folder_outcome(state, copy, succeeded=True)}]}])
    assert pending(store.state(), [first, copy]) == []


def test_a_missing_root_is_an_error_not_a_quiet_bump(tmp_path):
    with pytest.raises(DataError, match="--publish-from .* does not exist"):
        ready_folders(FileIO(f"file://{tmp_path}/nowhere"), settle_s=0.0)


def test_credentials_in_the_folder_uri_are_refused():
    from bc_ray.exceptions import ConfigError
    from bc_ray.scheduler.config import SchedulerConfig

    with pytest.raises(ConfigError, match="--publish-from 's3://\\*\\*\\*@bucket/x' carries"):
        SchedulerConfig(store="s3://bucket/store", ray_address="http://h:8265",
                        publish_from="s3://KEY:hunter2x@bucket/x")
