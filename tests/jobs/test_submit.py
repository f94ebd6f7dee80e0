"""`ray job submit` of the real entry points to a real `ray start --head` cluster."""

import sys
import time

import pytest

from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from tests.conftest import JOB_EXCLUDES, REPO

pytestmark = pytest.mark.ray


def wait_for(client, job_id: str, timeout: float = 300) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still running after {timeout}s")


def test_ray_job_submit_trains_and_publishes(ray_head, small_snapshot, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    uri = f"file://{tmp_path}/store"
    publish_snapshot(Store(uri), small_snapshot.with_cutoff(0.7))
    client = JobSubmissionClient(ray_head)
    job_id = client.submit_job(
        entrypoint=f"{sys.executable} jobs/train.py --store {uri} --num-workers 2 "
                   "--epochs 3 --spec hidden=16 --holdout 0.1 --json",
        runtime_env={"working_dir": str(REPO), "excludes": JOB_EXCLUDES})
    status = wait_for(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert '"status": "published"' in logs
    assert Store(uri).state().current_version == 0
