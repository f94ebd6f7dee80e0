"""A model file written in place (`ModelFileWriter`, `write_model_file`): on three real gloo ranks
rank 0 writes M_k's file from every worker's rows a block at a time, and the file is the one
`save_model` writes of the gathered model, record for record, with CRCs any zip reader checks."""

import os
import zipfile

import numpy as np
import pytest
import torch
import torch.distributed as dist

from bc_ray.core.row_shards import RowOwners
from bc_ray.models.graphsage import sharded_model_file
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import ModelFile
from bc_ray.models.graphsage.model_file_writer import ModelFileWriter, writes_in_place
from bc_ray.models.graphsage.serialization import model_from_file, payload_of_tables, save_model
from bc_ray.models.graphsage.sharded_model_file import gathered_model, write_model_file
from bc_ray.models.graphsage.spec import VersionSpec
from tests.helpers import gloo_ranks

USERS, ITEMS, DIM = 50, 31, 8
# Worker 1 owns no users; blocks of 3 rows cut every span into several.
OWNERS = RowOwners(USERS, np.array([0, 20, 20, USERS]), np.array([0, 7, 30, ITEMS]))


def _model() -> EmbeddingModel:
    """The dense weights every worker holds alike (no ID rows of its own: those are sharded)."""
    torch.manual_seed(0)
    model = EmbeddingModel(VersionSpec(num_layers=2, hidden_dim=DIM), 0, 0, {"segment": 4},
                           {"category": 3})
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if "running" in name:
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def _table() -> torch.Tensor:
    """Every node's ID row, users then items (each worker holds only its own)."""
    return torch.randn(USERS + ITEMS, DIM, generator=torch.Generator().manual_seed(1))


def _records(path: str) -> dict[str, bytes]:
    """Each record's bytes (`read` checks its CRC), but the serialization id, which differs
    between any two saves."""
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {info.filename: (info.header_offset, archive.read(info))
                for info in archive.infolist() if "serialization_id" not in info.filename}


def _write_on_ranks(rank: int, port: int, folder: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=OWNERS.workers)
    model, rows = _model(), _table()[OWNERS.nodes_of(rank)].contiguous()
    write_model_file(model, rows, OWNERS,
                     os.path.join(folder, "in-place", "model.pt") if rank == 0 else None,
                     block_bytes=3 * DIM * 4)
    whole = gathered_model(model, rows, OWNERS)
    if rank == 0:
        save_model(whole, os.path.join(folder, "gathered", "model.pt"))
    results[f"done{rank}"] = True
    dist.destroy_process_group()


@pytest.mark.skipif(not writes_in_place(), reason="this torch cannot lay a file out without its "
                                                  "bytes (torch.serialization.skip_data)")
def test_rank0_writes_the_file_in_place_as_the_gathered_model_saves(tmp_path):
    for name in ("in-place", "gathered"):
        (tmp_path / name).mkdir()
    results = gloo_ranks(_write_on_ranks, OWNERS.workers, str(tmp_path))
    assert all(results[f"done{rank}"] for rank in range(OWNERS.workers))
    written = str(tmp_path / "in-place" / "model.pt")
    assert _records(written) == _records(str(tmp_path / "gathered" / "model.pt"))
    model, table = model_from_file(written), _table()
    assert torch.equal(model.ids["user"].weight[:USERS], table[:USERS])
    assert torch.equal(model.ids["item"].weight[:ITEMS], table[USERS:])
    assert not model.ids["user"].weight[USERS].any()  # the padding row
    assert not model.ids["item"].weight[ITEMS].any()
    dense = {k: v for k, v in _model().state_dict().items() if not k.startswith("ids.")}
    for name, tensor in dense.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    with open(written, "rb") as file:  # and a reader of spans reads it as any model file
        span = ModelFile(file).model({"user": (20, 40), "item": (0, 5)})
    assert torch.equal(span.ids["user"](torch.tensor([20, 39])), table[[20, 39]])


def test_one_worker_writes_the_file_in_place_or_gathered_alike(tmp_path, monkeypatch):
    """With one worker no group is needed; a torch that cannot write in place (monkeypatched
    here) gathers the tables and saves them, and the two files hold the same records."""
    owners = RowOwners(USERS, np.array([0, USERS]), np.array([0, ITEMS]))
    for name, in_place in (("in-place", True), ("gathered", False)):
        (tmp_path / name).mkdir()
        monkeypatch.setattr(sharded_model_file, "writes_in_place", lambda: in_place)
        write_model_file(_model(), _table(), owners, str(tmp_path / name / "model.pt"),
                         block_bytes=7 * DIM * 4)
    if writes_in_place():
        assert _records(str(tmp_path / "in-place" / "model.pt")) == \
            _records(str(tmp_path / "gathered" / "model.pt"))
    model = model_from_file(str(tmp_path / "gathered" / "model.pt"))
    assert torch.equal(model.ids["item"].weight[:ITEMS], _table()[USERS:])


def _skeleton() -> dict:
    model = EmbeddingModel(VersionSpec(num_layers=1, hidden_dim=DIM), 0, 0, {"segment": 4},
                           {"category": 3})
    return payload_of_tables(model, {"user": USERS, "item": ITEMS})


@pytest.mark.skipif(not writes_in_place(), reason="needs torch.serialization.skip_data")
def test_the_writer_refuses_wrong_blocks_and_an_incomplete_file(tmp_path):
    path = str(tmp_path / "model.pt")
    writer = ModelFileWriter(path, _skeleton())
    with pytest.raises(ValueError, match="ids.user.weight: a block of torch.float64"):
        writer.append("ids.user.weight", torch.zeros(2, DIM, dtype=torch.double))
    with pytest.raises(ValueError, match=r"a block of torch.float32 \(2, 3\)"):
        writer.append("ids.user.weight", torch.zeros(2, 3))
    writer.append("ids.user.weight", torch.zeros(USERS + 1, DIM))
    with pytest.raises(ValueError, match="bytes written to a tensor of"):
        writer.append("ids.user.weight", torch.zeros(1, DIM))
    with pytest.raises(ValueError, match=r"left incomplete: .*ids.item.weight"):
        writer.close()
    with zipfile.ZipFile(path) as archive:  # not sealed: its tensors' CRCs are wrong
        assert archive.testzip() is not None
