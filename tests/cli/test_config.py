"""bc_ray.yaml (issue 17): found by --config or BC_RAY_CONFIG, the defaults of the options it
names (the command line still wins), validated with one clear line per problem, and shown merged
with the source of every value by `bc-ray config show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import typer
import yaml

from bc_ray.cli import config_file
from bc_ray.cli.main import app
from bc_ray.store.store import RetentionPolicy
from tests.helpers import store_with_chain


def _bc_ray(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("BC_RAY_STORE", "BC_RAY_CONFIG", "BC_RAY_KEEP_VERSIONS",
                          "BC_RAY_GRACE_SECONDS", "BC_RAY_S3_ENDPOINT")}
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args],
                          capture_output=True, text=True, env={**clean, **(env or {})})


def test_the_file_sets_defaults_the_command_line_overrides(tmp_path):
    configured, _ = store_with_chain(f"file://{tmp_path}/configured", [8, 6], rows=5)
    other, _ = store_with_chain(f"file://{tmp_path}/other", [8], rows=5)
    path = tmp_path / "bc_ray.yaml"
    path.write_text(yaml.safe_dump({
        "store": configured.io.uri, "retention": {"keep_versions": 3},
        "s3": {"endpoint_url": "http://127.0.0.1:9"},
        "scheduler": {"refresh_cron": "30 1 * * *", "train_args": ["--method", "bc-aligner"],
                      "landing": {"edges": "s3://b/landing/", "user_col": "u",
                                  "item_col": "i", "time_col": "t"}},
        "commands": {"train": {"num_workers": 2}}}))
    listed = _bc_ray("--config", str(path), "versions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)] == [0, 1]
    overridden = _bc_ray("--config", str(path), "versions", "--json", "--store", other.io.uri)
    assert [v["version"] for v in json.loads(overridden.stdout)] == [0]
    configured.configure(RetentionPolicy(keep_versions=1, staging_grace_seconds=0))
    shown = _bc_ray("config", "show", "--json", env={"BC_RAY_CONFIG": str(path),
                                                     "AWS_REGION": "eu-west-1"})
    assert shown.returncode == 0, shown.stderr
    rows = {r["setting"]: r for r in json.loads(shown.stdout)}
    assert rows["store"] == {"setting": "store", "value": configured.io.uri,
                             "source": f"file {path}"}
    assert rows["retention.keep_versions"]["value"] == "3"
    # the store records its own policy, which wins over the file's: shown as the one in effect
    recorded = configured.state().retention
    assert rows["store retention.keep_versions"]["value"] == recorded.keep_versions == 1
    assert "in effect" in rows["store retention.keep_versions"]["source"]
    assert rows["s3.region"] == {"setting": "s3.region", "value": "eu-west-1",
                                 "source": "env AWS_REGION"}
    assert rows["scheduler.refresh_cron"]["value"] == "30 1 * * *"

    loaded = config_file.apply(str(path), typer.main.get_command(app), environ={})
    once = loaded.defaults[("scheduler", "once")]
    assert once["refresh_cron"] == "30 1 * * *" and once["landing"] == "s3://b/landing/"
    assert once["train_args"] == "--method bc-aligner" and once["user_col"] == "u"
    assert loaded.defaults[("train",)] == {"store": configured.io.uri, "num_workers": 2}


def test_a_bad_file_is_one_clear_line(tmp_path):
    cases = {"retention:\n  keep_versions: 0\n": "retention.keep_versions",
             "stores: file:///x\n": "stores",
             "commands:\n  train:\n    num_wrokers: 2\n": "no option 'num_wrokers'",
             "commands:\n  trian: {}\n": "no command 'trian'",
             "commands:\n  train:\n    num-workers: many\n":
                 "commands.train.num-workers: 'many': Input should be a valid integer",
             "commands:\n  publish:\n    fail-on-reject: maybe\n":
                 "commands.publish.fail-on-reject: 'maybe'",
             "store: [unclosed\n": "not valid YAML"}
    for text, named in cases.items():
        path = tmp_path / "bc_ray.yaml"
        path.write_text(text)
        result = _bc_ray("--config", str(path), "config", "show")
        assert result.returncode == 2, (text, result.stdout)
        assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
    missing = _bc_ray("config", "show", env={"BC_RAY_CONFIG": str(tmp_path / "absent.yaml")})
    assert missing.returncode == 2 and "cannot read the config file" in missing.stderr


def test_the_readme_example_is_a_valid_file(tmp_path):
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "bc_ray.yaml"
    path.write_text(example)
    loaded = config_file.apply(str(path), typer.main.get_command(app), environ={})
    assert loaded.defaults[("scheduler", "run")]["train_args"] == \
        "--method bc-aligner --num-workers 4 --use-gpu"
