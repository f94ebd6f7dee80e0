"""Ingestion against the plainest code doing the same I/O, in one run.

1. One big batch (10M edges by default, 1M users, 100k items, integer ids): `bc-ray data ingest`
   (hash, validate, map ids to stable indices, write, commit) against polars reading the same
   Parquet file and writing its rows back to Parquet in one process (target: at most 2x).
2. A year of daily batches (365 by default): loading the grown snapshot before and after
   `bc-ray data compact`, against loading a store holding the same edges as one batch (target
   after compaction: within 1.2x).

    python benchmarks/bench_ingest.py [--edges 10000000] [--days 365] [--daily-edges 10000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import polars as pl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from bc_ray.data.mapping import ColumnMapping  # noqa: E402
from bc_ray.ingest.batch import ingest  # noqa: E402
from bc_ray.ingest.read import BatchInput  # noqa: E402
from bc_ray.store.batches import compact  # noqa: E402
from bc_ray.store.snapshots import load_snapshot  # noqa: E402
from bc_ray.store.store import RetentionPolicy, Store  # noqa: E402

MAPPING = ColumnMapping(user_col="user_id", item_col="item_id", time_col="ts",
                        rating_col="rating")
START = 1_704_067_200  # 2024-01-01: a year of days ends in the past (future times are refused)


def interactions(edges: int, users: int, items: int, day: int, seed: int) -> pl.DataFrame:
    """Power-law item popularity, uniform users, times within one day."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    return pl.DataFrame({
        "user_id": rng.integers(0, users, edges, dtype=np.int64) + 10_000_000,
        "item_id": rng.choice(items, edges, p=popularity / popularity.sum()).astype(np.int64),
        "ts": START + day * 86_400 + rng.integers(0, 86_400, edges, dtype=np.int64),
        "rating": rng.integers(1, 6, edges).astype(np.float32),
    })


def big_batch(args: argparse.Namespace) -> list[list[object]]:
    folder = scratch_dir("bench-ingest-")
    source = os.path.join(folder, "batch.parquet")
    interactions(args.edges, args.edges // 10, args.edges // 100, 0, 0).write_parquet(source)

    def plain() -> int:
        frame = pl.read_parquet(source)
        frame.write_parquet(os.path.join(folder, f"copy-{np.random.randint(1 << 30)}.parquet"))
        return frame.height

    plain_seconds, rows = timed(plain, repeat=2)
    counter = iter(range(100))

    def ours() -> dict:
        store = Store(f"file://{folder}/store-{next(counter)}")
        return ingest(store, BatchInput(edges=source), MAPPING).stats

    ours_seconds, stats = timed(ours, repeat=2)
    return [[f"ingest {rows / 1e6:.0f}M edges ({stats['new_users']:,} users, "
             f"{stats['new_items']:,} items)", ours_seconds, plain_seconds,
             ours_seconds / plain_seconds]]


def daily_batches(args: argparse.Namespace) -> list[list[object]]:
    folder = scratch_dir("bench-daily-")
    users, items = args.daily_edges * 3, args.daily_edges // 4
    grown = Store(f"file://{folder}/grown", retention=RetentionPolicy(staging_grace_seconds=0))
    days = []
    for day in range(args.days):
        frame = interactions(args.daily_edges, users, items, day, day + 1)
        path = os.path.join(folder, f"dt={day:03d}.parquet")
        frame.write_parquet(path)
        days.append(frame)
        ingest(grown, BatchInput(edges=path), MAPPING)
        if day % 50 == 49:
            print(f"  ingested {day + 1} daily batches", flush=True)
    whole = os.path.join(folder, "year.parquet")
    pl.concat(days).write_parquet(whole)
    single = Store(f"file://{folder}/single")
    ingest(single, BatchInput(edges=whole), MAPPING)

    def load(store: Store):
        return load_snapshot(store)

    one_seconds, one = timed(lambda: load(single), repeat=3)
    before_seconds, before = timed(lambda: load(grown), repeat=3)
    summary = compact(grown)
    after_seconds, after = timed(lambda: load(grown), repeat=3)
    assert before.num_edges == after.num_edges == one.num_edges
    label = f"load {args.days} daily batches ({one.num_edges / 1e6:.2f}M edges)"
    return [[f"{label}, as ingested ({summary['segments_before']} segments)", before_seconds,
             one_seconds, before_seconds / one_seconds],
            [f"{label}, after compact ({summary['segments_after']} segment(s))", after_seconds,
             one_seconds, after_seconds / one_seconds]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--daily-edges", type=int, default=10_000)
    args = parser.parse_args()
    rows = big_batch(args) + daily_batches(args)
    header = ["work", "bc_ray s", "baseline s", "ratio"]
    print_table("Ingestion (baselines: polars read + write of the same rows; one batch of the "
                "same edges)", header, rows)
    write_json("bench_ingest", {"args": vars(args), "header": header, "rows": rows})


if __name__ == "__main__":
    main()
