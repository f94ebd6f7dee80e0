"""The scheduler when things go wrong (issue 14, items 11 and 12): the Jobs API down, long
backoffs, a lease taken over mid-run. A real store; the Jobs API is a closed local port."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import orjson
import polars as pl
import pytest

from bc_ray.exceptions import LeaseHeldError
from bc_ray.scheduler.config import SchedulerConfig
from bc_ray.scheduler.lease import Lease, LeaseRecord
from bc_ray.scheduler.scheduler import LEASE_NAME, Scheduler, previous_slot
from bc_ray.scheduler.status import summarize
from bc_ray.store.log import entry_path
from bc_ray.store.store import Store
from bc_ray.store.versions import (
    Candidate,
    publish_version,
    register_candidate,
    reject_version,
)
from tests.conftest import free_port
from tests.helpers import random_transform
from tests.scheduler.stand_in_jobs import LocalJobs, interpreter
from tests.store.landing_helpers import ZONE, encoded, rows, write, zone

YEARLY = "0 0 1 1 *"


def _config(uri: str, **overrides) -> SchedulerConfig:
    values = dict(store=uri, ray_address=f"http://127.0.0.1:{free_port()}",  # nothing listens
                  refresh_cron=YEARLY, bump_cron=None, python=sys.executable, max_attempts=2,
                  backoff_s=0.1, poll_s=0.1, lease_ttl_s=60)
    values.update(overrides)
    return SchedulerConfig(**values)


def _wait_for_an_attempt(store: Store) -> None:
    deadline = time.time() + 30
    while not any(r.attempts for r in store.state().runs.values()):
        assert time.time() < deadline
        time.sleep(0.05)


def test_a_failed_submission_is_a_failed_attempt_retried_then_reported(tmp_path):
    uri = f"file://{tmp_path}/store"
    scheduler = Scheduler(_config(uri))
    [run] = scheduler.once("refresh")
    assert run["status"] == "failed"
    recorded = Store(uri).state().runs[run["run_id"]]
    assert recorded.status == "failed"  # never left "running"
    assert [a.status for a in recorded.attempts] == ["SUBMIT_FAILED", "SUBMIT_FAILED"]
    assert all(a.error for a in recorded.attempts)
    [failure] = summarize(Store(uri))["failures"]  # `bc-ray status`: the error's type first
    assert failure["error"] == " ".join(recorded.attempts[-1].error.split())[:300]
    assert Lease(Store(uri).io, LEASE_NAME, "x", 60).current().released


def test_the_loop_survives_any_exception(tmp_path):
    uri = f"file://{tmp_path}/store"
    scheduler = Scheduler(_config(uri))
    store = Store(uri)
    store.io.create(entry_path(0), b"{}")  # a damaged log: every pass fails to read it
    assert scheduler.tick() == []  # logged, not raised
    store.io.delete(entry_path(0))
    assert [r["status"] for r in scheduler.tick()] == ["failed"]  # and the next pass runs


def test_the_lease_is_renewed_through_a_backoff_longer_than_its_life(tmp_path):
    """A 3 s backoff under a 1 s lease: a second scheduler never gets in."""
    uri = f"file://{tmp_path}/store"
    first = Scheduler(_config(uri, lease_ttl_s=1.0, backoff_s=3.0), holder="first")
    slot = previous_slot(YEARLY, time.time())
    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.append(first.run("refresh", slot=slot)))
    worker.start()
    _wait_for_an_attempt(Store(uri))
    seen = []
    while worker.is_alive():
        seen.append(Scheduler(_config(uri, lease_ttl_s=1.0), holder="second").run(
            "refresh", slot="2000-01-01T00:00:00+00:00"))
        time.sleep(0.3)
    worker.join()
    assert results[0]["status"] == "failed" and len(results[0]["attempts"]) == 2
    assert seen and all(r["status"] == "skipped" for r in seen), seen


def test_a_scheduler_that_lost_its_lease_writes_and_submits_nothing_more(tmp_path):
    """Fencing: another scheduler takes the lease during the first one's backoff."""
    uri = f"file://{tmp_path}/store"
    first = Scheduler(_config(uri, backoff_s=2.0), holder="first")
    results: list[dict] = []
    worker = threading.Thread(target=lambda: results.append(first.run("refresh")))
    worker.start()
    store = Store(uri)
    _wait_for_an_attempt(store)
    lease = Lease(store.io, LEASE_NAME, "second", 60)
    current = lease.current()  # as if "first" had stalled past its lease's end
    taken = LeaseRecord(current.generation + 1, "second", time.time() + 60)
    lease.io.create(lease._path(taken.generation), orjson.dumps(vars(taken)))
    worker.join(30)
    assert results[0]["status"] == "abandoned" and "second" in results[0]["reason"]
    [run] = store.state().runs.values()
    assert run.status == "running" and len(run.attempts) == 1  # nothing after the loss


