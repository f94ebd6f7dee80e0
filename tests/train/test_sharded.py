"""Sharded training on Ray Train over a real store: the driver plans row owners from degrees
counted by Ray tasks; each of two workers streams the snapshot's edge files keeping only its own
nodes' edges, trains BC-Aligner steps with its ID rows and alignment targets sharded, and the
dense weights stay identical across workers (DDP)."""

import tempfile

import numpy as np
import pytest
import ray.train
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

from bc_ray.core.row_shards import ShardedRows
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import ShardedAlignment
from bc_ray.core.transforms import make_transform
from bc_ray.exceptions import TrainingError
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.partition.edge_files import EdgeFiles
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from bc_ray.train.loop import gathered, parameter_checksum
from bc_ray.train.runs import run_trainer
from bc_ray.train.sharded import ShardedRun, plan_owners, row_bytes, sharded_trainer

pytestmark = pytest.mark.ray

CUTOFF, PREVIOUS_DIM = 0.8, 12


def _worker(config: dict) -> None:
    run: ShardedRun = config["run"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    owned = run.owners.num_rows(rank)
    generator = torch.Generator().manual_seed(rank)
    targets = ShardedRows(run.owners, torch.randn(owned, PREVIOUS_DIM, generator=generator))
    mask = torch.ones(run.owners.num_users + run.owners.num_items, dtype=torch.bool)
    alignment = ShardedAlignment(make_transform("linear", run.spec.output_dim, PREVIOUS_DIM),
                                 targets, mask)
    trainer = sharded_trainer(run, rank, world, alignment)
    trainer.module = prepare_model(trainer.joint, move_to_device=False)
    before = trainer.task.ids.weight.detach().clone()
    for epoch in (1, 2):
        stats = trainer.run_epoch(epoch)
    moved = int((trainer.task.ids.weight.detach() != before).any(1).sum())
    held = trainer.task.nbytes
    # Ray Train keeps the metrics reported with a checkpoint.
    checkpoint = ray.train.Checkpoint.from_directory(tempfile.mkdtemp()) if rank == 0 else None
    ray.train.report({
        **{k: stats[k] for k in ("loss", "align", "steps", "edges")},
        "rows": gathered(str(owned)), "moved": gathered(str(moved)),
        "ends": gathered(str(trainer.task.rows.neighbours.size)),
        "id_bytes": gathered(str(held["id_rows"])),
        "checksums": gathered(parameter_checksum(trainer.joint))}, checkpoint=checkpoint)


def test_two_workers_train_on_their_own_rows_of_a_stored_snapshot(ray_cluster, small_snapshot,
                                                                  tmp_path):
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(CUTOFF))
    state = store.state()
    files = EdgeFiles.of(store, state, small_snapshot.num_users, small_snapshot.num_items)
    spec = VersionSpec(num_layers=2, hidden_dim=16)
    with pytest.raises(TrainingError, match="would have none to train on; use fewer workers"):
        plan_owners(files, small_snapshot.num_users + 1)
    owners = plan_owners(files, 2, row_bytes(spec, PREVIOUS_DIM))
    train = TrainConfig(batch_size=256, lr=1e-2, fanout=5, max_steps=6, edges_per_epoch=1536)
    run = ShardedRun(files, owners, spec, train, CUTOFF)
    result = run_trainer(TorchTrainer(
        _worker, train_loop_config={"run": run},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="sharded", storage_path=str(tmp_path / "_train"))))
    assert result.error is None, result.error
    metrics = result.metrics
    assert metrics["steps"] == 3 and metrics["edges"] == 3 * 256  # the budget, on every rank
    assert np.isfinite(metrics["loss"]) and metrics["align"] > 0
    rows = [int(r) for r in metrics["rows"]]
    nodes = small_snapshot.num_users + small_snapshot.num_items
    assert sum(rows) == nodes and max(rows) < 0.7 * nodes
    assert all(int(m) > 0 for m in metrics["moved"])  # every owner's rows were trained
    ends = [int(e) for e in metrics["ends"]]
    edges = int((small_snapshot.edges["t"] <= CUTOFF).sum())
    assert max(ends) < 1.4 * edges < sum(ends)  # each holds about half of the 2E ends
    assert [int(b) for b in metrics["id_bytes"]] == [3 * 4 * 16 * r for r in rows]
    assert len(set(metrics["checksums"])) == 1
