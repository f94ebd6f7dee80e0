"""A model file read in parts: its dense weights whole and, of each ID table, one span of rows.

On a local store a process maps the model file (`model_from_file`) and touches only the ID rows
it looks up. A file on object storage cannot be mapped, and loading its bytes would hold every
ID table (`4 d N` bytes: 2.8 GB at 100M interactions) in each refresh input task and each
sharded training worker. Here the file is read where it lies instead: torch reads only its
directory and pickle (`map_location="meta"`, which records where each tensor's bytes start),
then each dense tensor is read whole and each ID table's span by one ranged read (an HTTP range
request on S3). An older torch reads every tensor's bytes to load a file onto "meta" and says
nowhere where they lie (`reads_offsets`): its readers load the file whole (`ModelSource`).
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from functools import cache
from typing import BinaryIO

import torch
from torch import nn

from bc_ray.exceptions import CorruptFileError
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.serialization import model_of_payload

ID_TABLES = "ids."
EDGE_BYTES = 1 << 20  # what `EdgeCached` keeps of each end of the file
Spans = dict[str, tuple[int, int]]  # entity -> (first, last) entity indices a process reads


class EdgeCached(io.RawIOBase):
    """A file whose first and last `edge` bytes are read once each. torch reads a model file's
    directory and small records (its pickle, format, byte order) in about twenty small reads at
    the file's two ends, each one an HTTP request on S3; the tensors' bytes lie between them
    and are read through."""

    def __init__(self, handle: BinaryIO, edge: int = EDGE_BYTES) -> None:
        super().__init__()
        self.handle, self.position = handle, 0
        self.size = handle.seek(0, io.SEEK_END)
        head = min(edge, self.size)
        tail = max(head, self.size - edge)
        self.head, self.tail_start = _read_exactly(handle, 0, head), tail
        self.tail = _read_exactly(handle, tail, self.size - tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: bytearray | memoryview) -> int:
        start = self.position
        size = max(0, min(len(buffer), self.size - start))
        if start + size <= len(self.head):
            buffer[:size] = self.head[start:start + size]
        elif start >= self.tail_start:
            buffer[:size] = self.tail[start - self.tail_start:start - self.tail_start + size]
        else:
            self.handle.seek(start)
            size = self.handle.readinto(memoryview(buffer)[:size])
        self.position += size
        return size


def _read_into(handle: BinaryIO, offset: int, view: memoryview) -> None:
    handle.seek(offset)
    done = 0
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            raise CorruptFileError(f"model file ends at byte {offset + done}, "
                                   f"{offset + len(view)} expected: truncated")
        done += got


def _read_exactly(handle: BinaryIO, offset: int, size: int) -> bytearray:
    data = bytearray(size)
    _read_into(handle, offset, memoryview(data))
    return data


@cache
def reads_offsets() -> bool:
    """Whether this torch loads a file onto "meta" without reading its tensors' bytes and says
    where they lie (`_checkpoint_offset`), which reading in parts needs."""
    buffer = io.BytesIO()
    torch.save({"probe": torch.zeros(2)}, buffer)
    buffer.seek(0)
    meta = torch.load(buffer, map_location="meta", weights_only=True)["probe"]
    return getattr(meta.untyped_storage(), "_checkpoint_offset", None) is not None


@dataclass(frozen=True)
class StoredTensor:
    """A tensor of the file: where its bytes start, its shape and type (row-major)."""

    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, name: str, meta: object) -> StoredTensor:
        start = getattr(meta.untyped_storage(), "_checkpoint_offset", None) \
            if isinstance(meta, torch.Tensor) else None
        if start is None or not meta.is_contiguous():
            raise CorruptFileError(f"model file: {name} is not a tensor that can be read in "
                                   "parts (written by torch.save's zip format, contiguous)")
        return cls(start + meta.storage_offset() * meta.element_size(), tuple(meta.shape),
                   meta.dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def read(self, handle: BinaryIO) -> torch.Tensor:
        """The whole tensor."""
        out = torch.empty(self.shape, dtype=self.dtype)
        if self.nbytes:
            _read_into(handle, self.offset, tensor_bytes(out))
        return out

    def read_rows(self, handle: BinaryIO, first: int, last: int, out: torch.Tensor) -> None:
        """Rows `first..last-1` into `out` (contiguous, of their shape): no copy in between."""
        if not 0 <= first <= last <= self.shape[0] or out.shape != (last - first,
                                                                    *self.shape[1:]):
            raise ValueError(f"rows {first}..{last - 1} of a tensor of {self.shape[0]} into "
                             f"{tuple(out.shape)}")
        if last > first and self.row_bytes:
            _read_into(handle, self.offset + first * self.row_bytes, tensor_bytes(out))


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A contiguous tensor's memory, as bytes (to read into, or to write out)."""
    if not tensor.is_contiguous():
        raise ValueError("reading into a tensor that is not contiguous")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class SpanTable(nn.Module):
    """An ID table of which rows `first..first + len - 1` are held, then its padding row (the
    last of `held`). It looks rows up as the whole `nn.Embedding` does and refuses any other
    row: a process reads only the rows of the entities it was given."""

    def __init__(self, held: torch.Tensor, first: int, num_embeddings: int) -> None:
        super().__init__()
        self.first, self.num_embeddings = first, num_embeddings
        self.register_buffer("held", held, persistent=False)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        local = index - self.first
        count = len(self)
        padding = index == self.num_embeddings - 1
        inside = (local >= 0) & (local < count)
        if not bool((inside | padding).all()):
            outside = index[~(inside | padding)]
            raise ValueError(f"ID rows {int(outside.min())}..{int(outside.max())} read from a "
                             f"table holding rows {self.first}..{self.first + count - 1}")
        return self.held.index_select(0, torch.where(padding, count, local))

    def rows_between(self, first: int, last: int) -> torch.Tensor:
        """Rows `first..last-1` of the table, all within the span held."""
        if last <= first:
            return self.held[:0]
        if not (self.first <= first and last <= self.first + len(self)):
            raise ValueError(f"ID rows {first}..{last - 1} read from a table holding rows "
                             f"{self.first}..{self.first + len(self) - 1}")
        return self.held[first - self.first:last - self.first]

    def __len__(self) -> int:
        return self.held.shape[0] - 1


