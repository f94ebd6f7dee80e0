"""The GPU path (`--use-gpu`) where a CUDA device exists; skipped elsewhere, CI included.

Written after the first run on a lent GPU found evaluation embedding a CPU graph with a model on
the GPU: training passed, the first evaluation crashed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bc_ray.core.methods import get_method
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.version import PreviousVersion, prepare_trainer, split_evaluator
from bc_ray.data.snapshot import build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate
from bc_ray.models.graphsage.inference import layerwise_embed
from bc_ray.models.graphsage.spec import VersionSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def split():
    snapshot = build_snapshot(generate(SyntheticConfig(num_users=300, num_items=200,
                                                       num_edges=6_000, seed=2)))
    return period_split(snapshot, 0.8, 0.9)


def _trained(split, method: str, previous: PreviousVersion | None, mode: str):
    config = TrainConfig(epochs=2, batch_size=512, eval_every=2, warmup_epochs=0, mode=mode,
                         sparse_ids_min_nodes=0)
    trainer = prepare_trainer(get_method(method), VersionSpec(hidden_dim=32), split.graph,
                              config, previous, lambda targets: split_evaluator(split, targets),
                              item_pool=split.item_pool, device="cuda")
    trainer.fit()
    return trainer


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_bc_aligner_trains_and_evaluates_on_the_gpu(split, mode):
    v0 = _trained(split, "non-bc", None, mode)
    previous = PreviousVersion(0, v0.model.spec, [torch.eye(32)], model=v0.model.cpu().eval())
    v1 = _trained(split, "bc-aligner", previous, mode)
    metrics = v1.evaluate(2)
    assert 0.0 < metrics["recall"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["align_error"]))
    assert next(v1.model.parameters()).is_cuda


def test_layerwise_inference_on_the_gpu_equals_the_cpu(split):
    model = _trained(split, "non-bc", None, "full").model.cpu().eval()
    on_cpu = layerwise_embed(model, split.graph)[-1]
    on_gpu = layerwise_embed(copy.deepcopy(model).cuda(), split.graph.to("cuda"))[-1]
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
