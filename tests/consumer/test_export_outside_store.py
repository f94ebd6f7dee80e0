"""`bc-ray export --out` (issue 25, items 14 and 20): an export inside the store overwrote the
store's own Delta table; an export onto an existing folder was a traceback that left a full
`<out>.<uuid>.tmp` behind each time. Every spelling of a place inside (or around) the store is
refused, so is a Parquet file onto a folder and a Delta table onto a file or a foreign folder:
one clear line, nothing read or written, the store and the folder untouched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bc_ray import export_delta, export_embeddings
from bc_ray.exceptions import ConfigError
from bc_ray.io import FileIO
from tests.helpers import store_with_chain


def files_of(uri: str) -> dict[str, int]:
    """Every file under `uri` with its size (the store's full content, data and logs)."""
    io = FileIO(uri)
    found = io.fs.find(io.path(), detail=True)
    return {path: int(info.get("size") or 0) for path, info in found.items()}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)


def spellings(store_uri: str, tmp_path) -> tuple[list[str], list[str]]:
    """(the store itself and places under it, each spelt differently; places holding it)."""
    if store_uri.startswith("s3://"):
        bucket = store_uri.removeprefix("s3://").split("/")[0]
        return ([store_uri, f"{store_uri}/", f"{store_uri}//", f"s3://{bucket}//store/exports",
                 f"s3://{bucket}/elsewhere/../store/_delta_log/..", f"{store_uri}/embeddings"],
                [f"s3://{bucket}", f"s3://{bucket}/"])
    root = store_uri.removeprefix("file://")
    link = tmp_path / "link-to-store"
    link.symlink_to(root, target_is_directory=True)
    return ([store_uri, f"{store_uri}/", root, f"{root}//", f"file://{tmp_path}/other/../store",
             str(link), f"file://{link}/exports", f"{root}/embeddings/exports",
             f"{tmp_path}/other/../store/./versions"],
            [str(tmp_path), f"file://{tmp_path}/", f"file://{tmp_path}/link-to-store/.."])


def test_no_export_lands_inside_or_around_the_store(store_uri, tmp_path):
    store_with_chain(store_uri, [8, 6], rows=20)
    before = files_of(store_uri)
    inside, around = spellings(store_uri, tmp_path)
    for out in inside + around:
        with pytest.raises(ConfigError, match="(inside|holds) the store"):
            export_delta(store_uri, out, version=0)
    for out in inside:
        for parquet in (out, out.rstrip("/") + "/items-v0.parquet"):
            with pytest.raises(ConfigError, match="inside the store"):
                export_embeddings(store_uri, parquet, "item", version=0)
    assert files_of(store_uri) == before
    sibling = f"{store_uri}-exports"  # its name starts like the store's: not inside
    assert export_delta(store_uri, sibling, version=0) == {"user": 20, "item": 20}
    assert export_embeddings(store_uri, f"{sibling}.parquet", "item", version=0) == 20
    assert files_of(store_uri) == before


def test_cli_refuses_the_store_root_in_one_line(tmp_path):
    store_uri = f"file://{tmp_path}/store"
    store_with_chain(store_uri, [8, 6], rows=20)
    before = files_of(store_uri)
    for fmt, out in (("delta", f"{tmp_path}/store/"), ("parquet", f"{store_uri}/v0.parquet")):
        done = cli("export", "--store", store_uri, "--format", fmt, "--version", "0", "--out", out)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().count("\n") == 0 and "inside the store" in done.stderr
    assert files_of(store_uri) == before


def test_a_parquet_export_onto_a_folder_is_one_line_and_leaves_nothing(tmp_path):
    store_uri = f"file://{tmp_path}/store"
    store_with_chain(store_uri, [8, 6], rows=20)
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    for _ in range(2):
        done = cli("export", "--store", store_uri, "--out", str(folder))
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().count("\n") == 0 and "names a folder" in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "store"]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    with pytest.raises(ConfigError, match="cannot write --out"):
        export_embeddings(store_uri, str(blocked / "items.parquet"), "item")
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_an_export_onto_the_wrong_kind_of_place_is_refused(store_uri, tmp_path):
    store_with_chain(store_uri, [8, 6], rows=20)
    base = (f"{store_uri}-elsewhere" if store_uri.startswith("s3://")
            else f"file://{tmp_path}/elsewhere")
    io = FileIO(base)
    io.write_bytes("items.parquet", b"not a table")
    io.write_bytes("folder/notes.txt", b"kept")
    with pytest.raises(ConfigError, match="is a file"):
        export_delta(store_uri, f"{base}/items.parquet", version=0)
    with pytest.raises(ConfigError, match="not a Delta table"):
        export_delta(store_uri, f"{base}/folder", version=0)
    with pytest.raises(ConfigError, match="names a folder"):  # a Parquet file onto it neither
        export_embeddings(store_uri, f"{base}/folder/", "item", version=0)
    with pytest.raises(ConfigError, match="names a folder"):  # nor onto a new one's spelling
        export_embeddings(store_uri, f"{base}/new-folder/", "item", version=0)
    assert not io.exists("new-folder")
    assert io.list_dir("folder") == ["notes.txt"]
    assert io.read_bytes("items.parquet") == b"not a table"
    for _ in range(2):  # a new folder, then the folder of that earlier export: both fine
        assert export_delta(store_uri, f"{base}/v0-delta", version=0) == {"user": 20, "item": 20}
