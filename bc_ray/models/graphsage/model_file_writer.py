"""A model file written in place: torch lays its records out, their bytes are written after.

A sharded bump ends with one model file that the refresh and Serve read. Gathering M_k's ID
tables into one process to `torch.save` them holds `4 d N` bytes there (2.8 GB at 100M
interactions, ~25 GB at 1B), however many workers share the tables. Instead torch writes the
file without the tensors' bytes (`torch.serialization.skip_data`; the ID tables fake tensors,
which take no memory at all), and each tensor's bytes are written where they lie as they
arrive (the file is sparse until then): the dense weights whole, an ID table a block of rows
at a time, in order. Each record's CRC-32 is taken as its bytes pass and set in the zip's
headers at the end, so the file holds what `torch.save` writes of the whole model (every
tensor's record byte for byte, the same payload), and any zip reader checks it.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from typing import BinaryIO

import torch

from bc_ray.exceptions import CorruptFileError
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import ID_TABLES, ModelFile, reads_offsets, tensor_bytes
from bc_ray.models.graphsage.serialization import model_payload

_LOCAL_HEADER, _CENTRAL_HEADER = b"PK\x03\x04", b"PK\x01\x02"
_DESCRIPTOR = b"PK\x07\x08"
_HAS_DESCRIPTOR = 0x08  # general purpose flag: the CRC and sizes follow the data


@cache
def writes_in_place() -> bool:
    """Whether this torch lays a file out from fake tensors without their bytes and says
    where they lie (older ones gather the tables and save them whole: `write_model_file`)."""
    if not reads_offsets():
        return False
    try:
        buffer = io.BytesIO()
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save({"probe": _unwritten((2,), torch.float32)}, buffer)
        buffer.seek(0)
        meta = torch.load(buffer, map_location="meta", weights_only=True)["probe"]
    except Exception:  # noqa: BLE001 - whatever an older torch raises: it cannot
        return False
    return meta.shape == (2,) and getattr(meta.untyped_storage(), "_checkpoint_offset", None) \
        is not None


def _unwritten(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor torch can lay out that holds no memory, not even an allocation the kernel
    counts (a 25 GB table on a smaller node): a fake tensor (torch's own, as torch.export
    uses them), which `skip_data(materialize_fake_tensors=True)` saves as a CPU tensor."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty(shape, dtype=dtype)


def layout_payload(model: EmbeddingModel, counts: dict[str, int]) -> dict:
    """`model`'s payload as of a model whose ID tables hold `counts[entity]` rows and the
    padding row, not yet written: what `ModelFileWriter` lays out. `model` has tables of any
    size, so that the payload's tensors come in the order of the whole model's."""
    payload = model_payload(model)
    payload["num_users"], payload["num_items"] = counts["user"], counts["item"]
    payload["state"] = {
        name: _unwritten((counts[name.split(".")[1]] + 1, *tensor.shape[1:]), tensor.dtype)
        if name.startswith(ID_TABLES) else tensor for name, tensor in payload["state"].items()}
    return payload


@dataclass
class _Record:
    """A tensor's record in the zip: where its bytes lie, how many are written, their CRC so
    far, and the two places the zip keeps that CRC."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    crc_at: tuple[int, int]  # (data descriptor or local header, central directory)
    written: int = 0
    crc: int = 0


