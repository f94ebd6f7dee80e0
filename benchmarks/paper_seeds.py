"""Per-seed spread of a `bc-ray benchmark paper` run: each method's sum of intended and
unintended degradation per seed, its mean and standard deviation, and its alignment error at the
last version per seed. Tells whether a difference between methods is larger than the noise.

    python benchmarks/paper_seeds.py OUT     # OUT: the folder given to --out
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bc_ray.experiments.report import summarize  # noqa: E402


def per_seed(results: dict) -> dict[str, list[tuple[float, float]]]:
    """method -> [(sum %, last-version alignment error) for each seed]."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in range(results["seeds"]):
        runs = [run for run in results["runs"] if run["seed"] == seed]
        for row in summarize({**results, "runs": runs}):
            if row["method"] != "keep-all":
                rows.setdefault(row["method"], []).append((row["sum_pct"],
                                                           row["last_align_error"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="the folder a `bc-ray benchmark paper --out` run wrote")
    args = parser.parse_args()
    path = os.path.join(args.out, "results.json")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; run `bc-ray benchmark paper --out {args.out}` first")
    with open(path, "rb") as handle:
        results = orjson.loads(handle.read())
    print("| Method | sum per seed | sum mean ± sd | last align per seed |")
    print("|---|---|---|---|")
    for method, values in per_seed(results).items():
        sums, aligns = np.array(values).T
        spread = sums.std(ddof=1) if len(sums) > 1 else float("nan")
        print(f"| {method} | {' / '.join(f'{x:+.2f}' for x in sums)} | {sums.mean():+.2f} ± "
              f"{spread:.2f} | {' / '.join(f'{x:.3f}' for x in aligns)} |")


if __name__ == "__main__":
    main()
