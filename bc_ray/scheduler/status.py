"""`bc-ray status`: what the store serves now, what ran, what runs next."""

from __future__ import annotations

import re
import time

from bc_ray.scheduler.lease import Lease
from bc_ray.scheduler.scheduler import LEASE_NAME, next_slot
from bc_ray.store.delta import current_tables
from bc_ray.store.state import RunRecord, StoreState
from bc_ray.store.store import Store

BOX_DRAWING = "[\u2500-\u257f]"


def summarize(store: Store) -> dict:
    state: StoreState = store.state()
    current = state.versions.get(state.current_version) if state.current_version is not None \
        else None
    runs = sorted(state.runs.values(), key=lambda r: r.started_at or "")
    last = {kind: next((r for r in reversed(runs) if r.kind == kind), None)
            for kind in ("refresh", "bump")}
    schedule = state.scheduler
    now = time.time()
    lease = Lease(store.io, LEASE_NAME, "status", 0).current()
    return {
        "store": store.uri,
        "snapshot": {"id": state.current_snapshot,
                     "cutoff": state.snapshots[state.current_snapshot].cutoff,
                     "batches": state.snapshots[state.current_snapshot].batches}
        if state.current_snapshot else None,
        "current_version": None if current is None else {
            "version": current.version, "dim": current.dim, "method": current.method,
            "published_at": current.published_at,
            "recall_at_50": current.metrics.get("recall_at_50"),
            "align_error_rel": current.metrics.get("align_error_rel")},
        "versions": {v: r.status for v, r in sorted(state.versions.items())},
        "last_refresh": {e: {"version": t.version, "refreshed_at": t.refreshed_at,
                             "mode": t.mode, "rows": t.rows}
                         for e, t in current_tables(state).items()},  # what readers get
        "last_runs": {kind: None if run is None else {
            "run_id": run.run_id, "status": run.status, "started_at": run.started_at,
            "ended_at": run.ended_at, "slot": run.slot} for kind, run in last.items()},
        "next_runs": {kind: next_slot(schedule.cron(kind), now)
                      for kind in ("refresh", "bump")} if schedule else None,
        "failures": [{"run_id": r.run_id, "kind": r.kind, "ended_at": r.ended_at,
                      "note": r.note, "error": _last_error(r)}
                     for r in runs if r.status == "failed"][-5:],
        # a run succeeds while its landing pass refused a batch: said here, or nobody sees it
        "landing_refused": _landing_refused(runs),
        "lease": None if lease is None or lease.free(now) else {
            "holder": lease.holder, "expires_at": lease.expires_at},
    }


def _landing_refused(runs: list[RunRecord]) -> list[dict]:
    """The batches the latest landing pass refused (each refused again until fixed)."""
    latest = next((r for r in reversed(runs) if r.landing is not None), None)
    return [] if latest is None else [
        {"run_id": latest.run_id, **item} for item in latest.landing.get("refused", [])][:5]


def _last_error(run: RunRecord, limit: int = 300) -> str:
    """What `status` shows of the last attempt's error: a failed submission's start (the
    error's type and message), a failed job's last lines (where its error is), without the
    boxes rich draws around a CLI's usage errors."""
    attempt = run.attempts[-1] if run.attempts else None
    text = " ".join(re.sub(BOX_DRAWING, " ", (attempt.error if attempt else None) or "").split())
    return text[:limit] if attempt and attempt.status == "SUBMIT_FAILED" else text[-limit:]
