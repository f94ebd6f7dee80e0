"""Nothing readable is ever lost (issue 14, items 3-6, 13 and 17): retention, grace, gc and
commits on a real store (file:// and the local S3 server)."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bc_ray import read_embeddings, scan_embeddings
from bc_ray.exceptions import ConfigError, NotFoundError, StoreError
from bc_ray.serve.state import RequestError, ServingState
from bc_ray.store.log import Backoff
from bc_ray.store.maintenance import apply_retention, collect_garbage
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix, write_table
from tests.helpers import publish_fake_version, refresh_fake_tables, store_with_chain

ENV = {k: v for k, v in os.environ.items()
       if k not in ("BC_RAY_KEEP_VERSIONS", "BC_RAY_GRACE_SECONDS")}


def test_after_a_bump_the_previous_tables_stay_readable_until_the_new_ones_land(store_uri):
    """Item 3: strict keep-latest; a bump whose refresh has not run (or failed)."""
    store, matrices = store_with_chain(store_uri, [8], rows=20)
    store = Store(store_uri, retention=RetentionPolicy(keep_versions=1))
    publish_fake_version(store, 6, np.random.default_rng(1))
    apply_retention(store)  # what a failed refresh's next writer would do
    for version in (None, 0):
        frame = read_embeddings(store_uri, "item", version=version)
        assert frame["source_version"].unique().to_list() == [0]
        assert np.allclose(np.stack(frame["embedding"].to_numpy()), matrices["item"])
    assert scan_embeddings(store_uri, "user").collect().height == 20
    with pytest.raises(NotFoundError, match="version 1"):
        read_embeddings(store_uri, "item", version=1)
    served = ServingState.load(store)
    rows, found, version = served.lookup("item", [10_000, 10_001, 5], None)
    assert version == 0 and found.tolist() == [True, True, False]
    with pytest.raises(RequestError) as refused:
        served.lookup("item", [10_000], 1)
    assert refused.value.status == 404
    refresh_fake_tables(store, 1, 20, np.random.default_rng(2))  # the new tables land
    state = store.state()
    assert state.table(0, "item") is None and state.table(1, "item") is not None
    assert read_embeddings(store_uri, "item")["source_version"].unique().to_list() == [1]


def _refresh_at(store: Store, version: int, refreshed_at: datetime) -> None:
    dim = store.state().version(version).dim
    refresh_id = store.new_prefix("r").split("/")[1]
    tables = []
    for entity in ("user", "item"):
        files = write_table(store, table_prefix(store, version, entity, refresh_id),
                            np.arange(10), np.ones((10, dim), np.float32), version, refreshed_at)
        tables.append(TableFiles(entity, files, 10, dim))
    publish_refresh(store, version, refresh_id, tables, "s", 1.0, "full", refreshed_at)


def test_grace_counts_from_the_commit_that_removed_the_file(tmp_path):
    """Item 4: a refresh whose last stage took 61 minutes must not purge the previous table."""
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=10)
    store = Store(uri, retention=RetentionPolicy(staging_grace_seconds=3600))
    previous = store.state().table(0, "item")
    _refresh_at(store, 0, datetime.now(timezone.utc) - timedelta(minutes=61))
    state = store.state()
    assert all(store.io.exists(f.path) for f in previous.files)
    stamped = datetime.fromisoformat(state.garbage[previous.files[0].path])
    assert datetime.now(timezone.utc) - stamped < timedelta(minutes=1)


def test_retention_is_a_property_of_the_store_not_of_the_shell(tmp_path):
    """Item 5: kept with 3 versions, then gc from a shell without the variable."""
    uri = f"file://{tmp_path}/store"
    cli = [sys.executable, "-m", "bc_ray.cli.main"]
    store = Store(uri, retention=RetentionPolicy(keep_versions=3, staging_grace_seconds=0))
    rng = np.random.default_rng(0)
    publish_fake_version(store, 8, rng)  # a store must exist before it is configured
    done = subprocess.run(cli + ["store", "config", "--store", uri, "--keep-versions", "3",
                                 "--grace-seconds", "0", "--json"], env=ENV, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert '"source": "log"' in done.stdout
    for dim in (8, 8, 8, 8):
        version = publish_fake_version(store, dim, rng)
        refresh_fake_tables(store, version, 10, rng)
    done = subprocess.run(cli + ["gc", "--store", uri], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = store.state()
    assert sorted({t.version for t in state.tables.values()}) == [2, 3, 4]
    assert [v for v, r in state.versions.items() if not r.model_removed] == [2, 3, 4]


def test_retention_from_the_environment_is_recorded_in_the_log(tmp_path, monkeypatch):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=10)
    monkeypatch.setenv("BC_RAY_KEEP_VERSIONS", "3")
    apply_retention(Store(uri))
    monkeypatch.delenv("BC_RAY_KEEP_VERSIONS")
    assert Store(uri).retention.keep_versions == 3
    monkeypatch.setenv("BC_RAY_KEEP_VERSIONS", "1")  # the log wins from now on
    assert Store(uri).retention.keep_versions == 3


def test_gc_refuses_a_short_grace_and_commits_refuse_missing_files(tmp_path):
    """Item 6: gc --grace 1 while a writer is between its writes and its commit."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=10)
    refresh_id = "20260101T000000-inflight"
    tables = []
    for entity in ("user", "item"):  # an in-flight writer's files, not yet committed
        files = write_table(store, table_prefix(store, 0, entity, refresh_id), np.arange(10),
                            np.ones((10, 8), np.float32), 0, datetime.now(timezone.utc))
        tables.append(TableFiles(entity, files, 10, 8))
    done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "gc", "--store", uri,
                           "--grace", "1"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "--force" in done.stderr
    assert all(store.io.exists(f.path) for t in tables for f in t.files)
    with pytest.raises(ConfigError):
        collect_garbage(store, grace_seconds=1)
    assert collect_garbage(store, grace_seconds=0, force=True)  # forced: the writer's files go
    seq = store.state().seq
    with pytest.raises(StoreError, match="is gone"):
        publish_refresh(store, 0, refresh_id, tables, "s", 1.0, "full",
                        datetime.now(timezone.utc))
    assert store.state().seq == seq  # nothing committed


