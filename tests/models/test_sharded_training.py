"""Training with the ID tables and the graph sharded across three real gloo ranks equals the
data-parallel training that replicates both: same losses, same ID rows, same dense weights after
several BC-Aligner steps (fanouts of -1 make both samples exact, so they must agree). Each rank
holds only its own users' and items' CSR rows, ID rows, Adam moments and alignment targets."""

import dataclasses
import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bc_ray.core.row_shards import RowOwners, ShardedRows
from bc_ray.core.evaluation import recall_at_k
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import Alignment, ShardedAlignment, VersionTrainer
from bc_ray.core.version import split_evaluator
from bc_ray.core.warmstart import warm_start
from bc_ray.core.transforms import make_transform
from bc_ray.core.triples import Triples
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.model import build_model
from bc_ray.models.graphsage.partitioned_sampler import PartitionedNeighborSampler
from bc_ray.models.graphsage.sharded_task import (
    LocalRows,
    ShardedLinkPredictionTask,
    sharded_model,
)
from bc_ray.models.graphsage.sharded_eval import (
    EVAL_CHUNK,
    Embedded,
    _chunks,
    sharded_layerwise,
    sharded_recall,
)
from bc_ray.models.graphsage.sharded_model_file import gathered_model, warm_id_rows
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.models.graphsage.model import EmbeddingModel
from tests.helpers import gloo_ranks

WORLD, STEPS, PREVIOUS_DIM = 3, 3, 6
SPEC = VersionSpec(num_layers=2, hidden_dim=8, batch_norm=False)
CONFIG = TrainConfig(batch_size=16, lr=1e-2, mode="sampled", fanout=-1, sparse_ids_min_nodes=0,
                     lam=2.0)


def _owned(owners: RowOwners, table: torch.Tensor, rank: int) -> torch.Tensor:
    """Rows of a users-then-items table that `rank` owns."""
    return table[owners.nodes_of(rank)]


def _ddp(trainer: VersionTrainer, ignored: list[str]) -> None:
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(trainer.joint, ignored)
    trainer.module = DistributedDataParallel(trainer.joint)