def stored_rows(table: nn.Module, first: int, last: int) -> torch.Tensor:
    """Rows `first..last-1` of an ID table, whole (`nn.Embedding`) or a span (`SpanTable`)."""
    if isinstance(table, SpanTable):
        return table.rows_between(first, last)
    return table.weight[first:last]


PAYLOAD_KEYS = ("spec", "num_users", "num_items", "user_vocab", "item_vocab", "state")


class ModelFile:
    """A model file open for ranged reads: its payload without the tensors' bytes, and where
    each tensor lies."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle = EdgeCached(handle)
        try:
            self.payload = torch.load(handle, map_location="meta", weights_only=True)
        except (RuntimeError, ValueError, EOFError, AssertionError,
                pickle.UnpicklingError) as exc:
            raise CorruptFileError(f"model file cannot be read: {exc}") from exc
        if not (isinstance(self.payload, dict) and all(k in self.payload for k in PAYLOAD_KEYS)
                and isinstance(self.payload["state"], dict)):
            raise CorruptFileError("model file holds no bc_ray model (a dict of "
                                   f"{', '.join(PAYLOAD_KEYS)})")
        self.tensors = {name: StoredTensor.of(name, meta)
                        for name, meta in self.payload["state"].items()}

    @property
    def dense_bytes(self) -> int:
        """What the weights besides the ID tables take: what every reader holds."""
        return sum(t.nbytes for name, t in self.tensors.items()
                   if not name.startswith(ID_TABLES))

    def id_row_bytes(self) -> int:
        """Bytes of one ID row (0 for a model without ID tables)."""
        tables = [t for name, t in self.tensors.items() if name.startswith(ID_TABLES)]
        return max((t.row_bytes for t in tables), default=0)

    def model(self, spans: Spans | None) -> EmbeddingModel:
        """The inference model with, of each ID table, only the rows of `spans[entity]`
        (entity indices; rows past the table read as its padding row, as a lookup does);
        without ID tables for `spans=None` (a reader of the dense weights alone)."""
        dense = {name: tensor.read(self.handle) for name, tensor in self.tensors.items()
                 if not name.startswith(ID_TABLES)}
        model = model_of_payload({**self.payload, "state": dense}, light=True, id_tables=False)
        if model.spec.id_embeddings and spans is not None:
            model.ids = nn.ModuleDict({entity: self._span(entity, *spans[entity])
                                       for entity in ("user", "item")})
        return model

    def _span(self, entity: str, first: int, last: int) -> SpanTable:
        """The table's rows `first..last-1` that it has, and its padding row, read into one
        matrix."""
        table = self.tensors[f"{ID_TABLES}{entity}.weight"]
        pad = table.shape[0] - 1
        start, stop = min(first, pad), max(min(first, pad), min(last, pad))
        held = torch.empty((stop - start + 1, *table.shape[1:]), dtype=table.dtype)
        table.read_rows(self.handle, start, stop, held[:-1])
        table.read_rows(self.handle, pad, pad + 1, held[-1:])
        return SpanTable(held, start, table.shape[0])