def _commit_many(uri: str, count: int, seed: int, errors) -> None:
    store = Store(uri, retention=RetentionPolicy())
    for index in range(count):
        try:
            store.commit(lambda _s, i=index: [{"type": "run.recorded", "run_id": f"{seed}-{i}",
                                               "kind": "test", "status": "succeeded"}])
        except StoreError as exc:
            errors.put(repr(exc))


def test_contending_writers_all_land_with_backoff(tmp_path):
    """Item 13: 6 processes x 30 commits, every one lands exactly once."""
    uri = f"file://{tmp_path}/store"
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    workers = [context.Process(target=_commit_many, args=(uri, 30, seed, errors))
               for seed in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors.empty(), errors.get()
    assert len(Store(uri).state().runs) == 180


def test_backoff_grows_exponentially_with_full_jitter():
    backoff = Backoff(base_seconds=0.01, cap_seconds=1.0)
    rng = random.Random(0)
    for attempt in range(10):
        bound = min(1.0, 0.01 * 2 ** attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= bound
        assert max(delays) > 0.8 * bound and len(set(delays)) == 200  # jittered, spread out


def test_local_files_and_the_log_folder_are_synced_before_and_after_commit(tmp_path,
                                                                           monkeypatch):
    """Item 17: a data file is fsynced before the entry naming it is written, the log's
    folder after."""
    synced: list[str] = []
    real = os.fsync

    def recording(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    store, _ = store_with_chain(f"file://{tmp_path}/store", [8], rows=10)
    monkeypatch.setattr(os, "fsync", recording)
    refresh_fake_tables(store, 0, 10, np.random.default_rng(3))
    table = store.state().table(0, "item")
    data_file = store.io.path(table.files[0].path)
    log_dir = store.io.path("_log")
    entry = max(i for i, p in enumerate(synced) if p.startswith(log_dir + "/0"))
    assert data_file in synced and synced.index(data_file) < entry
    assert log_dir in synced[entry:]