def _rank(rank: int, port: int, split, results) -> None:
    graph = split.graph
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    reference_model = build_model(SPEC, graph)
    user_degree, item_degree = graph.degrees()
    reference_model.zero_unseen_ids(user_degree > 0, item_degree > 0)
    generator = torch.Generator().manual_seed(3)
    targets = torch.randn(graph.num_nodes, PREVIOUS_DIM, generator=generator)
    mask = torch.rand(graph.num_nodes, generator=generator) < 0.7
    torch.manual_seed(1)
    reference = VersionTrainer(
        reference_model, graph, CONFIG,
        Alignment(make_transform("linear", SPEC.output_dim, PREVIOUS_DIM), targets, mask),
        rank=rank, world_size=WORLD)
    _ddp(reference, reference.sparse_parameter_names())

    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), WORLD)
    rows = LocalRows.from_edges(owners, rank, graph.edge_user.numpy(), graph.edge_item.numpy())
    model = sharded_model(SPEC, graph)
    dense = {k: v for k, v in reference_model.state_dict().items() if not k.startswith("ids.")}
    model.load_state_dict(dense, strict=False)
    whole_ids = torch.cat([reference_model.ids["user"].weight[:graph.num_users],
                           reference_model.ids["item"].weight[:graph.num_items]]).detach()
    task = ShardedLinkPredictionTask(model, graph, rows, CONFIG,
                                     _owned(owners, whole_ids, rank).clone(), rank=rank,
                                     world_size=WORLD)
    torch.manual_seed(1)
    alignment = ShardedAlignment(make_transform("linear", SPEC.output_dim, PREVIOUS_DIM),
                                 ShardedRows(owners, _owned(owners, targets, rank)), mask)
    sharded = VersionTrainer(model, graph, CONFIG, alignment, rank=rank, world_size=WORLD,
                             task=task)
    _ddp(sharded, [])

    draws = torch.Generator().manual_seed(10 + rank)
    losses = []
    for _ in range(STEPS):
        size = CONFIG.batch_size
        batch = Triples(torch.randint(0, graph.num_users, (size,), generator=draws),
                        torch.randint(0, graph.num_items, (size,), generator=draws),
                        torch.randint(0, graph.num_items, (size,), generator=draws))
        losses.append((reference.step(batch), sharded.step(batch)))
    results[f"losses{rank}"] = losses
    whole_after = torch.cat([reference_model.ids["user"].weight[:graph.num_users],
                             reference_model.ids["item"].weight[:graph.num_items]]).detach()
    results[f"ids{rank}"] = (_owned(owners, whole_after, rank), task.ids.weight.detach().clone())
    results[f"moved{rank}"] = int((task.ids.weight.detach()
                                   != _owned(owners, whole_ids, rank)).any(1).sum())
    results[f"dense{rank}"] = (reference_model.convs[1].lin_l.weight.detach().clone(),
                               model.convs[1].lin_l.weight.detach().clone(),
                               reference.joint.transform.weight_matrix().detach().clone(),
                               sharded.joint.transform.weight_matrix().detach().clone())
    results[f"holds{rank}"] = (task.rows.neighbours.size, owners.num_rows(rank))
    unseen = torch.cat([user_degree, item_degree])[owners.nodes_of(rank)] == 0
    results[f"unseen{rank}"] = (int(unseen.sum()),
                                int(torch.count_nonzero(task.ids.weight.detach()[unseen])))
    results[f"epoch{rank}"] = len(task.epoch(1))  # from its own users' edges, agreed
    # The candidate scored where its rows live, at fanout -1 (exact): as the one-table gate
    # scores the replicated model over the whole graph.
    eval_user, eval_item = split.eval_pairs
    z = sharded_layerwise(task, model)
    results[f"z{rank}"] = (z.clone(), owners.nodes_of(rank))
    results[f"recall{rank}"] = sharded_recall(task, Embedded.whole(z), eval_user, eval_item, k=10)
    # As the gate scores: the validation users, the items that exist by the period's end, k=50;
    # the last layer of the rows ranking reads alone (this worker's items and validation
    # users), in chunks of 5 nodes, so workers embed unequal numbers of chunks.
    (first_user, last_user), own_rows = owners.users_of(rank), owners.num_rows(rank)
    users = split.val_users[(split.val_users >= first_user) & (split.val_users < last_user)]
    scored = torch.cat([users - first_user, torch.arange(last_user - first_user, own_rows)])
    scored = torch.unique(scored)
    partial = sharded_layerwise(task, model, scored, chunk=5)
    results[f"scored{rank}"] = (scored.numel(), own_rows, (partial - z[scored]).abs().max())
    # Two held-out users: some worker ranks none and still takes part.
    few = torch.unique(eval_user)[:2]
    results[f"few_recall{rank}"] = sharded_recall(task, Embedded.whole(z), eval_user, eval_item,
                                                  k=10, users=few)
    results[f"gate_recall{rank}"] = sharded_recall(
        task, Embedded(scored, partial), eval_user, eval_item, users=split.val_users,
        item_pool=split.item_pool)
    try:  # a row scoring did not embed is an error, not another row's z
        Embedded(scored, partial).of(torch.arange(own_rows))
        results[f"unembedded{rank}"] = None
    except ValueError as error:
        results[f"unembedded{rank}"] = str(error)
    # Runs cut by neighbours too: a popular item's neighbours are gathered a slice of 16 at a
    # time, while another worker runs whole runs at the same places.
    results[f"z_by_ends{rank}"] = sharded_layerwise(task, model, max_ends=16)
    results[f"slices{rank}"] = sum(run.ends is not None for run in _chunks(
        owners.nodes_of(rank), rows.crow, EVAL_CHUNK, 16, split_hubs=True))
    if rank == 0:
        z_user, z_item = reference_model.embed(graph)
        results["reference_recall"] = recall_at_k(z_user, z_item, eval_user, eval_item,
                                                   graph.edge_user, graph.edge_item, k=10)
        results["gate_reference"] = split_evaluator(split, None)(reference_model, None)["recall"]
        results["few_reference"] = recall_at_k(z_user, z_item, eval_user, eval_item,
                                               graph.edge_user, graph.edge_item,
                                               users=torch.unique(eval_user)[:2], k=10)
        results["reference_z"] = torch.cat([z_user, z_item])
    whole = gathered_model(model, task.ids.weight, owners)
    if rank == 0:
        results["gathered"] = {k: v.clone() for k, v in whole.state_dict().items()}
        results["reference"] = {k: v.detach().clone()
                                for k, v in reference_model.state_dict().items()}
    else:
        results[f"gathered{rank}"] = whole

    seeds = torch.tensor([[0, 5, graph.num_users + 3], [7], []][rank], dtype=torch.long)
    sample = PartitionedNeighborSampler(owners, rows.crow, rows.neighbours, [3, 3],
                                        torch.Generator().manual_seed(rank)).sample(seeds)
    last = sample.blocks[-1].adjacency
    dst = sample.nodes[:last.num_dst][torch.repeat_interleave(
        torch.arange(last.num_dst), last.crow[1:] - last.crow[:-1])]
    results[f"drawn{rank}"] = (seeds, dst, sample.nodes[:last.num_src][last.cols])
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def split(small_snapshot):
    return period_split(small_snapshot, 0.6, 0.8)


