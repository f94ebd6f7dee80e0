"""Per-seed spread of `bc-ray benchmark paper` runs, and BC-Aligner against every other
Keep-Latest method seed by seed: the paired difference of the intended + unintended sum, its 95 %
t-interval and how many seeds it wins. Runs on disjoint seeds (`--first-seed`) are merged first.

    python benchmarks/paper_seeds.py OUT [OUT ...]     # OUT: folders given to --out
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bc_ray.experiments.seeds import merge, paired_comparison, summary_per_seed  # noqa: E402


def load(folder: str) -> dict:
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; run `bc-ray benchmark paper --out {folder}` first")
    with open(path, "rb") as handle:
        return orjson.loads(handle.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="+", help="folders `bc-ray benchmark paper --out` wrote")
    args = parser.parse_args()
    results = merge([load(folder) for folder in args.out])
    rows = summary_per_seed(results)
    print(f"{results['dataset']}, preset {results['preset']}, {results['seeds']} seed(s)\n")
    print("| Method | sum per seed | sum mean ± sd | last align per seed |")
    print("|---|---|---|---|")
    for method, by_seed in rows.items():
        if method == "keep-all":
            continue
        values = np.array([row["sum_pct"] for row in by_seed.values()])
        aligns = [row["last_align_error"] for row in by_seed.values()]
        spread = values.std(ddof=1) if len(values) > 1 else float("nan")
        print(f"| {method} | {' / '.join(f'{x:+.2f}' for x in values)} | {values.mean():+.2f} "
              f"± {spread:.2f} | {' / '.join(f'{x:.3f}' for x in aligns)} |")
    print("\nBC-Aligner minus each other Keep-Latest method "
          "(sum, %; positive: BC-Aligner better)\n")
    print("| Method | seeds | mean diff | 95 % interval | BC-Aligner wins | finding |")
    print("|---|---:|---:|---|---:|---|")
    for row in paired_comparison(results):
        print(f"| {row['method']} | {row['seeds']} | {row['mean_diff']:+.2f} | "
              f"[{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] | {row['wins']}/{row['seeds']} | "
              f"{row['finding']} |")


if __name__ == "__main__":
    main()
