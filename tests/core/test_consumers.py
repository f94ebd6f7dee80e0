import torch

from bc_ray.core.consumers import (
    TASKS,
    ConsumerConfig,
    examples,
    item_rating_median,
    train_consumer,
)
from bc_ray.core.splits import period_split


def test_task_labels(small_snapshot):
    split = period_split(small_snapshot, 0.5, 0.7)
    median = item_rating_median(split)
    for task in TASKS:
        data = examples(task, split, "eval", median)
        labels = data.labels.numpy()
        assert labels.size > 10 and 0.02 < labels.mean() < 0.98, task
    edges = examples("edge-rating", split, "eval", median)
    assert edges.rows.shape[0] == 2


def test_consumer_learns_a_separable_task():
    torch.manual_seed(0)
    x = torch.randn(600, 6)
    y = (x[:, 0] + 0.3 * torch.randn(600) > 0).float()
    model = train_consumer(x[:400], y[:400], x[400:500], y[400:500],
                           ConsumerConfig(epochs=40, patience=10))
    assert model.auc(x[500:], y[500:]) > 0.85
    assert isinstance(model.net[1], torch.nn.ReLU)  # activation after the hidden layer


def test_a_validation_set_of_one_class_trains_without_choosing(caplog):
    """A small task's random hold-out can hold one class (no AUC): the consumer still trains,
    every epoch, with the grid's first setting, and says so; it used to fail deep in torch."""
    torch.manual_seed(0)
    x = torch.randn(600, 6)
    y = (x[:, 0] > 0).float()
    config = ConsumerConfig(epochs=20, patience=2)
    with caplog.at_level("WARNING", logger="bc_ray.core.consumers"):
        model = train_consumer(x[:400], y[:400], x[400:405], torch.ones(5), config)
    assert "holds one class" in caplog.text
    assert model.auc(x[500:], y[500:]) > 0.85
    assert model.net[0].out_features == config.hidden_dims[0]
