"""Nothing wrong is ever read: every read path checks what the log recorded (issue 14, items 1, 2,
7 and 14). The bit-flip sweeps are property tests over byte offsets of a real table file."""

from __future__ import annotations

import os

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bc_ray import read_embeddings, scan_embeddings
from bc_ray.exceptions import CorruptFileError, StoreError
from bc_ray.serve.state import ServingState
from bc_ray.store.log import entry_path
from bc_ray.store.maintenance import apply_retention
from bc_ray.store.store import Store
from tests.helpers import store_with_chain


@pytest.fixture(scope="module")
def flip_store(tmp_path_factory):
    """Two versions (dims 8 -> 6), 100 rows per table; the ver-1 item file is the one damaged."""
    uri = f"file://{tmp_path_factory.mktemp('flip')}/store"
    store, _ = store_with_chain(uri, [8, 6], rows=100)
    path = store.io.path(store.state().table(1, "item").files[0].path)
    with open(path, "rb") as handle:
        original = handle.read()
    expected = {"read": read_embeddings(uri, "item", version=0),
                "scan": scan_embeddings(uri, "item", version=0).collect()}
    return uri, path, original, expected


READERS = {
    "read": lambda uri: read_embeddings(uri, "item", version=0),
    "scan": lambda uri: scan_embeddings(uri, "item", version=0).collect(),
    "serve": lambda uri: ServingState.load(Store(uri)),
}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0.0, 1.0, exclude_max=True), bit=st.integers(0, 7),
       reader=st.sampled_from(sorted(READERS)))
def test_every_bit_flip_is_harmless_or_a_named_corruption(flip_store, position, bit, reader):
    uri, path, original, expected = flip_store
    offset = int(position * len(original))
    damaged = bytearray(original)
    damaged[offset] ^= 1 << bit
    with open(path, "wb") as handle:
        handle.write(bytes(damaged))
    try:
        result = READERS[reader](uri)
    except CorruptFileError as exc:
        assert path in str(exc) or "rows" in str(exc)
    else:  # a flip nothing can see must change nothing
        if reader == "serve":
            assert len(result.tables["item"].ids) == 100
        else:
            assert result.equals(expected[reader])
    finally:
        with open(path, "wb") as handle:
            handle.write(original)


def test_a_row_count_the_log_does_not_record_is_refused_even_unverified(tmp_path):
    """A whole, self-consistent file with the wrong rows (replaced, not damaged): the row count
    is checked even when the caller opts out of the sha256."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=100)
    record = store.state().table(0, "item").files[0]
    path = store.io.path(record.path)
    pl.read_parquet(path).head(36).write_parquet(path)
    with pytest.raises(CorruptFileError):
        read_embeddings(uri, "item", verify=False)
    with pytest.raises(CorruptFileError):
        scan_embeddings(uri, "item", verify=False).collect()


def test_a_damaged_footer_is_a_corrupt_file_error_everywhere(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8, 6], rows=40)
    path = store.io.path(store.state().table(1, "user").files[0].path)
    data = bytearray(open(path, "rb").read())
    data[-12:-8] = b"\xff\xff\xff\x7f"  # footer length
    open(path, "wb").write(bytes(data))
    for verify in (True, False):
        with pytest.raises(CorruptFileError):
            read_embeddings(uri, "user", version=0, verify=verify)
        with pytest.raises(CorruptFileError):
            scan_embeddings(uri, "user", version=0, verify=verify)


def _append_entry(store: Store, actions) -> None:
    seq = store.state().seq + 1
    store.io.create(entry_path(seq), orjson.dumps({"format": 1, "seq": seq, "writer": "hostile",
                                                   "committed_at": "2026-01-01T00:00:00+00:00",
                                                   "actions": actions}))


@pytest.mark.parametrize("path", ["../victim.txt", "/etc/passwd", "embeddings/../../victim.txt",
                                  "s3://other-bucket/x", ""])
def test_log_paths_outside_the_root_are_rejected_as_corrupt(tmp_path, path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=10)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    table = store.state().table(0, "item")
    _append_entry(store, [{"type": "refresh.published", "version": 0, "entity": "item",
                           "refresh_id": "x", "files": [{"path": path, "size": 7, "sha256": "0"}],
                           "rows": 10, "dim": 8, "refreshed_at": table.refreshed_at,
                           "snapshot_id": "s", "cutoff": 1.0, "mode": "full"}])
    with pytest.raises(StoreError, match="outside the store"):
        store.state()
    with pytest.raises(StoreError):
        apply_retention(store)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("entry", [b"{}", b"[]", b'{"actions": [{}]}', b'{"actions": 3}',
                                   b'{"actions": [{"type": "refresh.published"}]}',
                                   b'{"actions": [{"type": "version.published", "version": 9}]}'])
def test_malformed_log_entries_are_store_errors_not_tracebacks(tmp_path, entry):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=10)
    store.io.create(entry_path(store.state().seq + 1), entry)
    with pytest.raises(StoreError, match="log entry"):
        store.state()


def test_cli_export_of_a_damaged_table_is_one_line_and_exit_1(tmp_path):
    import subprocess
    import sys

    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=40)
    path = store.io.path(store.state().table(0, "item").files[0].path)
    data = bytearray(open(path, "rb").read())
    data[-12:-8] = b"\xff\xff\xff\x7f"
    open(path, "wb").write(bytes(data))
    out = tmp_path / "x.parquet"
    done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "export", "--store", uri,
                           "--out", str(out), "--version", "0"], capture_output=True, text=True,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "sha256" in done.stderr
    assert not out.exists()