@pytest.fixture(scope="module")
def graph(split):
    return split.graph


def test_sharded_steps_equal_replicated_data_parallel_steps(split, graph):
    results = gloo_ranks(_rank, WORLD, split)
    for rank in range(WORLD):
        for reference, sharded in results[f"losses{rank}"]:
            assert sharded["align"] > 0
            for key in ("loss", "bpr", "align"):
                assert sharded[key] == pytest.approx(reference[key], rel=1e-5), key
        expected, got = results[f"ids{rank}"]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        assert results[f"moved{rank}"] > 0
        reference_conv, conv, reference_transform, transform = results[f"dense{rank}"]
        torch.testing.assert_close(conv, reference_conv, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(transform, reference_transform, rtol=1e-4, atol=1e-6)
    # Each rank holds its share of the graph's CSR and of the ID rows, not the whole.
    ends = [results[f"holds{rank}"][0] for rank in range(WORLD)]
    rows = [results[f"holds{rank}"][1] for rank in range(WORLD)]
    assert sum(rows) == graph.num_nodes and max(rows) < graph.num_nodes
    assert max(ends) < 0.6 * sum(ends)
    # Every worker reports the recall the workers summed, the replicated model's.
    for rank in range(WORLD):  # layer by layer over the shards: the full-graph forward
        z, nodes = results[f"z{rank}"]
        assert (z - results["reference_z"][nodes]).abs().max() <= 1e-5
        assert (results[f"z_by_ends{rank}"] - z).abs().max() <= 1e-5
        # The last layer of some rows alone: the same z for those rows.
        count, own_rows, difference = results[f"scored{rank}"]
        assert 0 < count < own_rows and difference <= 1e-6
    slices = [results[f"slices{rank}"] for rank in range(WORLD)]  # hubs cut unevenly
    assert max(slices) > 0 and len(set(slices)) > 1
    assert 0 < results["reference_recall"] < 1
    assert 0 < results["gate_reference"] < 1
    for rank in range(WORLD):
        assert results[f"recall{rank}"] == pytest.approx(results["reference_recall"], abs=1e-9)
        assert results[f"gate_recall{rank}"] == pytest.approx(results["gate_reference"], abs=1e-9)
        assert results[f"few_recall{rank}"] == pytest.approx(results["few_reference"], abs=1e-9)
    # A row outside those embedded is refused.
    assert all("did not embed" in (results[f"unembedded{rank}"] or "") for rank in range(WORLD))
    # Rank 0 gathers M_k whole, the model file's content: equal to the replicated model's
    # weights, every ID row included (the padding rows, never trained, are zero); the other
    # ranks get nothing.
    gathered, reference = results["gathered"], results["reference"]
    assert gathered.keys() == reference.keys()
    for name, value in gathered.items():
        if name.startswith("ids."):
            assert not value[-1].any()
            value, expected = value[:-1], reference[name][:-1]
        else:
            expected = reference[name]
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6, msg=name)
    assert results["gathered1"] is None and results["gathered2"] is None
    # Entities without training edges keep a zero ID row, as in the one-table loop.
    assert sum(results[f"unseen{rank}"][0] for rank in range(WORLD)) > 0
    assert all(results[f"unseen{rank}"][1] == 0 for rank in range(WORLD))
    assert len({results[f"epoch{rank}"] for rank in range(WORLD)}) == 1
    # Sampled (fanout 3) through the owners: real neighbours, at most 3 per node.
    adjacency = graph.adjacency()
    for rank in range(WORLD):
        seeds, dst, src = results[f"drawn{rank}"]
        assert torch.isin(dst, seeds).all() and dst.numel() <= 3 * seeds.numel()
        for node in seeds.tolist():
            got = src[dst == node]
            true = adjacency.cols[adjacency.crow[node]:adjacency.crow[node + 1]]
            assert 0 < got.numel() <= 3 and torch.isin(got, true).all()


