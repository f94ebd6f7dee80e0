import torch
import torch.nn.functional as F

from bc_ray.core.losses import alignment_multi, alignment_single, bpr_loss
from bc_ray.core.transforms import TransformChain


def test_bpr_prefers_positive_items():
    user = torch.tensor([[1.0, 0.0]])
    good, bad = torch.tensor([[2.0, 0.0]]), torch.tensor([[-2.0, 0.0]])
    assert bpr_loss(user, good, bad) < bpr_loss(user, bad, good)
    assert torch.isclose(bpr_loss(user, good, bad), F.softplus(torch.tensor(-4.0)))


def test_multi_step_is_the_amplified_error_of_method_md():
    """(1/k) sum_j mean ||W_{k-1}^j delta||^2 equals the reference's iterative form: multiply the
    difference by the older transforms, newest first, accumulating the mean squares."""
    torch.manual_seed(0)
    dims = [3, 4, 5]
    weights = [torch.randn(dims[i], dims[i + 1]) for i in range(2)]
    chain = TransformChain(dims, [(w.numpy(), torch.zeros(w.shape[0]).numpy()) for w in weights])
    predicted, target = torch.randn(9, 5), torch.randn(9, 5)
    ours = alignment_multi(predicted, target, chain.amplifiers())
    diff = predicted - target
    total = diff.pow(2).mean()
    for weight in reversed(weights):
        diff = diff @ weight.T
        total = total + diff.pow(2).mean()
    assert torch.isclose(ours, total / 3, rtol=1e-5)
    assert torch.isclose(alignment_single(predicted, target), (predicted - target).pow(2).mean())
    single = alignment_multi(predicted, target, [torch.eye(5)])
    assert torch.isclose(single, alignment_single(predicted, target))


def test_node_weights_count_a_node_as_often_as_its_weight():
    """Weighted alignment (a task's `align_weights`) equals the plain mean over rows repeated
    as many times as their weight, for the single- and the multi-step loss."""
    torch.manual_seed(1)
    predicted, target = torch.randn(4, 5), torch.randn(4, 5)
    counts = torch.tensor([3, 1, 2, 1])
    repeated = torch.repeat_interleave(torch.arange(4), counts)
    amplifiers = [torch.randn(3, 5), torch.eye(5)]
    weights = counts.float() / 10.0  # only relative weights matter
    assert torch.isclose(alignment_single(predicted, target, weights),
                         alignment_single(predicted[repeated], target[repeated]), rtol=1e-5)
    assert torch.isclose(alignment_multi(predicted, target, amplifiers, weights),
                         alignment_multi(predicted[repeated], target[repeated], amplifiers),
                         rtol=1e-5)
