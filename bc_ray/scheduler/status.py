"""`bc-ray status`: what the store serves now, what ran, what runs next."""

from __future__ import annotations

import time

from bc_ray.scheduler.lease import Lease
from bc_ray.scheduler.scheduler import LEASE_NAME, next_slot
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store


def summarize(store: Store) -> dict:
    state: StoreState = store.state()
    current = state.versions.get(state.current_version) if state.current_version is not None \
        else None
    runs = sorted(state.runs.values(), key=lambda r: r.get("started_at", ""))
    last = {kind: next((r for r in reversed(runs) if r.get("kind") == kind), None)
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
                         for key, t in state.tables.items() if (e := t.entity)},
        "last_runs": {kind: None if run is None else {
            k: run.get(k) for k in ("run_id", "status", "started_at", "ended_at", "slot")}
            for kind, run in last.items()},
        "next_runs": {kind: next_slot(schedule.get(f"{kind}_cron"), now)
                      for kind in ("refresh", "bump")} if schedule else None,
        "failures": [{k: r.get(k) for k in ("run_id", "kind", "ended_at", "note")} |
                     {"error": (r.get("attempts") or [{}])[-1].get("error", "")[-300:]}
                     for r in runs if r.get("status") == "failed"][-5:],
        "lease": None if lease is None or lease.free(now) else {
            "holder": lease.holder, "expires_at": lease.expires_at},
    }
