"""A model file written in place (`ModelFileWriter`, `write_model_file`): on three real gloo ranks
rank 0 writes M_k's file from every worker's rows a block at a time, and the file holds what
`save_model` writes of the gathered model: every tensor's record byte for byte, an equal
payload, and CRCs that agree in every header, which any zip reader checks."""

import collections
import os
import struct
import zipfile

import numpy as np
import pytest
import torch
import torch.distributed as dist

from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import CorruptFileError
from bc_ray.models.graphsage import model_file_writer, sharded_model_file
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import ModelFile
from bc_ray.models.graphsage.model_file_writer import (
    ModelFileWriter,
    layout_payload,
    writes_in_place,
)
from bc_ray.models.graphsage.serialization import model_from_file, save_model
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


def _tensor_records(path: str) -> dict[str, bytes]:
    """Each tensor's record (`read` checks its CRC against the zip's directory)."""
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()
                if "/data/" in info.filename}


def _headers_agree(path: str) -> None:
    """Every record's CRC as its local header or data descriptor says equals its directory's
    (zipfile checks only the directory's)."""
    with open(path, "rb") as file, zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            file.seek(info.header_offset)
            local = file.read(30)
            flags, = struct.unpack("<H", local[6:8])
            if not flags & 0x08:
                assert struct.unpack("<I", local[14:18])[0] == info.CRC, info.filename
                continue
            file.seek(info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
                      + info.file_size)
            assert file.read(8) == b"PK\x07\x08" + struct.pack("<I", info.CRC), info.filename


def _same_file(written: str, saved: str) -> None:
    """The file written in place holds what the saved one does, its CRCs right everywhere."""
    assert _tensor_records(written) == _tensor_records(saved)
    _headers_agree(written)
    _same_payload(written, saved)


def _same_payload(path: str, other: str) -> None:
    payload = torch.load(path, weights_only=True)
    expected = torch.load(other, weights_only=True)
    assert payload.keys() == expected.keys()
    assert {k: v for k, v in payload.items() if k != "state"} == \
        {k: v for k, v in expected.items() if k != "state"}
    assert list(payload["state"]) == list(expected["state"])  # in the same order
    for name, tensor in expected["state"].items():
        assert torch.equal(payload["state"][name], tensor), name


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
    _same_file(written, str(tmp_path / "gathered" / "model.pt"))
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


def _fail_on_ranks(rank: int, port: int, folder: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=OWNERS.workers)
    rows = _table()[OWNERS.nodes_of(rank)].contiguous()
    try:
        write_model_file(_model(), rows, OWNERS,
                         os.path.join(folder, "no such folder", "model.pt") if rank == 0 else None)
        results[rank] = "written"
    except Exception as error:  # noqa: BLE001 - what each rank was told
        results[rank] = f"{type(error).__name__}: {error}"
    dist.destroy_process_group()


@pytest.mark.skipif(not writes_in_place(), reason="needs torch.serialization.skip_data")
def test_a_file_rank0_cannot_lay_out_fails_every_rank_instead_of_leaving_them_waiting(tmp_path):
    results = gloo_ranks(_fail_on_ranks, OWNERS.workers, str(tmp_path))
    assert "no such folder" in results[0] or "No such file" in results[0]
    for rank in (1, 2):
        assert results[rank].startswith("ConfigError: rank 0 could not lay M_k's model file out")


def test_one_worker_writes_the_file_in_place_or_gathered_alike(tmp_path, monkeypatch):
    """With one worker no group is needed; a torch that cannot write in place (monkeypatched
    here) gathers the tables and saves them, and the two files hold the same records."""
    owners = RowOwners(USERS, np.array([0, USERS]), np.array([0, ITEMS]))
    can = writes_in_place()
    for name, in_place in (("in-place", can), ("gathered", False)):
        (tmp_path / name).mkdir()
        monkeypatch.setattr(sharded_model_file, "writes_in_place", lambda: in_place)
        write_model_file(_model(), _table(), owners, str(tmp_path / name / "model.pt"),
                         block_bytes=7 * DIM * 4)
    _same_file(str(tmp_path / "in-place" / "model.pt"), str(tmp_path / "gathered" / "model.pt"))
    model = model_from_file(str(tmp_path / "gathered" / "model.pt"))
    assert torch.equal(model.ids["item"].weight[:ITEMS], _table()[USERS:])


