import torch
from torch_geometric.nn import SAGEConv

from bc_ray.core.graph import Adjacency, build_graph
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.sampler import NeighborSampler
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.data.timeline import edges_until


def _graph(snapshot, t=0.6):
    return build_graph(snapshot, edges_until(snapshot, t), now=t)


def test_our_mean_aggregation_is_pyg_sageconv():
    torch.manual_seed(0)
    rows, cols = torch.randint(0, 30, (200,)), torch.randint(0, 50, (200,))
    adjacency = Adjacency(rows, cols, 30, 50)
    conv = SAGEConv(16, 8)
    x = torch.randn(50, 16, requires_grad=True)
    ours = conv.lin_l(adjacency.aggregate(x, "mean")) + conv.lin_r(x[:30])
    edge_index = torch.stack([adjacency.cols, adjacency.rows])  # source -> target
    theirs = conv((x, x[:30]), edge_index)
    assert torch.allclose(ours, theirs, atol=1e-5)
    grad_ours = torch.autograd.grad(ours.square().sum(), x)[0]
    grad_theirs = torch.autograd.grad(theirs.square().sum(), x)[0]
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-5)


def test_bipartite_adjacency_is_the_general_one_over_both_directions():
    torch.manual_seed(0)
    users, items = torch.randint(0, 40, (300,)), torch.randint(0, 7, (300,))  # many repeats
    both = Adjacency(torch.cat([users, items + 40]), torch.cat([items + 40, users]), 47, 47)
    lean = Adjacency.bipartite(users, items, 40, 7)
    assert torch.equal(lean.crow, both.crow) and torch.equal(lean.cols, both.cols)
    empty = Adjacency.bipartite(torch.zeros(0, dtype=torch.long),
                                torch.zeros(0, dtype=torch.long), 3, 0)
    assert empty.crow.tolist() == [0, 0, 0, 0] and empty.nnz == 0


def test_shapes_and_growing_specs(small_snapshot):
    graph = _graph(small_snapshot)
    for spec in (VersionSpec(hidden_dim=16), VersionSpec(hidden_dim=16).grown(2, width_step=8),
                 VersionSpec(num_layers=1, hidden_dim=8, out_dim=4, aggregation="max")):
        z_user, z_item = build_model(spec, graph).embed(graph)
        assert z_user.shape == (graph.num_users, spec.output_dim)
        assert z_item.shape == (graph.num_items, spec.output_dim)
        assert torch.isfinite(z_user).all()


def test_inductive_for_entities_the_model_never_saw(small_raw, small_snapshot):
    """A model built on an early snapshot embeds a later, larger one: entities past its ID
    table use the zero row and are embedded from their features and neighbours."""
    import dataclasses

    from bc_ray.data.snapshot import build_snapshot

    cut = small_raw.edges.sort("timestamp").head(2_000)
    early_snapshot = build_snapshot(dataclasses.replace(small_raw, edges=cut))
    early = _graph(early_snapshot, 1.0)
    late = _graph(small_snapshot, 1.0)
    assert late.num_users > early.num_users
    model = build_model(VersionSpec(hidden_dim=16), early)
    z_user, z_item = model.embed(late)
    assert z_user.shape[0] == late.num_users and torch.isfinite(z_user).all()
    newcomers = z_user[early.num_users:]
    assert newcomers.std(0).mean() > 0  # not all the same vector: features and neighbours differ
    assert early_snapshot.users["id"].equals(small_snapshot.users["id"].head(early.num_users))


def test_unseen_entities_keep_zero_ids(small_snapshot):
    graph = _graph(small_snapshot, 0.5)
    model = build_model(VersionSpec(hidden_dim=8), graph)
    user_degree, item_degree = graph.degrees()
    model.zero_unseen_ids(user_degree > 0, item_degree > 0)
    unseen = torch.nonzero(user_degree == 0).flatten()
    assert unseen.numel() > 0
    assert model.ids["user"].weight[unseen].abs().sum() == 0


def test_exact_sampling_equals_full_graph(small_snapshot):
    graph = _graph(small_snapshot)
    model = build_model(VersionSpec(num_layers=2, hidden_dim=16), graph).eval()
    full = model(graph)
    seeds = torch.tensor([0, 5, graph.num_users + 3, graph.num_users + 11])
    sample = NeighborSampler(graph.adjacency(), [-1, -1]).sample(seeds)
    assert torch.equal(sample.nodes[:4], seeds)
    with torch.no_grad():
        partial = model(graph, sample)
    assert torch.allclose(partial, full[seeds].detach(), atol=1e-5)


def test_light_inference_model_matches_the_pyg_one(small_snapshot):
    """Refresh processes load models without torch_geometric; outputs must be identical."""
    from bc_ray.models.graphsage.serialization import model_from_bytes, model_to_bytes

    graph = _graph(small_snapshot)
    for aggregation in ("mean", "sum", "max"):
        torch.manual_seed(0)
        model = build_model(VersionSpec(hidden_dim=8, aggregation=aggregation), graph).eval()
        light = model_from_bytes(model_to_bytes(model), light=True)
        assert not any(type(c).__module__.startswith("torch_geometric") for c in light.convs)
        assert torch.allclose(model(graph), light(graph), atol=1e-5), aggregation
