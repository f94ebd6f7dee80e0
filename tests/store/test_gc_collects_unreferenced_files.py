"""Issue 25 item 9: `gc` collects every file under the data folders that no live state
references once it is older than the grace period, also inside a run prefix the log still names
(a killed retention's leftovers beside a live meta.json), and never a live or fresh file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from bc_ray.data.mapping import ColumnMapping
from bc_ray.ingest.batch import ingest
from bc_ray.ingest.read import BatchInput
from bc_ray.store.batches import compact, snapshot_id_for
from bc_ray.store.maintenance import collect_garbage
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.state import DATA_ROOTS
from bc_ray.store.store import RetentionPolicy, Store

REPO = Path(__file__).resolve().parents[2]
MAPPING = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", rating_col="stars")
BATCHES = 4


def _ingest_batches(store: Store) -> None:
    for k in range(BATCHES):
        edges = pl.DataFrame({"uid": [f"u{k}", f"u{k + 1}"], "sku": [f"i{k}", f"i{k + 1}"],
                              "ts": [1_700_000_000 + 10 * k] * 2, "stars": [1.0, 2.0]})
        items = pl.DataFrame({"sku": [f"i{k}"], "brand": [f"b{k % 2}"]})
        for name, frame in (("edges", edges), ("items", items)):
            store.io.write_bytes(f"in/{name}{k}.parquet", _parquet(frame))
        ingest(store, BatchInput(edges=store.io.uri_of(f"in/edges{k}.parquet"),
                                 items=store.io.uri_of(f"in/items{k}.parquet")), MAPPING)


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    sink = io.BytesIO()
    frame.write_parquet(sink)
    return sink.getvalue()


def _snapshots(store: Store) -> dict[str, tuple[pl.DataFrame, ...]]:
    return {sid: (s.edges, s.users, s.items)
            for sid in (snapshot_id_for(n) for n in range(1, BATCHES + 1))
            for s in [load_snapshot(store, sid)]}


def _killed_compaction(uri: str) -> set[str]:
    """Compact every batch into one segment with a retention whose grace has passed, and put
    back the replaced files its deletes removed: what a run killed between its retention
    commit and its deletes leaves. Returns those files (named by no live state any more)."""
    store = Store(uri, retention=RetentionPolicy(staging_grace_seconds=0))
    replaced = {f.path for s in store.state().segments for f in s.files.values()}
    saved = {path: store.io.read_bytes(path) for path in replaced}
    compact(store, target_rows=1_000)
    assert not any(store.io.exists(path) for path in replaced)  # retention deleted them
    for path, data in saved.items():  # ... but in the killed run it never got that far
        store.io.write_bytes(path, data)
    state = store.state()
    assert not replaced & (state.live_paths() | set(state.garbage))
    prefixes = {path.rsplit("/", 1)[0] for path in replaced}
    live_meta = {f"{prefix}/meta.json" for prefix in prefixes}
    assert live_meta <= state.live_paths()  # their folders are still "known" by a live file
    return replaced


def _all_files(store: Store) -> set[str]:
    """Every file under the data folders, listed with the filesystem itself."""
    start = len(store.io.path()) + 1
    return {path[start:] for root in DATA_ROOTS if store.io.fs.exists(store.io.path(root))
            for path in store.io.fs.find(store.io.path(root))}


def test_gc_collects_a_killed_retentions_files_inside_a_live_prefix(store_uri):
    store = Store(store_uri)
    _ingest_batches(store)
    before = _snapshots(store)
    orphans = _killed_compaction(store_uri)
    deleted = collect_garbage(store, grace_seconds=0, force=True)
    assert set(deleted) == orphans
    assert not any(store.io.exists(path) for path in orphans)
    state = store.state()
    assert _all_files(store) == state.live_paths()  # nothing live lost, nothing else left
    for record in _records(state):
        store.verify(record)
    after = _snapshots(Store(store_uri))
    for sid, frames in before.items():  # every snapshot still reads whole
        assert all(a.equals(b) for a, b in zip(frames, after[sid])), sid
    assert collect_garbage(store, grace_seconds=0, force=True) == []


def _records(state):
    for snapshot in state.snapshots.values():
        yield from snapshot.files.values()
    for segment in state.segments:
        yield from segment.files.values()


def test_bc_ray_gc_keeps_fresh_files_and_collects_old_orphans(tmp_path):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    _ingest_batches(store)
    before = _snapshots(store)
    orphans = _killed_compaction(uri)
    two_hours_ago = time.time() - 7200
    for path in _all_files(store):
        os.utime(store.io.path(path), (two_hours_ago, two_hours_ago))
    running = {"batches/20990101T000000-running/edges.parquet",  # a writer not yet committed
               "embeddings/v0/item/20990101T000000-running/part-00000.parquet"}
    for path in running:
        store.io.write_bytes(path, b"written a moment ago")
    live = store.state().live_paths()

    done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "gc", "--store", uri],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not any(store.io.exists(path) for path in orphans)
    assert f"{len(orphans)} unreferenced" in done.stdout
    assert all(store.io.exists(path) for path in running | live)
    after = _snapshots(Store(uri))
    for sid, frames in before.items():
        assert all(a.equals(b) for a, b in zip(frames, after[sid])), sid
