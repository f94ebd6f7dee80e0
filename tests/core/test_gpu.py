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


def test_a_refresh_tasks_computations_on_the_gpu_equal_the_cpu(split):
    """What `layer_runs` and `sampled_runs` compute under `--use-gpu`: a layer over a task's
    graph (its CSR alone, no edge list) and a sampled forward, on the GPU."""
    from bc_ray.models.graphsage.inference import layer_for_nodes
    from bc_ray.models.graphsage.sampler import NeighborSampler
    from bc_ray.refresh.pack import pack_graph, unpack_graph

    model = _trained(split, "non-bc", None, "full").model.cpu().eval()
    task_graph = unpack_graph(pack_graph(split.graph))
    previous = model.inputs(split.graph).detach()
    nodes = torch.arange(0, task_graph.num_nodes, 3)
    on_cpu = layer_for_nodes(model.layer_stack(), task_graph, 1, previous, nodes)
    on_gpu = layer_for_nodes(copy.deepcopy(model.layer_stack()).cuda(), task_graph.to("cuda"), 1,
                             previous.cuda(), nodes.cuda())
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)

    sampler = NeighborSampler(split.graph.adjacency(), [5, 5], torch.Generator().manual_seed(0))
    sample = sampler.sample(nodes)
    with torch.no_grad():
        expected = model(split.graph, sample)
        got = copy.deepcopy(model).cuda()(split.graph.to("cuda", with_adjacency=False),
                                         sample.to("cuda"))
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)