def test_sharded_task_refuses_a_mismatched_group(graph):
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), 2)
    rows = LocalRows.from_edges(owners, 0, graph.edge_user.numpy(), graph.edge_item.numpy())
    with pytest.raises(ConfigError, match="worker 0 of 2 given to worker 0 of 1"):
        ShardedLinkPredictionTask(sharded_model(SPEC, graph), graph, rows, CONFIG,
                                  torch.zeros(owners.num_rows(0), SPEC.hidden_dim))
    alone = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), 1)
    rows = LocalRows.from_edges(alone, 0, graph.edge_user.numpy(), graph.edge_item.numpy())
    model = sharded_model(SPEC, graph)
    task = ShardedLinkPredictionTask(model, graph, rows, CONFIG,
                                     torch.zeros(alone.num_rows(0), SPEC.hidden_dim))
    # Selection restores the task's rows with the dense weights: epoch 1 scores best.
    recalls, seen = iter([0.5, 0.1]), []

    def evaluate(model, transform) -> dict:
        seen.append(task.rows_state())
        return {"recall": next(recalls)}

    trainer = VersionTrainer(model, graph, dataclasses.replace(CONFIG, epochs=2, eval_every=1),
                             task=task, evaluator=evaluate)
    result = trainer.fit()
    assert result.selected_epoch == 1 and result.stopped_epoch == 2
    assert torch.equal(task.rows_state(), seen[0]) and not torch.equal(seen[0], seen[1])
    # A checkpoint holds the worker's rows, their Adam state and the selected rows.
    saved = trainer.state()
    again = VersionTrainer(model, graph, CONFIG, task=ShardedLinkPredictionTask(
        model, graph, rows, CONFIG, torch.zeros(alone.num_rows(0), SPEC.hidden_dim)))
    again.load_state(saved)
    assert torch.equal(again.task.rows_state(), task.rows_state())
    assert int(again.task.ids.optimizer.state_dict()["state"][0]["step"]) == trainer.steps_done
    again.task.load_rows_state(seen[1])
    again.result()  # the selected epoch's rows again
    assert torch.equal(again.task.rows_state(), seen[0])


NEW_USERS, NEW_ITEMS, UNTRAINED = 4, 2, 10


