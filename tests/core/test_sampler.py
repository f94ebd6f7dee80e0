import torch

from bc_ray.core.graph import Adjacency
from bc_ray.models.graphsage.sampler import NeighborSampler


def _star():
    # node 0 has neighbours 1..20; every leaf has only node 0.
    rows = torch.cat([torch.zeros(20, dtype=torch.long), torch.arange(1, 21)])
    cols = torch.cat([torch.arange(1, 21), torch.zeros(20, dtype=torch.long)])
    return Adjacency(rows, cols, 21, 21)


def test_fanout_limits_neighbours_and_keeps_seeds_first():
    sampler = NeighborSampler(_star(), [3], torch.Generator().manual_seed(0))
    sample = sampler.sample(torch.tensor([0]))
    block = sample.blocks[0]
    assert sample.nodes[0] == 0 and block.num_dst == 1
    assert 1 <= block.adjacency.nnz <= 3
    assert set(sample.nodes[1:].tolist()) <= set(range(1, 21))


def test_full_fanout_is_exact_two_hop():
    sample = NeighborSampler(_star(), [-1, -1]).sample(torch.tensor([5]))
    assert sorted(sample.nodes.tolist()) == list(range(21))  # 5 -> 0 -> all leaves
    assert [b.num_dst for b in sample.blocks] == [2, 1]


def test_sampled_mean_is_unbiased():
    x = torch.arange(21, dtype=torch.float32)[:, None]
    sampler = NeighborSampler(_star(), [4], torch.Generator().manual_seed(1))
    means = []
    for _ in range(400):
        sample = sampler.sample(torch.tensor([0]))
        means.append(sample.blocks[0].adjacency.aggregate(x[sample.nodes], "mean").item())
    assert abs(sum(means) / len(means) - 10.5) < 0.35
