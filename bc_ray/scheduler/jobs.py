"""Submitting and watching Ray jobs through the Jobs API (JobSubmissionClient)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from bc_ray.redaction import refuse_user_info
from bc_ray.scheduler.config import SchedulerConfig

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_EXCLUDES = [".venv", ".git", "bench-out", "demo-store", "**/__pycache__", ".pytest_cache"]


class RayJobs:
    """The Jobs API, connected on first use: a scheduler starts (and records its failures)
    while the API is down, instead of dying in its constructor."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def status(self, submission_id: str) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, or MISSING (never submitted)."""
        try:
            return str(self.client.get_job_status(submission_id).value)
        except RuntimeError as exc:  # the client raises RuntimeError for unknown ids
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return "MISSING"
            raise

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict | None) -> None:
        """Idempotent: a submission id that already exists is not submitted again."""
        if self.status(submission_id) != "MISSING":
            return
        self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                               runtime_env=runtime_env or None)

    def stop(self, submission_id: str) -> None:
        self.client.stop_job(submission_id)

    def exit_code(self, submission_id: str) -> int | None:
        """The job's driver's exit status; None where it has none (killed, never started)."""
        return self.client.get_job_info(submission_id).driver_exit_code

    def logs_tail(self, submission_id: str, chars: int = 1500) -> str:
        try:
            return self.client.get_job_logs(submission_id)[-chars:]
        except RuntimeError:
            return ""


# Settings a job needs to reach the store, never credentials: a job submission's runtime_env is
# visible to anyone who can read the Jobs API, and the cluster's nodes find their own
# credentials (instance role, web identity, profile) through the SDKs' default chains.
FORWARDED_AWS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
                 "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")


def forwarded(name: str) -> bool:
    return name in FORWARDED_AWS or (name.startswith("BC_RAY_") and name != "BC_RAY_SERVE_TOKEN")


def entrypoint(config: SchedulerConfig, step: str, step_args: Sequence[str] = (),
               fixed: Sequence[str] = ()) -> tuple[str, dict]:
    """The command and runtime environment of a train, refresh or publish job (`step_args`:
    what this one job takes, e.g. the folder a publish reads; `fixed`: flags after the
    configured extra arguments, which the last value of a flag wins over)."""
    extra = {"train": config.train_args, "refresh": config.refresh_args,
             "publish": config.publish_args}[step]
    if step in ("train", "publish"):  # a rejection is an outcome the scheduler records
        extra = ["--no-fail-on-reject", *extra]
    args = ["--store", config.store, *step_args, *extra, *fixed]
    env_vars = {k: v for k, v in os.environ.items() if forwarded(k)}
    for name, value in env_vars.items():  # e.g. a BC_RAY_STORE beside an explicit --store
        refuse_user_info(value, f"the environment variable {name} (forwarded to jobs)")
    runtime_env: dict = {"env_vars": env_vars} if env_vars else {}
    if config.working_dir:
        runtime_env.update(working_dir=config.working_dir, excludes=JOB_EXCLUDES)
        command = [config.python, f"jobs/{step}.py", *args]
    else:
        command = [config.python, "-m", "bc_ray.cli.main", step, *args]
    return " ".join(shlex.quote(part) for part in command), runtime_env
