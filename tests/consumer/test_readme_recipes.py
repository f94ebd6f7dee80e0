"""The README's consumer recipes (issue 25, item 17) run as written: the `bc-ray export`
commands, the DuckDB queries over the Parquet exports (FLOAT[] there: `array_cosine_similarity`
needs the cast to FLOAT[D], `list_cosine_similarity` does not) and the polars join, on a real
store whose version 0 is a transformed view. Their scores equal numpy's on the same vectors."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from bc_ray import read_embeddings
from tests.helpers import store_with_chain

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = "s3://my-bucket/bc-ray"
SECTION = "### Recipes: scoring users against items"


def recipe_blocks() -> dict[str, list[str]]:
    """The fenced blocks of the README's recipes section, by language."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, "the README lost its consumer recipes"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))


def matrix(frame: pl.DataFrame) -> np.ndarray:
    return np.array(frame["embedding"].to_list(), dtype=np.float32)


@pytest.fixture
def recipe_store(tmp_path, monkeypatch):
    """A store whose version 0 (dimension 64, as the recipes cast) is served through the chain
    from version 1, the README's commands run in a scratch folder, and candidate pairs there."""
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [64, 24], rows=40)
    monkeypatch.chdir(tmp_path)
    pair = np.random.default_rng(3).choice(40 * 40, size=25, replace=False)  # distinct pairs
    pl.DataFrame({"user_id": pair // 40, "item_id": 10_000 + pair % 40}).write_parquet(
        "candidates.parquet")
    return uri


def run_export_commands(block: str, uri: str) -> None:
    for line in block.strip().splitlines():
        words = shlex.split(line.replace(PLACEHOLDER, uri))
        assert words[0] == "bc-ray", line
        done = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *words[1:]],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout + done.stderr


def test_duckdb_and_polars_recipes_score_like_numpy(recipe_store):
    uri = recipe_store
    blocks = recipe_blocks()
    users, items = read_embeddings(uri, "user", version=0), read_embeddings(uri, "item", version=0)
    assert users["source_version"].unique().to_list() == [1]  # a transformed view
    scores = cosine(matrix(users), matrix(items))
    user_row = {u: n for n, u in enumerate(users["id"].to_list())}
    item_row = {i: n for n, i in enumerate(items["id"].to_list())}

    (export,) = blocks["bash"]
    run_export_commands(export, uri)
    assert duckdb.sql("DESCRIBE SELECT embedding FROM 'items-v0.parquet'").fetchall()[0][1] \
        == "FLOAT[]"
    top, pairs = blocks["sql"]
    with pytest.raises(duckdb.BinderException, match="array_cosine_similarity"):
        duckdb.sql(top.replace("::FLOAT[64]", ""))  # the cast the README explains is needed
    best = duckdb.sql(top).pl()
    for user, rows in best.group_by("user_id"):
        expected = np.sort(scores[user_row[user[0]]])[::-1][:10]
        assert np.allclose(rows["score"].to_numpy(), expected, atol=1e-5)
        assert rows["score"].to_list() == sorted(rows["score"].to_list(), reverse=True)
    assert best["user_id"].n_unique() == 40 and best.height == 400

    candidates = pl.read_parquet("candidates.parquet")
    expected = np.array([scores[user_row[u], item_row[i]] for u, i in candidates.iter_rows()])
    in_duckdb = duckdb.sql(pairs).pl()
    namespace: dict = {}
    exec(blocks["python"][0].replace(PLACEHOLDER, uri), namespace)  # noqa: S102 - the recipe
    in_polars = namespace["scored"]
    for got in (in_duckdb, in_polars):
        assert got.columns == ["user_id", "item_id", "score"]
        got = candidates.join(got, on=["user_id", "item_id"], how="left", maintain_order="left")
        assert got["score"].null_count() == 0
        assert np.allclose(got["score"].to_numpy(), expected, atol=1e-5)