def test_jobs_get_the_store_settings_never_credentials(monkeypatch):
    """Issue 17: a submission's runtime_env is readable through the Jobs API; nodes find their
    own credentials through the SDKs' default chains."""
    from bc_ray.scheduler.config import SchedulerConfig
    from bc_ray.scheduler.jobs import entrypoint

    for name, value in {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_SESSION_TOKEN": "token", "BC_RAY_SERVE_TOKEN": "serve",
                        "AWS_REGION": "eu-west-1", "BC_RAY_S3_ENDPOINT": "http://s3:9000"
                        }.items():
        monkeypatch.setenv(name, value)
    command, runtime_env = entrypoint(SchedulerConfig(store="s3://b/s", ray_address="x",
                                                      train_args=["--note", "two words"]),
                                      "train")
    env = runtime_env["env_vars"]
    assert env["AWS_REGION"] == "eu-west-1" and env["BC_RAY_S3_ENDPOINT"] == "http://s3:9000"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "BC_RAY_SERVE_TOKEN"} & set(env)
    assert "'two words'" in command


def test_a_train_job_that_fails_after_its_version_landed_is_not_trained_again(tmp_path):
    """The job's driver dies after the commit (its post-commit step, a kill): the version is
    published, the job FAILED. A retry would train and publish one more version in the slot."""
    uri = f"file://{tmp_path}/store"
    scheduler = Scheduler(_config(uri, python=interpreter(tmp_path, 1), refresh_cron=None,
                                  bump_cron=YEARLY, max_attempts=3), jobs=LocalJobs())
    [run] = scheduler.once("bump")
    assert [a["step"] for a in run["attempts"]] == ["train"] + ["refresh"] * 3  # no 2nd train
    assert sorted(Store(uri).state().versions) == [0]


@pytest.mark.parametrize("exit_code, attempts", [(2, 1), (75, 3), (1, 3)])
def test_a_job_that_exits_on_an_error_a_retry_would_meet_again_is_not_retried(
        tmp_path, exit_code, attempts):
    """Exit 2: a bc_ray error of the job's settings, input or store (or a usage error); 75:
    one a later try may not meet (a commit conflict, an endpoint down); 1: a crash."""
    uri = f"file://{tmp_path}/store"
    scheduler = Scheduler(_config(uri, python=interpreter(tmp_path, exit_code), max_attempts=3),
                          jobs=LocalJobs())
    [run] = scheduler.once("refresh")
    recorded = Store(uri).state().runs[run["run_id"]]
    assert recorded.status == "failed"
    assert [a.exit_code for a in recorded.attempts] == [exit_code] * attempts


def test_a_lease_that_outlived_its_life_untaken_is_extended_taken_is_lost(tmp_path):
    """A step longer than the lease (a long landing pass) does not abandon a run nobody else
    took over; once another scheduler has taken the expired lease, the fence holds."""
    io = Store(f"file://{tmp_path}/store").io
    first = Lease(io, LEASE_NAME, "first", 1.0)
    first.acquire()
    time.sleep(1.2)
    record = first.verify()  # expired, untaken: extended
    assert (record.holder, record.generation) == ("first", 1)
    time.sleep(1.2)
    Lease(io, LEASE_NAME, "second", 60).acquire()  # takes the expired lease
    with pytest.raises(LeaseHeldError, match="lost to second"):
        first.verify()


def _abandoned_bump(uri: str, jobs: LocalJobs) -> None:
    """A bump whose scheduler died after its train job ("train-job") and before its refresh."""
    dead = Scheduler(_config(uri, lease_ttl_s=1.0), holder="dead", jobs=jobs)
    dead.lease.acquire()
    dead._record({"run_id": "bump-1", "kind": "bump", "slot": "2000-01-01T00:00:00+00:00",
                  "status": "running", "holder": "dead", "started_at": "2000-01-01T00:00:00",
                  "attempts": [{"step": "train", "attempt": 1, "job_id": "train-job",
                                "submitted_at": "2000-01-01T00:00:00", "status": "RUNNING"}]})
    time.sleep(1.2)  # its lease runs out


@pytest.mark.parametrize("gate", ["published", "rejected"])
def test_a_dead_schedulers_bump_that_never_refreshed_is_not_done(tmp_path, gate):
    """Its train job succeeded: a version it published still needs its refresh (failed, so
    the operator sees it); one the gate rejected had nothing to refresh (rejected)."""
    uri = f"file://{tmp_path}/store"
    jobs = LocalJobs()
    jobs.ran["train-job"] = 0
    _abandoned_bump(uri, jobs)
    store = Store(uri)
    rng = np.random.default_rng(2)
    made = register_candidate(store, Candidate(
        parent=None, dim=8, method="bc-aligner", spec={"hidden_dim": 8}, snapshot_id="s",
        cutoff=1.0, model=rng.bytes(64), transform=None, metrics={"run_name": "train-job"}))
    if gate == "rejected":
        reject_version(store, made.version, ["Recall@50 below the gate"])
    else:
        publish_version(store, made.version)
    Scheduler(_config(uri, python=interpreter(tmp_path, 0)), holder="next",
              jobs=jobs).run("refresh")  # settles, then refreshes
    settled = Store(uri).state().runs["bump-1"]
    if gate == "rejected":
        assert settled.status == "rejected" and "refresh never ran" not in settled.note
    else:
        assert settled.status == "failed" and "its refresh never ran" in settled.note


