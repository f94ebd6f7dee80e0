"""A model file written in place: torch lays its records out, their bytes are written after.

A sharded bump ends with one model file that the refresh and Serve read. Gathering M_k's ID
tables into one process to `torch.save` them holds `4 d N` bytes there (2.8 GB at 100M
interactions, ~25 GB at 1B), however many workers share the tables. Instead torch writes the
file without the tensors' bytes (`torch.serialization.skip_data`, a skeleton whose tables are
never touched), and each tensor's bytes are written where they lie as they arrive: the dense
weights whole, an ID table a block of rows at a time, in order. Each record's CRC-32 is taken
as its bytes pass and set in the zip's headers at the end, so the file is the one `torch.save`
writes of the whole model, record for record (only its serialization id differs, as it does
between any two saves), and any zip reader checks it.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import torch

from bc_ray.exceptions import CorruptFileError
from bc_ray.models.graphsage.model_file import ModelFile, reads_offsets, tensor_bytes

_LOCAL_HEADER, _CENTRAL_HEADER = b"PK\x03\x04", b"PK\x01\x02"
_DESCRIPTOR = b"PK\x07\x08"
_HAS_DESCRIPTOR = 0x08  # general purpose flag: the CRC and sizes follow the data


def writes_in_place() -> bool:
    """Whether this torch can lay a file out without its tensors' bytes and say where they lie
    (older ones gather the tables and save them whole: `write_model_file`)."""
    return hasattr(torch.serialization, "skip_data") and reads_offsets()


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
    """The model file at `path` of `payload` (a model's payload whose ID tables are not yet
    written: `payload_of_tables`), whose tensors' bytes come through `append`, each tensor's
    in order. `close` checks that every byte came and seals the file."""

    def __init__(self, path: str, payload: dict) -> None:
        with torch.serialization.skip_data():
            torch.save(payload, path)
        self._file = open(path, "r+b")
        try:
            self._records = _records(self._file)
        except BaseException:
            self._file.close()
            raise

    def append(self, name: str, tensor: torch.Tensor) -> None:
        """`tensor`'s bytes after those already written of record `name` (a block of rows of
        an ID table, or a dense weight whole)."""
        record = self._records[name]
        if tensor.dtype != record.dtype or tensor.dim() != len(record.shape) \
                or tuple(tensor.shape[1:]) != record.shape[1:]:
            raise ValueError(f"{name}: a block of {tensor.dtype} {tuple(tensor.shape)} for a "
                             f"tensor of {record.dtype} {record.shape}")
        data = tensor_bytes(tensor.contiguous())
        if record.written + len(data) > record.nbytes:
            raise ValueError(f"{name}: {record.written + len(data)} bytes written to a tensor "
                             f"of {record.nbytes}")
        _write_at(self._file.fileno(), data, record.offset + record.written)
        record.crc = zlib.crc32(data, record.crc)
        record.written += len(data)

    def close(self) -> None:
        """Every record whole, its CRC in the zip's headers."""
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

    def __enter__(self) -> ModelFileWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None:
            self.close()
        else:
            self._file.close()  # the caller drops the folder of a file left incomplete


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
        names, extras, comments = struct.unpack("<HHH", head[28:34])
        if head[:4] != _CENTRAL_HEADER:
            raise CorruptFileError(f"model file: no directory entry for {entry.filename}")
        local = os.pread(file.fileno(), 30, entry.header_offset)
        flags, = struct.unpack("<H", local[6:8])
        data = entry.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
        after = data + entry.file_size
        if local[:4] != _LOCAL_HEADER or flags & _HAS_DESCRIPTOR and \
                os.pread(file.fileno(), 4, after) != _DESCRIPTOR:
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
