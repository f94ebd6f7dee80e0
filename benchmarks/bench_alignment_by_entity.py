"""How well B_k carries users and items back to version k-1: the jointly trained B_k against its
least-squares refit on the same M_k (BC-Aligner against BC-Aligner + refit), per entity kind.

The paper protocol's first step on one data set: M_0 trained at t = 0.5 (Non-BC), M_1 at
t = 0.6 jointly with B_1 (BC-Aligner, lambda as given); then, on the t = 0.6 graph, for users
and items apart: the mean squared alignment error ||B z_1 - z_0||^2, the same relative to
||z_0||^2, the share of z_0's variance the ver-0 view keeps, and the mean cosine of the centred
ver-0 view with the centred z_0. The refit is `bc-aligner-refit`'s own (`finish_version` on the
same trained M_1).

    python benchmarks/bench_alignment_by_entity.py [--model sequence] [--spec ...] [--lam 4]
        [--epochs 20] [--dataset movielens-100k:../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.embedded import embedded  # noqa: E402
from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.core.registry import get_family  # noqa: E402
from bc_ray.core.splits import period_split  # noqa: E402
from bc_ray.core.transforms import TransformChain  # noqa: E402
from bc_ray.core.version import PreviousVersion, finish_version, train_version  # noqa: E402
from bc_ray.data import load_dataset  # noqa: E402
from bc_ray.experiments.paper import PRESETS  # noqa: E402

SEQUENCE_SPEC = "dim=32,layers=2,heads=2,max_len=50,dropout=0"


def entity_scores(view: torch.Tensor, target: torch.Tensor) -> dict:
    """Alignment of a ver-0 view to the ver-0 embeddings it stands in for."""
    error = (view - target).pow(2).sum(1)
    centred_view, centred_target = view - view.mean(0), target - target.mean(0)
    return {"mse": error.mean().item(),
            "relative": (error / target.pow(2).sum(1).clamp_min(1e-12)).mean().item(),
            "variance_kept": (centred_view.pow(2).sum(1).mean()
                              / centred_target.pow(2).sum(1).mean()).item(),
            "centred_cosine": torch.nn.functional.cosine_similarity(
                centred_view, centred_target, dim=1).mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k:../shared/data/ml-100k")
    parser.add_argument("--model", default="sequence")
    parser.add_argument("--spec", default=None, help=f"version 0's spec (default: {SEQUENCE_SPEC} "
                                                     "for sequence, the converged preset's for "
                                                     "graphsage, else the family's)")
    parser.add_argument("--lam", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    family = get_family(args.model)
    if args.spec is None and family is PRESETS["converged"].family:
        spec0 = PRESETS["converged"].spec  # the converged preset's GraphSAGE
    else:
        spec0 = family.parse_spec(args.spec if args.spec is not None else
                                  SEQUENCE_SPEC if args.model == "sequence" else "")
    spec_text = ",".join(f"{k}={v}" for k, v in spec0.to_dict().items())
    snapshot = load_dataset(args.dataset)
    first, second = period_split(snapshot, 0.5, 0.6), period_split(snapshot, 0.6, 0.7)
    config = dataclasses.replace(PRESETS["converged"].train, epochs=args.epochs,
                                 eval_every=args.epochs, warmup_epochs=0, patience=0,
                                 lam=args.lam)
    m0 = train_version(get_method("non-bc"), spec0, first.graph, config, None,
                       item_pool=first.item_pool)
    previous = PreviousVersion(0, spec0, TransformChain([spec0.output_dim]).amplifiers(),
                               model=m0.model)
    spec1 = family.grown(spec0, 1, PRESETS["converged"].width_step)
    m1 = train_version(get_method("bc-aligner"), spec1, second.graph, config, previous,
                       item_pool=second.item_pool)
    graph = second.graph
    with torch.no_grad():
        z0 = torch.cat(embedded(m0.model, graph))
        z1 = torch.cat(embedded(m1.model, graph))
    refit = finish_version(get_method("bc-aligner-refit"), m1.result, second.graph, config,
                           previous)
    views = {}
    for name, (weight, bias) in {"joint B_1 (bc-aligner)": m1.transform,
                                 "least-squares refit (bc-aligner-refit)":
                                     refit.transform}.items():
        views[name] = z1 @ torch.as_tensor(weight).T + torch.as_tensor(bias)
    users = torch.arange(graph.num_nodes) < graph.num_users
    rows, record = [], {}
    for name, view in views.items():
        for entity, mask in (("users", users), ("items", ~users)):
            scores = record.setdefault(name, {})[entity] = entity_scores(view[mask], z0[mask])
            rows.append([name, entity, scores["mse"], scores["relative"],
                         scores["variance_kept"], scores["centred_cosine"]])
    print_table(f"{args.dataset}, {args.model} ({spec_text}), lambda "
                f"{args.lam:g}, {args.epochs} epochs: version 1's ver-0 view against z_0",
                ["B_1", "entities", "mean sq. error", "relative", "variance kept",
                 "centred cosine"], rows)
    path = write_json(f"alignment-by-entity-{args.model}",
                      {"dataset": args.dataset, "model": args.model, "spec": spec_text,
                       "lam": args.lam, "epochs": args.epochs, "threads": args.threads,
                       "command": " ".join(sys.argv), "scores": record})
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
