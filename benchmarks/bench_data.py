"""The synthetic generator at scale: seconds to generate and index a snapshot, against the
budget the data layer promises (10M edges in under a minute on 2 cores), and against reading the
same edges back from Parquet with polars (the cheapest way to get them otherwise).

    python benchmarks/bench_data.py [--edges 1000000,10000000]
"""

from __future__ import annotations

import argparse
import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402

BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", default="1000000,10000000")
    args = parser.parse_args()
    rows, results = [], {}
    for edges in (int(e) for e in args.edges.split(",")):
        config = SyntheticConfig(num_users=edges // 20, num_items=edges // 50, num_edges=edges)
        generate_s, raw = timed(lambda: generate(config))
        build_s, snapshot = timed(lambda: build_snapshot(raw))
        path = os.path.join(scratch_dir("bench-data-"), "edges.parquet")
        snapshot.edges.write_parquet(path)
        read_s, _ = timed(lambda: pl.read_parquet(path))
        total = generate_s + build_s
        rows.append([edges, generate_s, build_s, total, read_s, total / BUDGET_S])
        results[edges] = {"generate_s": generate_s, "build_s": build_s, "parquet_read_s": read_s}
    print_table(f"Synthetic generator ({os.cpu_count()} CPUs)",
                ["edges", "generate s", "index s", "total s", "polars read of the edges s",
                 "share of the 60 s budget"], rows)
    write_json("data", results)


if __name__ == "__main__":
    main()