class ModelFileWriter:
    """The model file at `path` of `payload` (`layout_payload`), whose tensors' bytes come
    through `append`, each tensor's in order. `close` checks that every byte came and seals
    the file."""

    def __init__(self, path: str, payload: dict) -> None:
        with torch.serialization.skip_data(materialize_fake_tensors=True):
            torch.save(payload, path)
        self._file, self._discarded = open(path, "r+b"), False
        try:
            self._records = _records(self._file)
            _check_room(path, sum(r.nbytes for r in self._records.values()))
        except BaseException:
            self._file.close()
            raise

    def check(self, name: str, tensor: torch.Tensor) -> None:
        """That `tensor` can be a block of rows of record `name` (its type and row shape)."""
        record = self._records[name]
        if tensor.dtype != record.dtype or tensor.dim() != len(record.shape) \
                or tuple(tensor.shape[1:]) != record.shape[1:]:
            raise ValueError(f"{name}: a block of {tensor.dtype} {tuple(tensor.shape)} for a "
                             f"tensor of {record.dtype} {record.shape}")

    def append(self, name: str, tensor: torch.Tensor) -> None:
        """`tensor`'s bytes after those already written of record `name` (a block of rows of
        an ID table, or a dense weight whole)."""
        self.check(name, tensor)
        record = self._records[name]
        data = tensor_bytes(tensor.contiguous())
        if record.written + len(data) > record.nbytes:
            raise ValueError(f"{name}: {record.written + len(data)} bytes written to a tensor "
                             f"of {record.nbytes}")
        _write_at(self._file.fileno(), data, record.offset + record.written)
        record.crc = zlib.crc32(data, record.crc)
        record.written += len(data)

    def close(self) -> None:
        """Every record whole, its CRC in the zip's headers."""
        if self._discarded:
            raise ValueError("model file discarded: it was left unsealed")
        if self._file.closed:
            return
        try:
            short = {name: f"{r.written} of {r.nbytes} bytes" for name, r in
                     self._records.items() if r.written != r.nbytes}
            if short:
                raise ValueError(f"model file left incomplete: {short}")
            for record in self._records.values():
                crc = struct.pack("<I", record.crc)
                for position in record.crc_at:
                    _write_at(self._file.fileno(), crc, position)
        finally:
            self._file.close()

    def discard(self) -> None:
        """Stop writing, the file unsealed: its caller drops it."""
        self._discarded = True
        self._file.close()

    def __enter__(self) -> ModelFileWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None and not self._discarded:
            self.close()
        else:
            self.discard()


def _check_room(path: str, size: int) -> None:
    """The disk holds the tensors' bytes still to come: a disk that fills halfway would fail
    rank 0 while the other workers wait to send (the laid-out file is sparse until then)."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free < size:
        raise OSError(errno.ENOSPC, f"M_k's model file needs {size / 2**20:,.0f} MB more and "
                      f"its disk has {free / 2**20:,.0f} MB free", path)


def _write_at(descriptor: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(descriptor, view, offset)
        view, offset = view[done:], offset + done


def _records(file: BinaryIO) -> dict[str, _Record]:
    """Each tensor's record in the skeleton `file`: its bytes found where torch says the tensor
    lies, the whole record holding that one tensor."""
    tensors = ModelFile(file).tensors
    by_data = {}
    archive = zipfile.ZipFile(file)
    central = archive.start_dir
    for entry in archive.infolist():
        head = os.pread(file.fileno(), 46, central)
        local = os.pread(file.fileno(), 30, entry.header_offset)
        if head[:4] != _CENTRAL_HEADER or len(head) < 46 or local[:4] != _LOCAL_HEADER \
                or len(local) < 30:
            raise CorruptFileError(f"model file: no headers for {entry.filename} where its "
                                   "directory says")
        names, extras, comments = struct.unpack("<HHH", head[28:34])
        flags, = struct.unpack("<H", local[6:8])
        data = entry.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
        after = data + entry.file_size
        if flags & _HAS_DESCRIPTOR and os.pread(file.fileno(), 4, after) != _DESCRIPTOR:
            raise CorruptFileError(f"model file: {entry.filename} is not laid out as torch "
                                   "writes a record")
        local_crc = after + 4 if flags & _HAS_DESCRIPTOR else entry.header_offset + 14
        by_data[data] = (entry.file_size, (local_crc, central + 16))
        central += 46 + names + extras + comments
    records = {}
    for name, tensor in tensors.items():
        size, crc_at = by_data.get(tensor.offset, (None, None))
        if size != tensor.nbytes:
            raise CorruptFileError(f"model file: {name} is not a record of its own")
        records[name] = _Record(tensor.offset, tensor.nbytes, tensor.dtype, tensor.shape, crc_at)
    return records
