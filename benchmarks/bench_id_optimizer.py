"""What row-wise Adagrad costs in quality against lazy Adam, for the row-sparse ID tables.

Sharded training at 100M interactions holds, per owned row, the ID row, its optimizer state and
its alignment target: Adam's two moments make that 16 d bytes, row-wise Adagrad's one float per
row 8 d + 4 (`--id-optimizer rowwise_adagrad`). The sharded tables step exactly as one
row-sparse table does (tests/core/test_row_shards.py), so this runs the one-process trainer in
sampled mode with row-sparse ID tables, the same steps for both optimizers:

- version 0 (non-bc) trained on the edges before t0, Recall@50 on the users of (t0, t1];
- version 1 (BC-Aligner, warm-started from version 0 as a nightly bump is, under a step budget)
  on the edges before t1, Recall@50 on (t1, t2] and the alignment error of B_1(z_1) to z_0.

Every number is the selected epoch's (validation users), reported per seed and as the mean; the
ratio rows are each variant over the first. A variant `OPTIMIZER@LR` gives the ID rows their
own learning rate (`--id-lr`; without one, the optimizer's default: `--lr` for Adam, 0.01 for
row-wise Adagrad); the dense weights keep `--lr`.

    python benchmarks/bench_id_optimizer.py [--dataset synthetic] [--edges 300000]
        [--seeds 0,1] [--epochs 6] [--bump-steps 200] [--lr 0.001]
        [--variants adam,rowwise_adagrad@0.001,rowwise_adagrad,rowwise_adagrad@0.03]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.core.splits import period_split  # noqa: E402
from bc_ray.core.train_config import ID_OPTIMIZERS, TrainConfig  # noqa: E402
from bc_ray.core.version import PreviousVersion, split_evaluator, train_version  # noqa: E402
from bc_ray.data import load_dataset  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402

TIMES = (0.6, 0.7, 0.8)  # t0, t1, t2: fractions of the timeline
VARIANTS = ("adam", "rowwise_adagrad@0.001", "rowwise_adagrad", "rowwise_adagrad@0.03")


def run_seed(snapshot, seed: int, variant: str, args) -> dict:
    """Version 0 then a warm-started BC-Aligner version 1, with the variant's optimizer and
    learning rate for the ID rows (`OPTIMIZER` or `OPTIMIZER@LR`)."""
    optimizer, _, id_lr = variant.partition("@")
    spec = VersionSpec(num_layers=2, hidden_dim=64)
    config = TrainConfig(epochs=args.epochs, batch_size=2048, lr=args.lr, mode="sampled",
                         fanout=10, sparse_ids_min_nodes=0, eval_every=1, warmup_epochs=0,
                         seed=seed, id_optimizer=optimizer, id_lr=float(id_lr or 0))
    split0 = period_split(snapshot, TIMES[0], TIMES[1], seed=seed)
    started = time.perf_counter()
    v0 = train_version(get_method("non-bc"), spec, split0.graph, config, None,
                       lambda targets: split_evaluator(split0, targets))
    split1 = period_split(snapshot, TIMES[1], TIMES[2], seed=seed)
    previous = PreviousVersion(0, spec, [torch.eye(spec.output_dim)], model=v0.model)
    bump = dataclasses.replace(config, warm_start="mean", max_steps=args.bump_steps,
                               epochs=max(1, args.epochs))
    v1 = train_version(get_method("bc-aligner"), spec, split1.graph, bump, previous,
                       lambda targets: split_evaluator(split1, targets))
    return {"seed": seed, "optimizer": variant, "seconds": time.perf_counter() - started,
            "v0_recall": v0.result.selected_metrics["recall"],
            "v0_epoch": v0.result.selected_epoch,
            "v1_recall": v1.result.selected_metrics["recall"],
            "v1_align_error": v1.result.selected_metrics["align_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--edges", type=int, default=300_000,
                        help="Synthetic data set's interactions (users edges/15, items /60).")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--bump-steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="ID optimizers, each OPTIMIZER or OPTIMIZER@LR (its own learning "
                             "rate; the first is the baseline of the ratios).")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    options = ({"num_edges": args.edges, "num_users": args.edges // 15,
                "num_items": args.edges // 60} if args.dataset == "synthetic" else {})
    snapshot = load_dataset(args.dataset, **options)
    variants = args.variants.split(",")
    for variant in variants:
        if variant.partition("@")[0] not in ID_OPTIMIZERS:
            parser.error(f"--variants: {variant!r} is not one of {ID_OPTIMIZERS}[@LR]")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in variants:
            rows.append(run_seed(snapshot, seed, variant, args))
            print(rows[-1], flush=True)
            write_json("id_optimizer", {"args": vars(args), "runs": rows})
    keys = ("v0_recall", "v1_recall", "v1_align_error", "seconds")
    means = {v: {k: float(np.mean([r[k] for r in rows if r["optimizer"] == v])) for k in keys}
             for v in variants}
    table = [[r["seed"], r["optimizer"], r["v0_epoch"], *(f"{r[k]:.4f}" for k in keys[:3]),
              f"{r['seconds']:.0f}"] for r in rows]
    table += [["mean", o, "", *(f"{means[o][k]:.4f}" for k in keys[:3]),
               f"{means[o]['seconds']:.0f}"] for o in variants]
    table += [["ratio", f"{v} / {variants[0]}", "",
               *(f"{means[v][k] / means[variants[0]][k]:.3f}" for k in keys[:3]), ""]
              for v in variants[1:]]
    write_json("id_optimizer", {"args": vars(args), "runs": rows, "means": means})
    print_table(f"ID optimizer and learning rate of the ID rows ({args.dataset}, "
                f"{snapshot.edges.height:,} edges, {snapshot.num_users:,} users, "
                f"{snapshot.num_items:,} items)",
                ["seed", "ID optimizer", "v0 epoch", "v0 Recall@50", "v1 Recall@50",
                 "v1 align error", "s"], table)


if __name__ == "__main__":
    main()