def _previous_model(graph) -> EmbeddingModel:
    """M_{k-1}: without the last few users and items (new since), its user rows near +3 and
    item rows near -3, and its first users and items never trained (zero rows)."""
    torch.manual_seed(5)
    previous = EmbeddingModel(SPEC, graph.num_users - NEW_USERS, graph.num_items - NEW_ITEMS,
                              graph.user_vocab, graph.item_vocab)
    previous.ids["user"].weight.data += 3.0
    previous.ids["item"].weight.data -= 3.0
    previous.ids["user"].weight.data[:UNTRAINED] = 0.0
    previous.ids["item"].weight.data[:UNTRAINED] = 0.0
    return previous


def _warm_rank(rank: int, port: int, graph, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), WORLD)
    nodes = owners.nodes_of(rank)
    seen = torch.cat([user_degree, item_degree])[nodes] > 0
    fresh = torch.zeros(owners.num_rows(rank), SPEC.hidden_dim)
    results[f"warm{rank}"] = (nodes, warm_id_rows(_previous_model(graph), owners, rank, fresh,
                                                  seen))
    dist.destroy_process_group()


def test_warm_start_takes_each_workers_own_rows_as_the_one_table_mean_start(graph):
    results = gloo_ranks(_warm_rank, WORLD, graph)
    nodes = torch.cat([results[f"warm{rank}"][0] for rank in range(WORLD)])
    sharded = torch.cat([results[f"warm{rank}"][1] for rank in range(WORLD)])[nodes.argsort()]
    previous = _previous_model(graph)
    one_table = build_model(SPEC, graph)
    warm_start(one_table, previous, graph, "mean")
    seen = torch.cat(graph.degrees()) > 0
    users = graph.num_users
    for entity, span in (("user", slice(0, users)), ("item", slice(users, None))):
        old = previous.ids[entity].weight.detach()[:-1]
        trained = torch.zeros(span.stop - span.start if span.stop else graph.num_items,
                              dtype=torch.bool)
        trained[:old.shape[0]] = old.abs().sum(1) > 0
        got, expected = sharded[span], one_table.ids[entity].weight.detach()[:-1]
        # Trained rows: copied, as the one-table start copies them.
        torch.testing.assert_close(got[trained], old[trained[:old.shape[0]]])
        torch.testing.assert_close(expected[trained], old[trained[:old.shape[0]]])
        # Rows seen now that M_{k-1} did not train (new since, or never trained): their
        # entity's mean trained row plus a little noise, in both (users near +3, items -3).
        new = seen[span] & ~trained
        assert new.sum() >= UNTRAINED // 2
        mean, spread = old[trained[:old.shape[0]]].mean(0), old[trained[:old.shape[0]]].std(0)
        for start in (got, expected):
            assert ((start[new] - mean).abs() < 0.5 * spread).all(), entity
        assert got[new].std(0).min() > 0  # with noise


def test_a_workers_edges_of_some_users_are_read_from_their_rows(graph):
    """Scoring reads the held-out users' training items from their rows (`user_edges_of`),
    not by filtering every edge the worker holds; users it does not own are refused."""
    user_degree, item_degree = graph.degrees()
    owners = RowOwners.balanced(user_degree.numpy(), item_degree.numpy(), 2)
    rows = LocalRows.from_edges(owners, 1, graph.edge_user.numpy(), graph.edge_item.numpy())
    all_users, all_items = rows.user_edges()
    first, last = owners.users_of(1)
    chosen = torch.arange(first, last)[::3]
    users, items = rows.user_edges_of(chosen)
    kept = torch.isin(all_users, chosen)
    assert sorted(zip(users.tolist(), items.tolist())) == sorted(
        zip(all_users[kept].tolist(), all_items[kept].tolist()))
    assert rows.user_edges_of(chosen[:0])[0].numel() == 0
    with pytest.raises(ValueError, match="outside worker 1"):
        rows.user_edges_of(torch.tensor([first - 1]))
