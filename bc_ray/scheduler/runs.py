"""What a scheduler run made and how it ended, read from the store's state (no jobs, no
lease): the scheduler records what these say."""

from __future__ import annotations

import time
import uuid

from bc_ray.render import iso_time
from bc_ray.store.state import RunRecord, StoreState, VersionRecord


def new_run_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def refreshed(run: dict) -> bool:
    """Whether a run refreshed (a bump whose refresh job succeeded)."""
    return run.get("status") == "succeeded" and any(
        a["step"] == "refresh" and a["status"] == "SUCCEEDED" for a in run.get("attempts", []))


def version_made(state: StoreState, run: dict) -> VersionRecord | None:
    """The version the run's train jobs made, published or rejected: each job is named by its
    submission id (`bc-ray train --run-name`), so versions other writers made meanwhile are
    never taken for the run's."""
    jobs = {a["job_id"] for a in run["attempts"] if a["step"] == "train"}
    made = [r for r in state.versions.values()
            if r.metrics.get("run_name") in jobs and r.status in ("published", "rejected")]
    return max(made, key=lambda r: r.version) if made else None


def abandoned_outcome(state: StoreState, run: RunRecord, status: str, holder: str) -> dict:
    """The record of a run whose scheduler died, by how its last job ended (`status`): a
    bump whose train job succeeded is not done, since its refresh never ran, unless the gate
    rejected its version (then there was nothing to refresh)."""
    step = run.attempts[-1].step if run.attempts else "-"
    note = (f"settled by {holder}: scheduler {run.holder} died and its last job ({step}) "
            f"ended {status}")
    outcome = "succeeded" if status == "SUCCEEDED" else "failed"
    if status == "SUCCEEDED" and step == "train":
        made = version_made(state, run.to_json())
        if made is not None and made.status == "rejected":
            outcome = "rejected"
        else:
            outcome, note = "failed", f"{note}; its refresh never ran"
    return {**run.to_json(), "status": outcome, "ended_at": iso_time(time.time()), "note": note}