def test_a_refresh_due_beside_a_bump_that_succeeded_is_done_by_it(tmp_path):
    """A first pass (or a catch-up) finds both kinds due: the bump's own refresh covers the
    refresh slot, instead of a second refresh of the same data right after it."""
    uri = f"file://{tmp_path}/store"
    jobs = LocalJobs()
    scheduler = Scheduler(_config(uri, python=interpreter(tmp_path, 0), bump_cron=YEARLY),
                          jobs=jobs)
    bump, refresh = scheduler.once()
    assert (bump["kind"], bump["status"]) == ("bump", "succeeded")
    assert [a["step"] for a in bump["attempts"]] == ["train", "refresh"]
    assert (refresh["kind"], refresh["status"]) == ("refresh", "succeeded")
    assert refresh["attempts"] == [] and bump["run_id"] in refresh["note"]
    assert len(jobs.ran) == 2 and scheduler.due() == []


def test_a_bump_reads_the_version_its_own_job_made(tmp_path):
    """Another writer's version rejected right after the bump's job published its own (a
    manual train): the bump records its own version and refreshes it."""
    uri = f"file://{tmp_path}/store"

    class AnotherWriterAfterTraining(LocalJobs):
        def submit(self, submission_id: str, entrypoint: str, runtime_env) -> None:
            super().submit(submission_id, entrypoint, runtime_env)
            if "-train-" in submission_id:
                store = Store(uri)
                rng = np.random.default_rng(9)
                other = register_candidate(store, Candidate(
                    parent=0, dim=8, method="bc-aligner", spec={"hidden_dim": 8},
                    snapshot_id="s", cutoff=1.0, model=rng.bytes(64),
                    transform=random_transform(rng, 8, 8), metrics={"run_name": "manual"}))
                reject_version(store, other.version, ["Recall@50 below the gate"])

    scheduler = Scheduler(_config(uri, python=interpreter(tmp_path, 0), refresh_cron=None,
                                  bump_cron=YEARLY, train_args=["--run-name", "mine"]),
                          jobs=AnotherWriterAfterTraining())  # the job's own name still wins
    [run] = scheduler.once("bump")
    assert run["status"] == "succeeded" and run["candidate"]["version"] == 0
    assert [a["step"] for a in run["attempts"]] == ["train", "refresh"]
    assert Store(uri).state().version(1).status == "rejected"


def test_a_failed_slot_runs_again_when_its_kind_is_named(tmp_path):
    """The nightly pass (auto) counts a failed slot as run (no retry storm); an operator who
    names the kind once the cause is fixed runs it again."""
    uri = f"file://{tmp_path}/store"
    failing = Scheduler(_config(uri, python=interpreter(tmp_path, 1), max_attempts=1),
                        jobs=LocalJobs())
    [first] = failing.once()
    assert first["status"] == "failed" and failing.once() == []  # auto: nothing due
    fixed = Scheduler(_config(uri, python=interpreter(tmp_path, 0)), jobs=LocalJobs())
    [again] = fixed.once("refresh")
    assert again["status"] == "succeeded" and again["slot"] == first["slot"]
    [done] = fixed.once("refresh")
    assert done["status"] == "skipped"  # a slot that succeeded is not run twice


def test_a_batch_the_landing_pass_refused_is_shown_by_status(tmp_path):
    """The run itself succeeds (the other batches land, the refresh runs): the refusal is in
    `bc-ray status`, where an operator looks, not only in the run's record."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    bad = rows(0, 10).with_columns(uid=pl.lit(None, dtype=pl.String))  # null user ids
    write(store, f"{ZONE}/dt=2026-11-21/part-0.parquet", encoded(rows(0, 10), ".parquet"))
    write(store, f"{ZONE}/dt=2026-11-22/part-0.parquet", encoded(bad, ".parquet"))
    scheduler = Scheduler(_config(uri, python=interpreter(tmp_path, 0),
                                  landing=zone(store, settle_seconds=0)), jobs=LocalJobs())
    [run] = scheduler.once("refresh")
    assert run["status"] == "succeeded" and len(run["landing"]["taken"]) == 1
    [refused] = summarize(Store(uri))["landing_refused"]
    assert refused["batch"].endswith("dt=2026-11-22") and refused["run_id"] == run["run_id"]
