"""Embedding tables as a team's own pipeline would write them, and stores to publish them into."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bc_ray import read_embeddings
from bc_ray.io import FileIO
from tests.helpers import store_with_chain

DIM = 16


def put_parquet(uri: str, table: pa.Table) -> str:
    """Write `table` to a local path or an s3:// URI, as an outside pipeline would."""
    location = FileIO(uri)
    with location.fs.open(location.root, "wb") as handle:
        pq.write_table(table, handle)
    return uri


def embedding_table(ids, matrix: np.ndarray, *, id_col: str = "id",
                    embedding_col: str = "embedding", fixed: bool = False) -> pa.Table:
    """ids and vectors as a list (or fixed-size list) of floats per row."""
    if fixed:
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)),
                                                    matrix.shape[1])
    else:
        vectors = pa.array(list(matrix))
    return pa.table({id_col: pa.array(ids), embedding_col: vectors})


def rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def current(uri: str, version: int | None = None, prefer_stored: bool = True
            ) -> dict[str, tuple[list, np.ndarray]]:
    """(ids, matrix) of each entity's table as consumers read it, sorted by id."""
    out = {}
    for entity in ("user", "item"):
        frame = read_embeddings(uri, entity, version, prefer_stored=prefer_stored).sort("id")
        out[entity] = (frame["id"].to_list(), np.stack(frame["embedding"].to_numpy()))
    return out


def write_rotated(base: str, tables: dict[str, tuple[list, np.ndarray]],
                  rng: np.random.Generator, noise: float = 1e-4) -> tuple[str, str]:
    """A random rotation of `tables` plus N(0, noise^2) noise, as <base>/users and <base>/items
    folders; returns their URIs."""
    q = rotation(rng, tables["user"][1].shape[1])
    paths = []
    for entity in ("user", "item"):
        ids, matrix = tables[entity]
        new = (matrix @ q.T + rng.normal(scale=noise, size=matrix.shape)).astype(np.float32)
        paths.append(put_parquet(f"{base}/{entity}s/part-0.parquet", embedding_table(ids, new)))
    return paths[0].rsplit("/", 1)[0], paths[1].rsplit("/", 1)[0]


@pytest.fixture
def chain_store(tmp_path):
    """(store, uri): version 0 of dimension 16 with 300 users and 300 items refreshed."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [DIM], rows=300, keep_versions=2)
    return store, uri
