"""`bc-ray data land`: one pass of landing-zone ingestion from a shell, without Ray (a backfill,
a plain cron), printing what it took, skipped, refused and found changed; and the landing
settings it shares with the scheduler in bc_ray.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import typer
import yaml

from bc_ray.cli import config_file
from bc_ray.cli.main import app

NO_RAY = ("import sys; sys.modules['ray'] = None; sys.argv[0] = 'bc-ray'; "
          "from bc_ray.cli.main import run; run()")


def _land(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a process where `import ray` fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BC_RAY_")}
    return subprocess.run([sys.executable, "-c", NO_RAY, "data", "land", *args],
                          capture_output=True, text=True, env=env)


def _part(folder, name: str, frame: pl.DataFrame, settled: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.write_parquet(path) if name.endswith(".parquet") else frame.write_csv(path)
    if settled:
        os.utime(path, (1_700_000_000, 1_700_000_000))


def _day(users: list, first_ts: int) -> pl.DataFrame:
    return pl.DataFrame({"uid": users, "sku": [f"i{k}" for k in range(len(users))],
                         "ts": [first_ts + k for k in range(len(users))]})


def test_one_pass_prints_taken_skipped_refused_and_changed(tmp_path):
    zone = tmp_path / "landing"
    _part(zone / "dt=2026-11-21", "part-0.csv", _day(["a", "b", "c"], 1_700_000_000))
    _part(zone / "dt=2026-11-22", "part-0.parquet", _day(["d", None], 1_700_100_000))
    _part(zone / "dt=2026-11-23", "part-0.parquet", _day(["e"], 1_700_200_000), settled=False)
    _part(zone / "dt=2026-11-24" / "_temporary" / "0", "part-0.parquet", _day(["f"], 1))
    store = f"file://{tmp_path}/store"
    options = ["--store", store, "--landing", str(zone), "--user-col", "uid", "--item-col",
               "sku", "--time-col", "ts"]

    text = _land(*options)
    assert text.returncode == 4, text.stderr  # a batch was refused
    assert text.stdout.splitlines()[0] == "taken 1, skipped 2, refused 1, changed 0"
    assert f"taken    {zone}/dt=2026-11-21: ingested" in text.stdout
    assert f"skipped  {zone}/dt=2026-11-23/part-0.parquet: unsettled" in text.stdout
    assert f"skipped  {zone}/dt=2026-11-24/_temporary: hidden" in text.stdout
    assert f"refused  {zone}/dt=2026-11-22: 1 of 2 rows have a null or empty id" in text.stdout

    _part(zone / "dt=2026-11-21", "part-0.csv", _day(["a", "b", "c", "g"], 1_700_000_000))
    os.utime(zone / "dt=2026-11-21" / "part-0.csv", (1_700_000_500, 1_700_000_500))
    report = json.loads(_land(*options, "--settle-seconds", "0", "--json").stdout)
    assert [t["batch"] for t in report["taken"]] == [f"{zone}/dt=2026-11-23"]
    assert [c["file"] for c in report["changed"]] == [f"{zone}/dt=2026-11-21/part-0.csv"]
    assert report["changed"][0]["command"].startswith(f"bc-ray data ingest --store {store} ")
    assert [r["batch"] for r in report["refused"]] == [f"{zone}/dt=2026-11-22"]
    assert report["skipped"] == [{"file": f"{zone}/dt=2026-11-24/_temporary",
                                  "reason": "hidden"}]


def test_require_success_marker_from_the_command_line(tmp_path):
    zone = tmp_path / "landing"
    _part(zone / "dt=2026-11-21", "part-0.parquet", _day(["a"], 1_700_000_000))
    options = ["--store", f"file://{tmp_path}/store", "--landing", str(zone), "--user-col",
               "uid", "--item-col", "sku", "--time-col", "ts", "--json"]
    waiting = json.loads(_land(*options, "--require-success-marker").stdout)
    assert waiting["taken"] == [] and waiting["skipped"][0]["reason"].startswith("no _SUCCESS")
    (zone / "dt=2026-11-21" / "_SUCCESS").write_bytes(b"")
    assert len(json.loads(_land(*options, "--require-success-marker").stdout)["taken"]) == 1


def test_bc_ray_yaml_landing_settings_reach_the_scheduler_and_data_land(tmp_path):
    path = tmp_path / "bc_ray.yaml"
    path.write_text(yaml.safe_dump({"scheduler": {"landing": {
        "edges": "s3://b/landing/", "user_col": "u", "item_col": "i", "time_col": "t",
        "require_success": True, "settle_seconds": 300}}}))
    loaded = config_file.apply(str(path), typer.main.get_command(app), environ={})
    for command in (("scheduler", "once"), ("scheduler", "run"), ("data", "land")):
        defaults = loaded.defaults[command]
        assert defaults["landing"] == "s3://b/landing/" and defaults["user_col"] == "u"
        assert defaults["require_success_marker"] is True and defaults["settle_seconds"] == 300
    path.write_text(yaml.safe_dump({"scheduler": {"landing": {
        "edges": "s3://b/landing/", "settle_seconds": float("inf")}}}))
    result = subprocess.run([sys.executable, "-m", "bc_ray.cli.main", "--config", str(path),
                             "config", "show"], capture_output=True, text=True)
    assert result.returncode == 2 and "settle_seconds" in result.stderr, result.stderr


def test_the_scheduler_takes_the_same_landing_options(tmp_path):
    from typer.testing import CliRunner

    help_text = CliRunner().invoke(app, ["scheduler", "once", "--help"],
                                   terminal_width=200).output
    assert "--require-success-marker" in help_text and "--settle-seconds" in help_text
    from bc_ray.cli.landing_options import landing_values
    from bc_ray.cli.scheduler_cmd import _config

    config = _config(f"file://{tmp_path}/store", "http://127.0.0.1:8265", None, None, "python",
                     None, None, None, 1, 1.0,
                     landing_values("s3://b/landing/", None, "u", "i", "t", None, None, None,
                                    True, 5.0))
    assert (config.landing.require_success, config.landing.settle_seconds) == (True, 5.0)
