"""The scheduler against a real `ray start --head` cluster and the local S3 server."""

import sys
import threading
import time

import pytest

from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.landing import LandingConfig
from bc_ray.ingest.read import BatchInput
from bc_ray.scheduler.config import SchedulerConfig
from bc_ray.scheduler.lease import Lease
from bc_ray.scheduler.scheduler import LEASE_NAME, Scheduler, previous_slot
from bc_ray.scheduler.status import summarize
from bc_ray.store.snapshots import load_snapshot, publish_snapshot
from bc_ray.store.store import Store
from tests.conftest import REPO
from tests.data.test_ingest import put
from tests.helpers import publish_model_version

pytestmark = pytest.mark.ray
YEARLY = "0 0 1 1 *"  # a slot that does not move while the tests run


def _config(uri: str, address: str, **overrides) -> SchedulerConfig:
    values = dict(store=uri, ray_address=address, refresh_cron=YEARLY, bump_cron=None,
                  python=sys.executable, working_dir=str(REPO), refresh_args=["--num-actors", "1"],
                  max_attempts=2, backoff_s=0.1, poll_s=1.0, lease_ttl_s=120)
    values.update(overrides)
    return SchedulerConfig(**values)


@pytest.fixture
def s3_store(s3_uri, small_snapshot):
    store = Store(s3_uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7))
    return store


def test_once_submits_a_real_refresh_that_publishes(ray_head, s3_store):
    scheduler = Scheduler(_config(s3_store.uri, ray_head))
    scheduler.configure()
    [run] = scheduler.once("refresh")
    assert run["status"] == "succeeded", run
    state = s3_store.state()
    assert state.table(0, "item").refresh_id == run["published"]["refresh_id"]
    recorded = state.runs[run["run_id"]]
    assert recorded.status == "succeeded" and recorded.attempts[0].status == "SUCCEEDED"
    assert recorded.attempts[0].job_id.startswith("bc-ray-refresh-")
    summary = summarize(s3_store)
    assert summary["last_runs"]["refresh"]["status"] == "succeeded"
    assert summary["next_runs"]["refresh"] is not None and summary["lease"] is None
    assert scheduler.due() == []  # this minute's slot is taken


def test_two_schedulers_started_together_run_once(ray_head, s3_store):
    slot = previous_slot(YEARLY, time.time())
    results, barrier = [], threading.Barrier(2)

    def start(name: str) -> None:
        scheduler = Scheduler(_config(s3_store.uri, ray_head), holder=name)
        barrier.wait()
        results.append(scheduler.run("refresh", slot=slot))

    threads = [threading.Thread(target=start, args=(f"scheduler-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["skipped", "succeeded"], results
    runs = [r for r in s3_store.state().runs.values() if r.slot == slot]
    assert len(runs) == 1


def test_a_job_failing_on_what_the_store_holds_is_reported_not_retried(ray_head, s3_uri):
    store = Store(s3_uri)  # no snapshot, no version: every refresh job would fail alike
    [run] = Scheduler(_config(s3_uri, ray_head)).once("refresh")
    assert run["status"] == "failed"
    assert [(a["status"], a["exit_code"]) for a in run["attempts"]] == [("FAILED", 2)]
    assert "no published version" in run["attempts"][-1]["error"] or \
        "no graph snapshot" in run["attempts"][-1]["error"]
    summary = summarize(store)
    assert summary["failures"] and summary["failures"][-1]["run_id"] == run["run_id"]


def test_stale_lease_of_a_killed_scheduler_is_taken_over(ray_head, s3_store):
    # Long enough that the first `once` surely runs before expiry, even on a loaded machine.
    dead = Lease(s3_store.io, LEASE_NAME, "dead-scheduler", ttl_s=8.0)
    dead.acquire(note="refresh")
    s3_store.commit(lambda _s: [{
        "type": "run.recorded", "run_id": "refresh-orphan", "kind": "refresh", "slot": None,
        "status": "running", "holder": "dead-scheduler", "started_at": "2026-01-01T00:00:00",
        "attempts": [{"step": "refresh", "attempt": 1, "job_id": "bc-ray-never-submitted",
                      "status": "RUNNING"}]}])
    live = Scheduler(_config(s3_store.uri, ray_head))
    [early] = live.once("refresh")
    assert early["status"] == "skipped" and "dead-scheduler" in early["reason"]
    time.sleep(max(0.0, dead.current().expires_at - time.time()) + 0.5)  # never renewed
    [run] = live.once("refresh")
    assert run["status"] == "succeeded"
    orphan = s3_store.state().runs["refresh-orphan"]
    assert orphan.status == "failed" and "dead-scheduler died" in orphan.note


def test_landed_files_are_ingested_before_the_nightly_refresh(ray_head, s3_uri, small_raw):
    """A team only lands files: the scheduler ingests them, then the refresh embeds them."""
    store = Store(s3_uri)
    edges = small_raw.edges.sort("timestamp").select(
        uid="user_id", sku="item_id", ts="timestamp", stars="rating")
    days = [edges[:4000], edges[4000:5000], edges[5000:]]
    mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")
    ingest(store, BatchInput(edges=put(store, "seed/day0.parquet", days[0])), mapping)
    publish_model_version(store, load_snapshot(store))
    landing = s3_uri.rsplit("/", 1)[0] + "/landing"
    for name, frame in (("dt=2026-11-21/part-0.parquet", days[1]),
                        ("dt=2026-11-22/part-0.parquet", days[2])):
        with store.io.fs.open(f"{landing.removeprefix('s3://')}/{name}", "wb") as handle:
            frame.write_parquet(handle)
    config = _config(s3_uri, ray_head, landing=LandingConfig(edges=landing, mapping=mapping,
                                                             settle_seconds=0))
    [run] = Scheduler(config).once("refresh")
    assert run["status"] == "succeeded", run
    recorded = store.state().runs[run["run_id"]]
    assert [b["batch"].rsplit("/", 1)[-1] for b in recorded.landing["taken"]] == \
        ["dt=2026-11-21", "dt=2026-11-22"]
    state = store.state()
    assert len(state.batches) == 3
    snapshot = load_snapshot(store, state=state)
    assert state.table(0, "user").rows == snapshot.num_users
    assert state.table(0, "user").snapshot_id == state.current_snapshot
