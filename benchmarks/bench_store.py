"""Reading a ver-j compatible view against polars reading the ver-k Parquet alone, in one run:
1M x 128-dim embeddings by default, the store on the local filesystem.

    python benchmarks/bench_store.py [--rows 1000000] [--dim 128]
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone

import numpy as np
import polars as pl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from bc_ray import read_embeddings, scan_embeddings  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.store.tables import TableFiles, publish_refresh, table_prefix, write_table  # noqa: E402
from bc_ray.store.versions import Candidate, publish_version, register_candidate  # noqa: E402


def build(rows: int, dim: int) -> tuple[str, list[str]]:
    uri = f"file://{scratch_dir('bench-store-')}/store"
    store = Store(uri)
    rng = np.random.default_rng(0)
    for version in range(3):
        parent = store.state().current_version
        transform = None if parent is None else (
            rng.normal(size=(dim, dim)).astype(np.float32) / np.sqrt(dim),
            np.zeros(dim, np.float32))
        record = register_candidate(store, Candidate(parent, dim, "bc-aligner", {}, "s", 1.0,
                                                     b"model", transform))
        publish_version(store, record.version)
    now = datetime.now(timezone.utc)
    matrix = rng.normal(size=(rows, dim)).astype(np.float32)
    tables = []
    for entity in ("user", "item"):
        files = write_table(store, table_prefix(store, 2, entity, "bench"),
                            np.arange(rows, dtype=np.int64), matrix, 2, now)
        tables.append(TableFiles(entity, files, rows, dim))
    publish_refresh(store, 2, "bench", tables, "s", 1.0, "full", now)
    paths = [store.io.path(f.path) for f in store.state().table(2, "item").files]
    return uri, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    uri, paths = build(args.rows, args.dim)
    plain, _ = timed(lambda: pl.read_parquet(paths), repeat=3)
    latest, _ = timed(lambda: read_embeddings(uri, "item"), repeat=3)
    view, frame = timed(lambda: read_embeddings(uri, "item", version=0), repeat=3)
    lazy, _ = timed(lambda: scan_embeddings(uri, "item", version=0).collect(), repeat=3)
    trusted, _ = timed(lambda: read_embeddings(uri, "item", version=0, verify=False), repeat=3)
    lazy_trusted, _ = timed(lambda: scan_embeddings(uri, "item", version=0, verify=False
                                                    ).collect(), repeat=3)
    assert frame.height == args.rows
    rows = [["polars read_parquet of the ver-k files (baseline)", plain, 1.0],
            ["read_embeddings(version=None) (ver-k, sha256 + row count)", latest,
             latest / plain],
            ["read_embeddings(version=0) (ver-0 view: + one matmul)", view, view / plain],
            ["read_embeddings(version=0, verify=False) (no sha256)", trusted, trusted / plain],
            ["scan_embeddings(version=0).collect() (sha256 streamed first)", lazy,
             lazy / plain],
            ["scan_embeddings(version=0, verify=False).collect()", lazy_trusted,
             lazy_trusted / plain]]
    print_table(f"Reading {args.rows} x {args.dim} float32 embeddings ({os.cpu_count()} CPUs)",
                ["read", "seconds", "ratio to plain"], rows)
    write_json("store_read", {"rows": args.rows, "dim": args.dim, "plain_s": plain,
                              "latest_s": latest, "view_s": view, "scan_view_s": lazy,
                              "view_unverified_s": trusted,
                              "scan_view_unverified_s": lazy_trusted})


if __name__ == "__main__":
    main()
