"""Typed log actions read every entry older bc_ray wrote and write the same JSON back (the same
keys, in the same order, with the same `type` strings), so old logs read and older readers read
new entries; which follow-up steps a commit runs is a property of its kinds of action."""

from __future__ import annotations

import orjson
import pytest

from bc_ray.exceptions import LogEntryError
from bc_ray.store.actions import (
    ACTIONS,
    Hook,
    RetentionApplied,
    SnapshotPublished,
    parse_action,
    post_commit_hooks,
)
from bc_ray.store.state import FileRecord

FILE = {"path": "versions/r/model.pt", "size": 64, "sha256": "ab"}
PART = {"path": "embeddings/v0/user/r/part-00000.parquet", "size": 9, "sha256": "cd"}
SEGMENT = {"first": 0, "last": 0, "files": {"edges": {**FILE, "path": "batches/r/e.parquet"}}}
AT = "2026-12-03T09:57:54+00:00"

# One entry of each kind as bc_ray wrote them before actions were typed (from a real store).
WRITTEN = [
    {"type": "store.configured", "keep_versions": 2, "staging_grace_seconds": 0.0,
     "source": "bc-ray store config", "at": AT},
    {"type": "batch.ingested", "batch_id": "b-1", "ordinal": 0, "at": AT,
     "stats": {"edges": 30, "time_range": [1, 2]},
     "sources": [{"role": "edges", "uri": "/l/part-0.csv", "size": 649, "tag": "17.9",
                  "rel": "part-0.csv", "sha256": "43", "rows": 30}],
     "prefix": "batches/r", "segment": SEGMENT},
    {"type": "snapshot.published", "id": "ingested-000001", "cutoff": 1.0, "batches": 1,
     "files": {"meta": {**FILE, "path": "batches/r/meta.json"}},
     "stats": {"name": "ingested", "edges": 30}},
    {"type": "snapshot.published", "id": "s", "cutoff": 0.5, "files": {"edges": PART},
     "stats": {}},
    {"type": "landing.noted", "at": AT, "files": [
        {"role": "edges", "rel": "p.csv", "uri": "/l/p.csv", "size": 17, "tag": "17.2",
         "sha256": "22", "outcome": "empty"},
        {"role": "edges", "rel": "q.csv", "uri": "/l/q.csv", "size": 649, "tag": "17.3",
         "sha256": "43", "outcome": "already ingested", "batch_id": "b-1"}]},
    {"type": "batches.compacted", "at": AT, "replaced": [{"first": 0, "last": 0}],
     "segments": [SEGMENT]},
    {"type": "retention.applied", "at": AT, "tables": ["v0/user"], "models": ["0"],
     "chains": [], "purged": ["batches/r/e.parquet"]},
    {"type": "version.candidate", "version": 0, "parent": None, "dim": 8,
     "method": "bc-aligner", "spec": {"hidden_dim": 8}, "snapshot_id": "s", "cutoff": 1.0,
     "created_at": AT, "metrics": {"recall": 0.1, "nan": None}, "files": {"model": FILE}},
    {"type": "version.published", "version": 0, "at": AT},
    {"type": "refresh.published", "version": 0, "entity": "user", "refresh_id": "r",
     "files": [PART], "rows": 20, "dim": 8, "refreshed_at": AT, "snapshot_id": "s",
     "cutoff": 1.0, "mode": "full", "stats": {"seconds": 1.5}, "cache": {}},
    {"type": "delta.mirrored", "delta_version": 0, "paths": [PART["path"]],
     "tables": {"user": "r"}, "at": AT},
    {"type": "version.rejected", "version": 2, "reasons": ["worse"]},
    {"type": "version.rolled_back", "to": 1, "versions": [3], "at": AT, "reason": "bad"},
    {"type": "scheduler.configured", "refresh_cron": "0 2 * * *", "bump_cron": None,
     "holder": "vm:1", "at": AT},
    {"type": "run.recorded", "run_id": "refresh-1", "kind": "refresh", "slot": None,
     "status": "failed", "holder": "vm:1", "started_at": AT,
     "attempts": [{"step": "refresh", "attempt": 1, "job_id": "j1", "status": "FAILED",
                   "error": "boom"}], "lease_generation": 0, "a_newer_key": {"kept": True}},
]


def test_every_kind_of_action_is_covered():
    assert {raw["type"] for raw in WRITTEN} == set(ACTIONS)


@pytest.mark.parametrize("raw", WRITTEN, ids=lambda raw: raw["type"])
def test_an_entry_older_bc_ray_wrote_reads_and_writes_back_the_same_json(raw):
    action = parse_action(raw, 7)
    assert type(action) is ACTIONS[raw["type"]]
    written = action.to_json()
    assert written == raw and orjson.dumps(written) == orjson.dumps(raw)  # nested key order too


def test_a_typed_action_writes_what_the_dict_literal_wrote():
    record = FileRecord(**PART)
    action = SnapshotPublished(id="s", cutoff=0.5, files={"edges": record}, stats={})
    assert action.to_json() == WRITTEN[3] and list(action.to_json()) == list(WRITTEN[3])
    retention = RetentionApplied(at=AT, tables=["v0/user"], models=[0], chains=[],
                                 purged=["batches/r/e.parquet"])
    assert retention.to_json() == WRITTEN[6]  # version numbers written as text, as before


@pytest.mark.parametrize("raw, match", [
    ({"type": "table.dropped"}, "unknown action type 'table.dropped'"),
    ({}, "unknown action type None"),
    ({"type": "refresh.published", "version": 0}, "malformed refresh.published action"),
    ({**WRITTEN[9], "files": [{**PART, "path": "../victim"}]}, "outside the store"),
])
def test_an_action_no_reader_can_take_is_an_error_naming_its_entry(raw, match):
    with pytest.raises(LogEntryError, match=match) as caught:
        parse_action(raw, 7)
    assert "log entry 7" in str(caught.value)


def test_which_hooks_a_commit_runs_is_a_property_of_its_actions():
    hooks = {raw["type"]: post_commit_hooks([parse_action(raw, 0)]) for raw in WRITTEN}
    both = [Hook.DELTA_MIRROR, Hook.RETENTION]
    assert hooks["refresh.published"] == hooks["version.rolled_back"] == both
    assert hooks["version.published"] == hooks["version.rejected"] == \
        hooks["batches.compacted"] == [Hook.RETENTION]
    assert not any(hooks[kind] for kind in set(hooks) - {
        "refresh.published", "version.rolled_back", "version.published", "version.rejected",
        "batches.compacted"})
    two_tables = [parse_action(WRITTEN[9], 0), parse_action({**WRITTEN[9], "entity": "item"}, 0)]
    assert post_commit_hooks(two_tables) == both  # each hook once per commit