def _layout(users: int = USERS, items: int = ITEMS) -> dict:
    model = EmbeddingModel(VersionSpec(num_layers=1, hidden_dim=DIM), 0, 0, {"segment": 4},
                           {"category": 3})
    return layout_payload(model, {"user": users, "item": items})


@pytest.mark.skipif(not writes_in_place(), reason="needs torch.serialization.skip_data")
def test_the_writer_refuses_wrong_blocks_and_an_incomplete_file(tmp_path):
    path = str(tmp_path / "model.pt")
    writer = ModelFileWriter(path, _layout())
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


@pytest.mark.skipif(not writes_in_place(), reason="needs torch.serialization.skip_data")
def test_a_table_past_4_gib_is_laid_out_sparse_and_found_in_its_zip64_record(tmp_path,
                                                                              monkeypatch):
    """The 100M store's tables are 2.8 GB, a 1B store's 25 GB: zip64 records, whose sizes lie
    in an extra field. The layout holds no memory and no disk until rows are written."""
    room = collections.namedtuple("usage", "total used free")(1 << 40, 0, 1 << 40)
    monkeypatch.setattr(model_file_writer.shutil, "disk_usage", lambda path: room)
    path, users = str(tmp_path / "model.pt"), (5 << 30) // (DIM * 4)
    with ModelFileWriter(path, _layout(users=users)) as writer:
        assert os.stat(path).st_blocks * 512 < 1 << 20  # sparse: 5 GiB of nothing
        record = writer._records["ids.user.weight"]
        assert record.nbytes == (users + 1) * DIM * 4 > 1 << 32
        first = torch.arange(2 * DIM, dtype=torch.float32).reshape(2, DIM)
        writer.append("ids.user.weight", first)
        with open(path, "rb") as file:
            for position, signature in zip(record.crc_at, (b"PK\x07\x08", b"PK\x01\x02")):
                file.seek(position - (4 if signature == b"PK\x07\x08" else 16))
                assert file.read(4) == signature
            file.seek(record.offset)
            assert file.read(first.numel() * 4) == first.numpy().tobytes()
        writer.discard()  # not sealed: 5 GiB of rows are not written here


def test_a_layout_the_writer_does_not_know_is_gathered_and_saved_instead(tmp_path, monkeypatch,
                                                                          caplog):
    """A torch whose layout `ModelFileWriter` cannot read (records not where it expects) makes
    rank 0 gather and save, with a warning, rather than fail the bump at its very end."""
    def unknown_layout(path, payload):
        raise CorruptFileError("model file: ids.user.weight is not a record of its own")

    monkeypatch.setattr(sharded_model_file, "ModelFileWriter", unknown_layout)
    owners = RowOwners(USERS, np.array([0, USERS]), np.array([0, ITEMS]))
    path = str(tmp_path / "model.pt")
    with caplog.at_level("WARNING", logger=sharded_model_file.__name__):
        write_model_file(_model(), _table(), owners, path)
    assert "gathered and saved whole" in caplog.text
    assert torch.equal(model_from_file(path).ids["user"].weight[:USERS], _table()[:USERS])


@pytest.mark.skipif(not writes_in_place(), reason="needs torch.serialization.skip_data")
def test_a_disk_without_room_for_the_rows_is_refused_before_any_is_sent(tmp_path, monkeypatch):
    """The laid-out file is sparse: a disk that filled halfway through the rows would fail
    rank 0 while the others wait to send, so the room is checked when the file is laid out."""
    free = collections.namedtuple("usage", "total used free")(1 << 30, 1 << 30, 1 << 20)
    monkeypatch.setattr(model_file_writer.shutil, "disk_usage", lambda path: free)
    with pytest.raises(OSError, match=r"needs 16 MB more and its disk has 1 MB free"):
        ModelFileWriter(str(tmp_path / "model.pt"), _layout(users=1 << 19))
