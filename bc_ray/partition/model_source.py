"""Where Ray tasks read a GraphSAGE model file of the store: mapped, in parts (each process its
dense weights and its own span of each ID table) or whole. The partitioned refresh's input
stage reads the version it refreshes through it, a sharded bump's workers M_{k-1}.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal

import torch

from bc_ray.io import FileIO, StorageOptions
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.model_file import EDGE_BYTES, ModelFile, Spans, reads_offsets
from bc_ray.models.graphsage.serialization import model_from_bytes, model_from_file
from bc_ray.store.state import FileRecord, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.versions import model_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Where the input stage's tasks and a sharded bump's workers read a model: on a local
    store, the file itself, mapped (a process touches only the ID rows it looks up); elsewhere
    the file where it lies, each process reading its dense weights and the span of each ID table
    it was given (`ModelFile`: ranged reads), or, with a torch that cannot, all of it. The
    driver checked the file's sha256 by streaming it and reads only the dense weights (all of
    the file too where the readers load it whole)."""

    store_uri: str
    options: StorageOptions | None
    path: str  # the file, relative to the store
    mode: Literal["mapped", "parts", "whole"]
    dense_bytes: int = 0  # what a reader in parts holds besides its ID rows
    id_row_bytes: int = 0
    file_bytes: int = 0

    @classmethod
    def of(cls, store: Store, version: VersionRecord) -> ModelSource:
        return cls.of_file(store, model_record(version))

    @classmethod
    def of_file(cls, store: Store, record: FileRecord) -> ModelSource:
        """The driver's side: the file checked (streamed) and, to read it in parts, its
        directory read."""
        store.verify(record)
        source = cls(store.io.uri, store.io.options, record.path, "mapped",
                     file_bytes=record.size)
        if store.io.scheme == "file":
            return source
        if not reads_offsets():
            logger.warning("torch %s cannot read a file in parts (torch.load onto \"meta\" "
                           "says nowhere where a tensor lies): the driver and each task load "
                           "the model whole",
                           torch.__version__)
            return replace(source, mode="whole")
        with source._open() as handle:
            stored = ModelFile(handle)
            return replace(source, mode="parts", dense_bytes=stored.dense_bytes,
                           id_row_bytes=stored.id_row_bytes())

    def holds(self, rows: int) -> int:
        """What a process that reads `rows` ID rows holds of the model: the file's two ends,
        the dense weights and the rows read in parts; twice the file loaded whole; nothing of
        its own where it is mapped (the pages are the node's)."""
        if self.mode == "parts":
            return 2 * EDGE_BYTES + self.dense_bytes + rows * self.id_row_bytes
        return 2 * self.file_bytes if self.mode == "whole" else 0

    def load(self, spans: Spans | None = None) -> EmbeddingModel:
        """The inference model, able to look up the ID rows of `spans` (entity indices; None:
        its dense weights alone, where the file is read in parts)."""
        if self.mode == "mapped":
            return model_from_file(self._files.path(self.path))
        if self.mode == "whole":
            return model_from_bytes(self._files.read_bytes(self.path), light=True)
        with self._open() as handle:
            return ModelFile(handle).model(spans)

    @property
    def _files(self) -> FileIO:
        return FileIO(self.store_uri, self.options)

    def _open(self) -> BinaryIO:
        """The file for ranged reads through pyarrow's S3 client (which a refresh task has
        imported already; s3fs's start-up took longer than reading a range's rows)."""
        files = self._files
        return files.arrow_fs().open_input_file(files.path(self.path))
