"""`bc-ray publish` on the command line: JSON output, one-line errors, the refused refresh, and
the README's command matching the options the CLI takes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import typer
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.publish.config import PublishConfig
from bc_ray.train.config import GateConfig
from tests.conftest import REPO
from tests.publish.conftest import current, embedding_table, put_parquet, write_rotated


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args], capture_output=True,
                          text=True, cwd=REPO)


def test_publish_prints_its_outcome_and_refresh_then_refuses(chain_store, tmp_path):
    store, uri = chain_store
    users, items = write_rotated(f"file://{tmp_path}/ext", current(uri), np.random.default_rng(1))
    result = CliRunner().invoke(app, ["publish", "--store", uri, "--users", users, "--items",
                                      items, "--method", "post-lowrank", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["version"] == 1 and summary["status"] == "published"
    assert summary["method"] == "post-lowrank" and summary["overlap"] == {"user": 300,
                                                                          "item": 300}
    refused = _cli("refresh", "--store", uri)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: version 1 was published from embeddings made elsewhere (`bc-ray publish`): it "
        "has no model to refresh with; publish its next embeddings with `bc-ray publish`"]


def test_bad_input_is_one_line_on_stderr(chain_store, tmp_path):
    store, uri = chain_store
    ids, matrix = current(uri)["user"]
    matrix[0, 0] = np.inf
    users = put_parquet(f"file://{tmp_path}/users.parquet", embedding_table(ids, matrix))
    items = put_parquet(f"file://{tmp_path}/items.parquet",
                        embedding_table(*current(uri)["item"]))
    seq = store.state().seq
    result = _cli("publish", "--store", uri, "--users", users, "--items", items)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --users: 1 embeddings hold NaN or infinity (first at row 0")
    assert store.state().seq == seq


def test_the_gate_default_is_training_s():
    assert PublishConfig(store="s", users="u", items="i").max_align_error_rel == \
        GateConfig().max_align_error_rel


def test_the_readme_commands_match_the_cli():
    """Every option the README's "Embeddings made elsewhere" block shows exists, and every
    option of `bc-ray publish` is shown there."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Embeddings made elsewhere", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    publish_line, scheduler_line = block.split("bc-ray scheduler run")
    helps = {}
    for name, words in (("publish", ["publish"]), ("scheduler", ["scheduler", "run"])):
        command = typer.main.get_command(app)
        for word in words:
            command = command.commands[word]
        helps[name] = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    shown = set(re.findall(r"--[a-z][a-z-]+", publish_line))
    assert shown <= helps["publish"], shown - helps["publish"]
    assert helps["publish"] - {"--help", "--fail-on-reject"} <= shown
    assert set(re.findall(r"--[a-z][a-z-]+", scheduler_line)) - {"--method"} <= \
        helps["scheduler"]
