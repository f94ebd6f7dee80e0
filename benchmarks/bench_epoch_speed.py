"""One training epoch of the paper's full preset on MovieLens 100K: our trainer against the
reference implementation's approach, in the same run.

The reference (snap-stanford/bc-emb) recomputes every node embedding over the full graph for
every mini-batch of 2048 triples, with PyG's SAGEConv. Its torch_sparse SparseTensor has no wheel
for torch 2.13, so PyG runs SAGEConv by gathering and scattering along `edge_index`; that is the
"reference approach" timed here (same model sizes, same batches, same data). Ours runs the same
full-graph steps through a cached-transpose sparse matmul (graph.Adjacency).

    python benchmarks/bench_epoch_speed.py [--data ../shared/data/ml-100k] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, timed, write_json  # noqa: E402
from bc_ray.models.graphsage.model import EmbeddingModel, build_model  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.core.splits import period_split  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.core.trainer import VersionTrainer  # noqa: E402
from bc_ray.data import load_dataset  # noqa: E402


class ReferenceStyleModel(EmbeddingModel):
    """The same network, aggregating the way PyG does without torch_sparse (edge_index)."""

    def layer(self, index, x_src, adjacency, x_dst):
        if not hasattr(adjacency, "_edge_index"):
            adjacency._edge_index = torch.stack([adjacency.cols, adjacency.rows])
        x = self.convs[index]((x_src, x_dst), adjacency._edge_index)
        if self.norms is not None:
            x = self.norms[index](x)
        return torch.relu(x) if index < self.spec.num_layers - 1 else x


def epoch_seconds(model_cls, spec, split, epochs: int) -> float:
    torch.manual_seed(0)
    model = build_model(spec, split.graph)
    model.__class__ = model_cls
    trainer = VersionTrainer(model, split.graph, TrainConfig(epochs=epochs, batch_size=2048))
    trainer.run_epoch(1)  # warm-up
    seconds, _ = timed(lambda: [trainer.run_epoch(e) for e in range(2, 2 + epochs)])
    return seconds / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "ml-100k"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = f"movielens-100k:{args.data}" if os.path.isdir(args.data) else "synthetic"
    split = period_split(load_dataset(dataset), 0.5, 0.6)
    rows, results = [], []
    base = VersionSpec(num_layers=2, hidden_dim=256)
    for version in (0, 4):  # the smallest and the largest model of the full preset
        spec = base.grown(version)
        reference = epoch_seconds(ReferenceStyleModel, spec, split, args.epochs)
        ours = epoch_seconds(EmbeddingModel, spec, split, args.epochs)
        rows.append([f"v{version} ({spec.num_layers} layers, {spec.hidden_dim} wide)",
                     reference, ours, reference / ours])
        results.append({"version": version, "reference_s": reference, "ours_s": ours})
    print_table(f"One epoch on {dataset.split(':')[0]} (full preset, batch 2048, full-graph "
                f"steps, {args.threads} threads)",
                ["model", "reference approach s/epoch", "bc_ray s/epoch", "speed-up"], rows)
    write_json("epoch_speed", {"dataset": dataset, "results": results})


if __name__ == "__main__":
    main()
