"""A model file read in parts (`ModelFile`): on a local disk and on a real S3 endpoint, the
dense weights whole and of each ID table only the span a process was given, by ranged reads."""

import io

import numpy as np
import pytest
import torch

from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import CorruptFileError
from bc_ray.io import FileIO
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import EDGE_BYTES, EdgeCached, ModelFile, SpanTable
from bc_ray.models.graphsage.serialization import model_from_bytes, model_to_bytes
from bc_ray.models.graphsage.sharded_model_file import warm_id_rows
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.partition import model_source
from bc_ray.partition.model_source import ModelSource
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from bc_ray.store.versions import load_model_bytes
from tests.helpers import publish_model_version

USERS, ITEMS = 30_000, 10_000  # ID tables of 5 MB: more than the file's two ends


def _model(id_embeddings: bool = True) -> EmbeddingModel:
    torch.manual_seed(0)
    spec = VersionSpec(num_layers=2, hidden_dim=32, id_embeddings=id_embeddings)
    model = EmbeddingModel(spec, USERS, ITEMS, {"segment": 5}, {"category": 7, "brand": 11})
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if "running" in name:  # BatchNorm statistics other than their initial ones
                buffer.uniform_(0.5, 1.5)
    return model.eval()


class CountingReader(io.RawIOBase):
    """A file that counts the bytes read from it."""

    def __init__(self, handle) -> None:
        self.handle, self.read_bytes = handle, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def readinto(self, buffer) -> int:
        data = self.handle.read(len(buffer))
        buffer[:len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def _inputs(model: EmbeddingModel, entity: str, first: int, last: int) -> torch.Tensor:
    """h_0 of entities first..last-1, as a refresh's input task computes it (no features)."""
    rows = torch.arange(first, last)
    return model.inputs_of(entity, {}, rows, torch.zeros(rows.numel()), 0.0)


def test_a_span_of_the_file_looks_up_as_the_whole_model_and_reads_little_else(store_uri):
    model = _model()
    data = model_to_bytes(model)
    store = FileIO(store_uri)
    store.write_bytes("model.pt", data)
    whole = model_from_bytes(data, light=True)
    # Users 1000..1499 and items past the table's end (entities newer than the model).
    spans = {"user": (1_000, 1_500), "item": (ITEMS - 20, ITEMS + 30)}
    with store.arrow_fs().open_input_file(store.path("model.pt")) as raw:  # as `ModelSource`
        reader = CountingReader(raw)
        parts = ModelFile(reader).model(spans)
    for entity, (first, last) in spans.items():
        assert torch.equal(_inputs(parts, entity, first, last), _inputs(whole, entity, first, last))
    assert torch.equal(_inputs(parts, "item", ITEMS, ITEMS + 30), torch.zeros(30, 32))  # padding
    dense = {k: v for k, v in whole.state_dict().items() if not k.startswith("ids.")}
    assert dense.keys() == parts.state_dict().keys()
    assert all(torch.equal(dense[k], v) for k, v in parts.state_dict().items())
    assert [len(parts.ids[e]) for e in ("user", "item")] == [500, 20]
    # Of the ID tables (40,002 rows of 128 bytes, nearly all the file) it read the file's two
    # ends, where torch keeps its directory, the dense weights and 520 rows and the padding rows.
    with store.fs.open(store.path("model.pt"), "rb") as raw:
        dense_bytes = ModelFile(raw).dense_bytes
    assert reader.read_bytes <= 2 * EDGE_BYTES + dense_bytes + 522 * 128 < len(data) / 2
    with pytest.raises(ValueError, match="ID rows 999..999 read from a table holding rows "
                                         "1000..1499"):
        _inputs(parts, "user", 999, 1_001)


def test_the_files_ends_are_read_once_and_any_range_reads_as_the_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    path = tmp_path / "file"
    path.write_bytes(data)
    with open(path, "rb") as raw:
        reader = CountingReader(raw)
        cached = EdgeCached(reader, edge=1_000)
        assert reader.read_bytes == 2_000
        # Within an end, across an end's boundary, between the ends, past the file's end.
        for start, size in ((0, 10), (990, 10), (990, 20), (9_000, 1_000), (8_990, 20),
                            (5_000, 100), (9_995, 10), (0, 10_000)):
            cached.seek(start)
            assert cached.read(size) == data[start:start + size]
        assert reader.read_bytes == 2_000 + 20 + 20 + 100 + 10_000


def test_a_model_without_id_tables_reads_its_dense_weights(tmp_path):
    model = _model(id_embeddings=False)
    path = tmp_path / "model.pt"
    path.write_bytes(model_to_bytes(model))
    with open(path, "rb") as handle:
        parts = ModelFile(handle).model({"user": (0, 10), "item": (0, 10)})
    assert len(parts.ids) == 0
    assert torch.equal(_inputs(parts, "item", 0, 10), _inputs(model, "item", 0, 10))


def test_a_truncated_or_foreign_file_is_refused_clearly(tmp_path):
    data = model_to_bytes(_model())
    path = tmp_path / "model.pt"
    path.write_bytes(data[: len(data) // 2])
    with open(path, "rb") as handle, pytest.raises(CorruptFileError, match="model file"):
        ModelFile(handle)
    path.write_bytes(b"not a model")
    with open(path, "rb") as handle, pytest.raises(CorruptFileError, match="cannot be read"):
        ModelFile(handle)
    for other in (torch.zeros(3), {"state": {"x": torch.zeros(2)}},
                  {**torch.load(io.BytesIO(data), weights_only=True), "state": {"x": 1}}):
        buffer = io.BytesIO()
        torch.save(other, buffer)
        path.write_bytes(buffer.getvalue())
        with open(path, "rb") as handle, pytest.raises(CorruptFileError,
                                                       match="no bc_ray model|not a tensor"):
            ModelFile(handle)


def _published(uri: str, snapshot) -> tuple[Store, object]:
    """A store with a snapshot and an untrained 32-wide version 0: (store, its record)."""
    store = Store(uri)
    publish_snapshot(store, snapshot.with_cutoff(0.7))
    version = publish_model_version(store, snapshot.with_cutoff(0.7), hidden=32)
    return store, store.state().version(version)


def test_the_source_of_a_model_reads_it_mapped_locally_and_in_parts_on_s3(store_uri,
                                                                           small_snapshot):
    store, version = _published(store_uri, small_snapshot)
    source = ModelSource.of(store, version)
    whole = model_from_bytes(load_model_bytes(store, version.version), light=True)
    users = whole.num_users
    model = source.load({"user": (10, 20), "item": (0, 5)})
    assert torch.equal(_inputs(model, "user", 10, 20), _inputs(whole, "user", 10, 20))
    if store.io.scheme == "file":
        assert source.mode == "mapped" and source.holds(users) == 0
        return
    assert source.mode == "parts" and isinstance(model.ids["user"], SpanTable)
    # A reader of 10 rows holds the file's two ends, the dense weights and those rows.
    dense = sum(value.numel() * value.element_size() for name, value
                in whole.state_dict().items() if not name.startswith("ids."))
    assert source.dense_bytes == dense > 0
    assert source.holds(10) == 2 * EDGE_BYTES + dense + 10 * 32 * 4


def test_with_a_torch_that_cannot_read_in_parts_each_reader_loads_the_model_whole(
        s3_uri, small_snapshot, monkeypatch, caplog):
    """A torch older than the offsets `ModelFile` needs (`reads_offsets`): the readers load the
    file whole, as before, and the driver says so."""
    monkeypatch.setattr(model_source, "reads_offsets", lambda: False)
    store, version = _published(s3_uri, small_snapshot)
    source = model_source.ModelSource.of(store, version)
    assert source.mode == "whole" and "load the model whole" in caplog.text
    assert source.holds(10) == 2 * version.files["model"].size
    model = source.load({"user": (10, 20), "item": (0, 5)})
    assert isinstance(model.ids["user"], torch.nn.Embedding)
    whole = model_from_bytes(load_model_bytes(store, version.version), light=True)
    assert torch.equal(_inputs(model, "user", 0, 50), _inputs(whole, "user", 0, 50))


def test_a_warm_start_from_a_span_equals_one_from_the_whole_table(tmp_path):
    """A sharded worker's warm start (`warm_id_rows`) reads its own span of M_{k-1}'s tables:
    the rows it copies, those it leaves new and their statistics are the whole table's."""
    model = _model()
    with torch.no_grad():
        model.ids["user"].weight[20_000:20_100] = 0.0  # users M_{k-1} never trained
    path = tmp_path / "model.pt"
    path.write_bytes(model_to_bytes(model))
    # Worker 1 owns users 20,000..30,499 of a grown graph (past 29,999: new since M_{k-1}) and
    # items 6,000..10,049 (past 9,999: new).
    owners = RowOwners(USERS + 500, np.array([0, 20_000, USERS + 500]),
                       np.array([0, 6_000, ITEMS + 50]))
    rank, rows = 1, owners.num_rows(1)
    with open(path, "rb") as handle:
        parts = ModelFile(handle).model({e: (a, b) for e, a, b, _ in owners.spans(rank)})
    assert isinstance(parts.ids["user"], SpanTable)
    seen = torch.ones(rows, dtype=torch.bool)
    fresh = torch.randn(rows, 32)
    expected = warm_id_rows(model, owners, rank, fresh.clone(), seen, seed=3)
    assert torch.equal(warm_id_rows(parts, owners, rank, fresh.clone(), seen, seed=3), expected)
