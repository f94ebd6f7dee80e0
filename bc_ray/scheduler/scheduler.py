"""Runs refreshes and version bumps as Ray jobs on cron schedules.

One lease in the store means one job at a time across any number of scheduler replicas, and each
cron slot is recorded, so a slot is run once even by schedulers that start together. Every run is
recorded in the store's log (id, slot, the landing batches it ingested first, attempts with
their Ray job ids, status, what it published); failed attempts are retried with exponential
backoff, then reported (a job that exits on an error the same command would meet again is not
retried). A scheduler that takes over an expired lease first settles the runs its dead
predecessor left open.

With `--publish-from`, a bump publishes each new folder of embeddings computed elsewhere
(`publish_from.py`) instead of training, and a refresh of such a version has nothing to do.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from croniter import croniter

from bc_ray.exceptions import EXIT_REPEATS, BcRayError, ConfigError, LeaseHeldError
from bc_ray.ingest.landing import ingest_landing
from bc_ray.io import FileIO
from bc_ray.redaction import redact
from bc_ray.render import iso_time
from bc_ray.scheduler.config import KINDS, SchedulerConfig
from bc_ray.scheduler.jobs import TERMINAL, RayJobs, entrypoint
from bc_ray.scheduler.lease import Lease
from bc_ray.scheduler.publish_from import (
    external_current,
    folder_outcome,
    pending,
    ready_folders,
    version_of,
)
from bc_ray.scheduler.runs import abandoned_outcome, new_run_id, refreshed, version_made
from bc_ray.store.actions import RunRecorded, SchedulerConfigured
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)
LEASE_NAME = "jobs"
PROGRESS_EVERY_S = 60.0  # how often a job still running is said
LANDING_SKIPS_RECORDED = 100  # a run record lists at most this many skipped landed files


def previous_slot(cron: str | None, now: float) -> str | None:
    """The latest fire time of `cron` at or before `now` (the slot a run belongs to)."""
    if cron is None:
        return None
    moment = datetime.fromtimestamp(now, tz=timezone.utc)
    return croniter(cron, moment).get_prev(datetime).isoformat()


def next_slot(cron: str | None, now: float) -> str | None:
    if cron is None:
        return None
    return croniter(cron, datetime.fromtimestamp(now, tz=timezone.utc)).get_next(
        datetime).isoformat()


class Scheduler:
    def __init__(self, config: SchedulerConfig, holder: str | None = None,
                 jobs: RayJobs | None = None) -> None:
        self.config = config
        self.store = Store(config.store)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = Lease(self.store.io, LEASE_NAME, self.holder, config.lease_ttl_s)
        self.jobs = jobs or RayJobs(config.ray_address)

    # -- records ----------------------------------------------------------------------------------
    def _record(self, run: dict) -> None:
        """Record the run, fenced by the lease: a scheduler that lost it writes nothing more."""
        def build(_state: StoreState) -> list[RunRecorded]:
            record = self.lease.verify()
            return [RunRecorded(**{**run, "lease_generation": record.generation})]

        self.store.commit(build)

    def configure(self) -> None:
        """Record the schedule in the store (what `bc-ray status` shows as next runs)."""
        self.store.commit(lambda _state: [SchedulerConfigured(
            refresh_cron=self.config.refresh_cron, bump_cron=self.config.bump_cron,
            holder=self.holder, at=iso_time(time.time()))])

    @staticmethod
    def slot_taken(state: StoreState, kind: str, slot: str | None,
                   failed_counts: bool = True) -> bool:
        """Whether a run of `kind` took `slot`; one that failed counts unless `failed_counts`
        is False (a pass asked for that kind by name runs a failed slot again)."""
        ignored = {"skipped"} if failed_counts else {"skipped", "failed"}
        return slot is not None and any(
            r.kind == kind and r.slot == slot and r.status not in ignored
            for r in state.runs.values())

    # -- one pass ---------------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[str]:
        """Kinds whose latest cron slot has no run yet (bumps first: a bump also refreshes)."""
        now = time.time() if now is None else now
        state = self.store.state()
        return [kind for kind in ("bump", "refresh")
                if self.config.cron(kind) is not None
                and not self.slot_taken(state, kind, previous_slot(self.config.cron(kind), now))]

    def once(self, kind: str = "auto") -> list[dict]:
        """Run what is due (or `kind`); a refresh due beside a bump that succeeded in this pass
        is recorded as done by it (the bump refreshed the same data moments ago)."""
        results: list[dict] = []
        for due in self.due() if kind == "auto" else [kind]:
            bump = next((r for r in results if refreshed(r)), None) if due == "refresh" else None
            results.append(self.run(due, covered_by=bump["run_id"] if bump else None,
                                    again_if_failed=kind != "auto"))
        return results

    def run(self, kind: str, slot: str | None = None, covered_by: str | None = None,
            again_if_failed: bool = False) -> dict:
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, not {kind!r}")
        slot = slot or previous_slot(self.config.cron(kind), time.time())
        try:
            stale = self.lease.acquire(note=kind)
        except LeaseHeldError as exc:
            logger.info("skipping %s: %s", kind, exc)
            return {"kind": kind, "slot": slot, "status": "skipped", "reason": str(exc)}
        try:
            if stale is not None:
                logger.warning("took over the lease of %s, which expired", stale.holder)
            self.settle_abandoned_runs()
            if self.slot_taken(self.store.state(), kind, slot, not again_if_failed):
                return {"kind": kind, "slot": slot, "status": "skipped",
                        "reason": f"slot {slot} already ran"}
            return self._execute(kind, slot, covered_by)
        except LeaseHeldError as exc:  # lost mid-run: the new holder settles the open run
            logger.error("stopping the %s run: %s", kind, exc)
            return {"kind": kind, "slot": slot, "status": "abandoned", "reason": str(exc)}
        finally:
            self._release()

    def _release(self) -> None:
        """Release the lease if still held; one taken meanwhile is the new holder's (said, and
        never in place of the run's own outcome)."""
        if self.lease.generation is None:
            return
        try:
            self.lease.release()
        except LeaseHeldError as exc:
            logger.warning("releasing the lease: %s", exc)

    def _execute(self, kind: str, slot: str | None, covered_by: str | None = None) -> dict:
        run = {"run_id": new_run_id(kind), "kind": kind, "slot": slot, "status": "running",
               "holder": self.holder, "started_at": iso_time(time.time()), "attempts": []}
        self._record(run)
        try:
            return self._steps(run, kind, covered_by)
        except LeaseHeldError:
            raise
        except Exception as exc:  # noqa: BLE001 - the run is reported, never left "running"
            if isinstance(exc, BcRayError):  # a clear error (a missing landing path): one line
                logger.error("%s run %s failed: %s", kind, run["run_id"], exc)
            else:
                logger.exception("%s run %s failed", kind, run["run_id"])
            run.update(status="failed", ended_at=iso_time(time.time()),
                       error=redact(f"{type(exc).__name__}: {exc}")[:2000])
            self._record(run)
            return run

    def _steps(self, run: dict, kind: str, covered_by: str | None = None) -> dict:
        """The run's landing pass, then its jobs; `covered_by`: a bump of this pass that
        refreshed, which stands for this refresh unless the landing pass took new batches."""
        if self.config.landing is not None:
            run["landing"] = ingest_landing(self.store, self.config.landing,
                                            heartbeat=self.lease.renew).to_dict(
                limit=LANDING_SKIPS_RECORDED)
            self._record(run)
        if covered_by is not None and not (run.get("landing") or {}).get("taken"):
            run.update(status="succeeded", ended_at=iso_time(time.time()),
                       note=f"refreshed by bump {covered_by} in the same pass")
            self._record(run)
            return run
        if kind == "bump" and self.config.publish_from is not None:
            return self._publish_new(run)
        if kind == "refresh" and (note := external_current(self.store.state())) is not None:
            run.update(status="succeeded", ended_at=iso_time(time.time()), note=note)
            self._record(run)
            return run
        steps = ("train", "refresh") if kind == "bump" else ("refresh",)
        for step in steps:
            settled = (lambda: self._trained(run)) if step == "train" else None
            if not self._step(run, step, settled=settled):
                run.update(status="failed", ended_at=iso_time(time.time()))
                self._record(run)
                return run
            if step == "train" and self._rejected(run):
                run.update(status="rejected", ended_at=iso_time(time.time()))
                self._record(run)
                return run
        run.update(status="succeeded", ended_at=iso_time(time.time()),
                   published=self._published())
        self._record(run)
        return run

    def _trained(self, run: dict) -> bool:
        """A train job that failed after its version landed (killed after the commit) is not
        retried: the version it made settles the step."""
        return version_made(self.store.state(), run) is not None

    def _published(self) -> dict:
        """What a run leaves current: the version, and its item table's refresh."""
        state = self.store.state()
        item_table = state.table(state.current_version, "item") if state.lineage() else None
        return {"version": state.current_version,
                "refresh_id": item_table.refresh_id if item_table else None}

    def _rejected(self, run: dict) -> bool:
        made = version_made(self.store.state(), run)
        if made is None:
            return False
        run["candidate"] = {"version": made.version, "status": made.status,
                            "reasons": made.reasons}
        return made.status == "rejected"

    def _publish_new(self, run: dict) -> dict:
        """A bump with --publish-from: one publish job per new folder, in name order; each
        folder's outcome is recorded with the run, and a failed one does not stop the rest."""
        folders = pending(self.store.state(), ready_folders(
            FileIO(self.config.publish_from, self.store.io.options),
            self.config.publish_settle_s))
        run["publish"] = []
        for index, folder in enumerate(folders, start=1):
            entry = {"folder": folder.name, "uri": folder.uri, "status": "running"}
            run["publish"].append(entry)
            succeeded = self._step(
                run, "publish", folder.args(), label=f"publish{index}",
                settled=lambda f=folder: version_of(self.store.state(), f) is not None)
            entry.update(folder_outcome(self.store.state(), folder, succeeded))
        statuses = {entry["status"] for entry in run["publish"]}
        run.update(status="failed" if "failed" in statuses else
                   "rejected" if statuses == {"rejected"} else "succeeded",
                   ended_at=iso_time(time.time()), published=self._published())
        if not folders:
            run["note"] = f"no new folder under {self.config.publish_from}"
        self._record(run)
        return run

    def _step(self, run: dict, step: str, step_args: Sequence[str] = (), label: str | None = None,
              settled: Callable[[], bool] | None = None) -> bool:
        """Run one job of a step, retried with backoff unless it failed on a bc_ray error the
        same command would meet again (bad settings, input or store state: `EXIT_REPEATS`);
        `settled` says, before a retry, that the failed attempt's work landed anyway (a bump or
        a publish must not run twice)."""
        for attempt in range(1, self.config.max_attempts + 1):
            if attempt > 1 and settled is not None and settled():
                return True
            submission_id = f"bc-ray-{run['run_id']}-{label or step}-{attempt}"
            named = ["--run-name", submission_id] if step == "train" else []
            command, runtime_env = entrypoint(self.config, step, step_args, named)
            record = {"step": step, "attempt": attempt, "job_id": submission_id,
                      "submitted_at": iso_time(time.time()), "status": "RUNNING"}
            run["attempts"].append(record)
            self._record(run)
            try:
                self.jobs.submit(submission_id, command, runtime_env)
            except Exception as exc:  # noqa: BLE001 - the Jobs API down is a failed attempt
                status, error = "SUBMIT_FAILED", redact(f"{type(exc).__name__}: {exc}")[:1500]
            else:
                logger.info("%s job %s submitted; waiting for it", step, submission_id)
                status = self._wait(submission_id)
                error = None if status == "SUCCEEDED" else redact(self._logs_tail(submission_id))
            logger.info("%s job %s ended %s", step, submission_id, status)
            record.update(status=status, ended_at=iso_time(time.time()))
            if status == "SUCCEEDED":
                self._record(run)
                return True
            record["error"] = error
            if status == "FAILED" and (code := self._exit_code(submission_id)) is not None:
                record["exit_code"] = code
            self._record(run)
            if record.get("exit_code") == EXIT_REPEATS:
                logger.warning("%s job %s failed on an error a retry would meet again (exit %d): "
                               "not retried", step, submission_id, EXIT_REPEATS)
                return False
            if attempt < self.config.max_attempts:
                delay = self.config.backoff_s * 2 ** (attempt - 1)
                logger.warning("%s attempt %d ended %s; retrying in %.0fs", step, attempt,
                               status, delay)
                self._sleep_holding_lease(delay)
        return False

    def _exit_code(self, submission_id: str) -> int | None:
        try:
            return self.jobs.exit_code(submission_id)
        except Exception as exc:  # noqa: BLE001 - unknown: retried, as any failure
            logger.warning("cannot read the exit status of %s: %s", submission_id, exc)
            return None

    def _logs_tail(self, submission_id: str) -> str:
        try:
            return self.jobs.logs_tail(submission_id)
        except Exception as exc:  # noqa: BLE001
            return f"(logs unavailable: {exc})"

    def _sleep_holding_lease(self, seconds: float) -> None:
        """Wait, renewing the lease as it goes (a backoff longer than the lease's life must not
        let another scheduler take over and run the same job beside this one)."""
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            self.lease.renew()
            time.sleep(min(left, self.config.poll_s, self.config.lease_ttl_s / 4))
        self.lease.renew()

    def _wait(self, submission_id: str) -> str:
        """Poll the job to its end; the Jobs API blinking out is waited through (the job runs
        on), while the lease is renewed."""
        started = time.time()
        deadline = started + self.config.job_timeout_s
        said = started
        while time.time() < deadline:
            try:
                status = self.jobs.status(submission_id)
            except Exception as exc:  # noqa: BLE001
                logger.warning("cannot read the status of %s: %s", submission_id, exc)
                status = "UNKNOWN"
            if status in TERMINAL or status == "MISSING":
                return status
            if time.time() - said >= PROGRESS_EVERY_S:  # a long job is not a silent one
                said = time.time()
                logger.info("%s is %s (%.0f s)", submission_id, status, said - started)
            self._sleep_holding_lease(self.config.poll_s)
        try:
            self.jobs.stop(submission_id)
        except Exception as exc:  # noqa: BLE001
            logger.warning("cannot stop %s: %s", submission_id, exc)
        return "STOPPED"

    def settle_abandoned_runs(self) -> None:
        """Runs left "running" by a scheduler that died: wait for their job if it still runs,
        then record how it ended."""
        state = self.store.state()
        for run in state.runs.values():
            if run.status != "running" or run.holder == self.holder:
                continue
            status = self._wait(run.attempts[-1].job_id) if run.attempts else "MISSING"
            self._record(abandoned_outcome(self.store.state(), run, status, self.holder))

    # -- forever ----------------------------------------------------------------------------------
    def tick(self) -> list[dict]:
        """One pass of the loop: whatever goes wrong is logged, never raised (the loop lives)."""
        try:
            results = self.once("auto")
        except Exception:  # noqa: BLE001
            logger.exception("scheduler pass failed; trying again at the next wake-up")
            return []
        for result in results:
            logger.info("%s run: %s", result["kind"], result["status"])
        return results

    def serve_forever(self) -> None:
        self.configure()
        while True:
            self.tick()
            now = time.time()
            upcoming = [datetime.fromisoformat(s).timestamp() for k in KINDS
                        if (s := next_slot(self.config.cron(k), now))]
            time.sleep(max(1.0, min(upcoming) - time.time()) if upcoming else 3600)
