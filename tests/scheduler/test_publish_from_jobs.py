"""`--publish-from`: bumps publish each new folder of embeddings made elsewhere, as real Ray jobs
on a `ray start --head` cluster, from and into the local S3 server."""

import sys

import numpy as np
import pytest

from bc_ray.scheduler.config import SchedulerConfig
from bc_ray.scheduler.scheduler import Scheduler
from bc_ray.store.store import Store
from tests.conftest import REPO
from tests.publish.conftest import current, embedding_table, put_parquet, write_rotated

pytestmark = pytest.mark.ray


def _config(uri: str, address: str, publish_from: str) -> SchedulerConfig:
    return SchedulerConfig(store=uri, ray_address=address, refresh_cron=None, bump_cron=None,
                           python=sys.executable, working_dir=str(REPO), max_attempts=1,
                           backoff_s=0.1, poll_s=1.0, lease_ttl_s=120, publish_from=publish_from,
                           publish_settle_s=0.0)


def _folder(base: str, tables: dict) -> None:
    for entity in ("user", "item"):
        put_parquet(f"{base}/{entity}s/part-0.parquet", embedding_table(*tables[entity]))


def test_each_folder_is_published_once_in_order_and_a_bad_one_is_skipped(ray_head, s3_uri):
    store = Store(s3_uri)
    root = s3_uri.rsplit("/", 1)[0] + "/made-elsewhere"
    rng = np.random.default_rng(4)
    first = {"user": (list(range(120)), rng.normal(size=(120, 8)).astype(np.float32)),
             "item": (list(range(500, 580)), rng.normal(size=(80, 8)).astype(np.float32))}
    _folder(f"{root}/2026-11-21", first)
    bad = {"user": (first["user"][0], np.full((120, 8), np.nan, np.float32)),
           "item": first["item"]}
    _folder(f"{root}/2026-11-22", bad)
    write_rotated(f"{root}/2026-11-23", {e: (ids, m) for e, (ids, m) in first.items()}, rng)
    put_parquet(f"{root}/2026-11-24/users/part-0.parquet", embedding_table(*first["user"]))
    put_parquet(f"{root}/notes/readme.parquet", embedding_table(*first["item"]))

    [run] = Scheduler(_config(s3_uri, ray_head, root)).once("bump")
    outcomes = [(p["folder"], p["status"], p["version"]) for p in run["publish"]]
    assert outcomes == [("2026-11-21", "published", 0), ("2026-11-22", "failed", None),
                        ("2026-11-23", "published", 1)], run
    assert run["status"] == "failed"  # reported: one folder could not be published
    assert "NaN or infinity" in run["attempts"][1]["error"]
    state = store.state()
    assert state.current_version == 1 and sorted(state.versions) == [0, 1]
    assert state.runs[run["run_id"]].publish[1]["status"] == "failed"
    view = current(s3_uri, 0, prefer_stored=False)
    assert np.abs(view["user"][1] - first["user"][1]).max() < 1e-3

    again = Scheduler(_config(s3_uri, ray_head, root))  # a restarted scheduler
    [second] = again.once("bump")
    assert second["status"] == "succeeded" and second["publish"] == [], second
    assert second["attempts"] == [] and sorted(store.state().versions) == [0, 1]
    [refresh] = again.once("refresh")
    assert refresh["status"] == "succeeded" and refresh["attempts"] == []
    assert "nothing to refresh" in refresh["note"]
