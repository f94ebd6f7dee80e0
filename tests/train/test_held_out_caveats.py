"""Stored alignment targets refreshed on the held-out period are told apart from clean ones."""

from __future__ import annotations

from bc_ray.store.state import BatchRecord, SnapshotRecord, StoreState, TableRecord
from bc_ray.train.held_out_caveats import stored_targets_see


def _table(snapshot_id: str, cutoff: float, entity: str = "user") -> TableRecord:
    return TableRecord(version=0, entity=entity, refresh_id="r", files=[], rows=1, dim=1,
                       refreshed_at="2026-01-01T00:00:00+00:00", snapshot_id=snapshot_id,
                       cutoff=cutoff, mode="full")


def _state(tables: list[TableRecord], batches_seen: int | None = None) -> StoreState:
    state = StoreState()
    state.tables = {f"v0/{t.entity}": t for t in tables}
    days = [(0, 100), (100, 200), (200, 300)]  # each batch's time range
    state.batches = {f"b{i}": BatchRecord(batch_id=f"b{i}", ordinal=i, at="x", prefix="p",
                                          stats={"time_range": list(r)})
                     for i, r in enumerate(days)}
    state.snapshots["s"] = SnapshotRecord(id="s", files={}, cutoff=1.0, stats={},
                                           batches=batches_seen)
    return state


def test_a_replayed_timeline_compares_the_refresh_cutoff_with_the_held_out_start():
    state = _state([_table("s", 0.8), _table("s", 0.8, "item")])
    assert stored_targets_see(state, 0, start=0.7, calendar=False)
    assert not stored_targets_see(state, 0, start=0.8, calendar=False)


def test_an_ingested_store_compares_the_batches_the_refresh_saw_with_the_held_out_start():
    """Refreshed on batches 0-1 (up to t=200): a held-out period from 150 was seen, one from
    250 was not; a snapshot whose batches are unknown is taken as having seen everything."""
    state = _state([_table("s", 1.0)], batches_seen=2)
    assert stored_targets_see(state, 0, start=150, calendar=True)
    assert not stored_targets_see(state, 0, start=250, calendar=True)
    unknown = _state([_table("gone", 1.0)], batches_seen=2)
    assert stored_targets_see(unknown, 0, start=10_000, calendar=True)
    assert not stored_targets_see(_state([]), 0, start=0, calendar=True)  # no tables


def test_a_held_out_period_without_validation_users_is_said(caplog):
    from bc_ray.train.held_out_caveats import say_if_no_validation

    with caplog.at_level("WARNING", logger="bc_ray.train.held_out_caveats"):
        say_if_no_validation(3, "the last 7 days")
        assert not caplog.text
        say_if_no_validation(0, "the last 7 days")
    assert "no validation users in the held-out period the last 7 days" in caplog.text
