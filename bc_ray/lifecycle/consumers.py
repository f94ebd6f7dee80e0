"""The downstream teams of the demo: one consumer model per unintended task, trained once on the
ver-0 embeddings they read from the store, then fed whatever the store serves as "version 0"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from bc_ray.core.consumers import TASKS, ConsumerConfig, ConsumerMLP, examples, item_rating_median
from bc_ray.core.splits import PeriodSplit
from bc_ray.data.snapshot import GraphSnapshot


def by_index(frame: pl.DataFrame, snapshot: GraphSnapshot, entity: str) -> torch.Tensor:
    """Embedding rows laid out by the snapshot's entity index (zeros for entities without one)."""
    table = snapshot.entities(entity).select("idx", "id")
    joined = table.join(frame.select("id", "embedding"), on="id", how="inner")
    dim = frame.schema["embedding"].shape[0]
    out = np.zeros((table.height, dim), dtype=np.float32)
    out[joined["idx"].to_numpy()] = np.stack(joined["embedding"].to_numpy())
    return torch.from_numpy(out)


@dataclass
class ConsumerSuite:
    models: dict[str, ConsumerMLP]
    median: float

    @classmethod
    def train(cls, split: PeriodSplit, z_user: torch.Tensor, z_item: torch.Tensor,
              config: ConsumerConfig = ConsumerConfig(epochs=60, patience=10)) -> ConsumerSuite:
        """Labels of the first period, ver-0 inputs; 20% of the examples for early stopping."""
        from bc_ray.core.consumers import train_consumer

        median = item_rating_median(split)
        models = {}
        generator = np.random.default_rng(config.seed)
        for task in TASKS:
            phase = "eval" if task.startswith("user") or task == "edge-rating" else "train"
            data = examples(task, split, phase, median)
            inputs = data.inputs(z_user, z_item)
            held = torch.from_numpy(generator.random(inputs.shape[0]) < 0.2)
            models[task] = train_consumer(inputs[~held], data.labels[~held], inputs[held],
                                          data.labels[held], config)
        return cls(models, median)

    def auc(self, split: PeriodSplit, z_user: torch.Tensor, z_item: torch.Tensor) -> dict:
        scores = {}
        for task, model in self.models.items():
            data = examples(task, split, "eval", self.median)
            scores[task] = model.auc(data.inputs(z_user, z_item), data.labels)
        scores["mean"] = float(np.mean([scores[t] for t in TASKS]))
        return scores
