"""The consumer API: ver-j views equal the chain applied by hand; no Ray, no torch imported."""

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from bc_ray import export_embeddings, read_embeddings, scan_embeddings
from bc_ray import chain as chain_math
from bc_ray.exceptions import ConfigError, NotFoundError
from tests.helpers import store_with_chain


def test_ver_j_view_equals_the_chain_by_hand(store_uri):
    store, matrices = store_with_chain(store_uri, [12, 10, 8, 6], rows=64)
    state = store.state()
    transforms = {v: chain_math.transform_from_bytes(
                      store.get(state.versions[v].files["transform"]))
                  for v in (1, 2, 3)}
    z = matrices["item"]
    expected = {3: z}
    for target in (2, 1, 0):
        weight, bias = transforms[target + 1]
        expected[target] = expected[target + 1] @ weight.T + bias
    for target in (0, 1, 2, 3, None):
        frame = read_embeddings(store_uri, "item", version=target)
        got = np.stack(frame["embedding"].to_numpy())
        assert np.allclose(got, expected[3 if target is None else target], atol=1e-4)
        assert frame["id"].to_list() == list(range(10_000, 10_064))
        assert frame["source_version"].unique().to_list() == [3]
    assert frame.schema["embedding"] == pl.Array(pl.Float32, 6)


def test_scan_equals_read_and_export(store_uri, tmp_path):
    store_with_chain(store_uri, [8, 5], rows=30)
    eager = read_embeddings(store_uri, "user", version=0)
    lazy = scan_embeddings(store_uri, "user", version=0).collect()
    assert lazy.columns == eager.columns
    assert np.allclose(np.stack(lazy["embedding"].to_numpy()),
                       np.stack(eager["embedding"].to_numpy()))
    out = tmp_path / "out" / "users-v0.parquet"
    assert export_embeddings(store_uri, str(out), "user", version=0) == 30
    assert pl.read_parquet(out).shape == (30, 3)
    metadata = pq.read_schema(out).metadata  # the rows are in version 0's space
    assert metadata[b"bc_ray.version"] == b"0" and metadata[b"bc_ray.entity"] == b"user"
    assert pl.read_parquet(out)["source_version"].unique().to_list() == [1]


def test_a_store_path_with_glob_characters_is_read_as_a_path(tmp_path):
    uri = f"file://{tmp_path}/br[a]/store"
    store_with_chain(uri, [8, 5], rows=30)
    for version in (0, None):
        lazy = scan_embeddings(uri, "user", version=version).collect()
        assert lazy.equals(read_embeddings(uri, "user", version=version)) and lazy.height == 30


def test_clear_errors(store_uri):
    with pytest.raises(NotFoundError, match=f"no store at {store_uri}-typo"):
        read_embeddings(f"{store_uri}-typo", "item")
    store_with_chain(store_uri, [8, 5], rows=10)
    with pytest.raises(NotFoundError, match="version 7"):
        read_embeddings(store_uri, "item", version=7)
    with pytest.raises(ConfigError, match="entity"):
        read_embeddings(store_uri, "movie")
    for wrong in ("0", 0.0, True):  # a version typed as text (or a float, a flag) says so
        with pytest.raises(ConfigError, match=f"version must be an integer.*got {wrong!r}"):
            read_embeddings(store_uri, "item", version=wrong)
    assert read_embeddings(store_uri, "item", version=np.int64(0)).height == 10


def test_consumer_api_imports_neither_ray_nor_torch(tmp_path):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8, 5], rows=10)
    code = ("import sys, bc_ray; frame = bc_ray.read_embeddings(sys.argv[1], 'item', version=0); "
            "lazy = bc_ray.scan_embeddings(sys.argv[1], 'item').collect(); "
            "assert frame.height == 10 and lazy.height == 10; "
            "heavy = [m for m in ('torch', 'ray', 'torch_geometric') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stdout + result.stderr
