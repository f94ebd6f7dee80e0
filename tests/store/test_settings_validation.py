"""Issue 25 item 1: one retention value can never brick a store.

Non-finite, negative and boolean retention values are refused at every entry point (the CLI
option, bc_ray.yaml, the environment, the `RetentionPolicy` constructor, `gc --grace`) before
anything is committed, and the log itself refuses to put an entry that its own reader could not
read back and apply."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from bc_ray.exceptions import ConfigError, StoreError
from bc_ray.store.log import entry_path
from bc_ray.store.maintenance import apply_retention, collect_garbage
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_fake_version, refresh_fake_tables, store_with_chain

REPO = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items()
       if k not in ("BC_RAY_KEEP_VERSIONS", "BC_RAY_GRACE_SECONDS", "BC_RAY_CONFIG")}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bc_ray.cli.main", *args], cwd=REPO,
                          env={**ENV, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def assert_store_works(uri: str, seq: int) -> None:
    """Nothing was committed, and every later command still reads the store."""
    assert Store(uri).state().seq == seq
    shown = cli("store", "config", "--store", uri, "--json")
    assert shown.returncode == 0, shown.stderr
    assert cli("versions", "--store", uri).returncode == 0


@pytest.mark.parametrize("value", ["inf", "nan", "1e999", "-1", "-inf"])
def test_cli_refuses_a_grace_that_is_not_a_finite_number_of_seconds(tmp_path, value):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=5)
    seq = Store(uri).state().seq
    done = cli("store", "config", "--store", uri, f"--grace-seconds={value}")
    assert_one_line_error(done, "--grace-seconds")
    assert_store_works(uri, seq)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_cli_refuses_keeping_no_version(tmp_path, value):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=5)
    seq = Store(uri).state().seq
    assert_one_line_error(cli("store", "config", "--store", uri, f"--keep-versions={value}"),
                          "--keep-versions")
    assert_store_works(uri, seq)


@pytest.mark.parametrize("setting", ["grace_seconds: .inf", "grace_seconds: .nan",
                                     "grace_seconds: 1e999", "grace_seconds: -5",
                                     "grace_seconds: true", "keep_versions: true",
                                     "keep_versions: false"])
def test_the_config_file_refuses_non_finite_negative_and_boolean_retention(tmp_path, setting):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=5)
    seq = Store(uri).state().seq
    config = tmp_path / "bc_ray.yaml"
    config.write_text(f"store: {uri}\nretention: {{{setting}}}\n")
    done = cli("--config", str(config), "gc")
    assert_one_line_error(done, str(config), "retention." + setting.split(":")[0])
    assert_store_works(uri, seq)


@pytest.mark.parametrize("variable,value", [
    ("BC_RAY_GRACE_SECONDS", "1e999"), ("BC_RAY_GRACE_SECONDS", "nan"),
    ("BC_RAY_GRACE_SECONDS", "-inf"), ("BC_RAY_GRACE_SECONDS", "true"),
    ("BC_RAY_KEEP_VERSIONS", "true"), ("BC_RAY_KEEP_VERSIONS", "0")])
def test_the_environment_is_refused_before_a_writer_records_it(tmp_path, monkeypatch, variable,
                                                              value):
    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=5)
    seq = Store(uri).state().seq
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        apply_retention(Store(uri))  # the first writer records the environment's policy
    monkeypatch.delenv(variable)
    assert_store_works(uri, seq)
    assert_one_line_error(cli("gc", "--store", uri, env={variable: value}), variable)
    assert_store_works(uri, seq)


@pytest.mark.parametrize("fields", [
    {"keep_versions": True}, {"keep_versions": 1.5}, {"keep_versions": "2"},
    {"keep_versions": 0}, {"staging_grace_seconds": math.inf},
    {"staging_grace_seconds": math.nan}, {"staging_grace_seconds": -1.0},
    {"staging_grace_seconds": False}, {"staging_grace_seconds": "60"}])
def test_the_policy_refuses_what_a_reader_could_not_take_back(fields):
    with pytest.raises(ConfigError):
        RetentionPolicy(**fields)


def test_the_policy_takes_whole_seconds_as_seconds():
    policy = RetentionPolicy(keep_versions=3, staging_grace_seconds=60)
    assert policy.staging_grace_seconds == 60.0 and isinstance(policy.staging_grace_seconds,
                                                               float)


def _configured(grace) -> dict:
    return {"type": "store.configured", "keep_versions": 2, "staging_grace_seconds": grace,
            "source": "test", "at": datetime.now(timezone.utc).isoformat()}


@pytest.mark.parametrize("actions", [
    [_configured(math.inf)],                                 # JSON would hold null
    [_configured(None)],                                     # the fold cannot take it
    [{"type": "run.recorded", "run_id": "r", "metrics": {"loss": [1.0, math.nan]}}],
    [{"type": "run.recorded", "run_id": "r", "seen": {1, 2}}],  # not JSON at all
])
def test_the_log_never_puts_an_entry_its_reader_cannot_apply(store_uri, actions):
    store = Store(store_uri)
    store.commit(lambda _state: [_configured(60.0)])
    before = store.state()
    with pytest.raises(StoreError, match="refusing to commit"):
        store.commit(lambda _state: actions)
    assert not store.io.exists(entry_path(before.seq + 1))
    assert Store(store_uri).state().to_dict() == before.to_dict()


def test_a_nan_metric_names_where_it_is(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    action = {"type": "run.recorded", "run_id": "r", "metrics": {"loss": [1.0, math.nan]}}
    with pytest.raises(StoreError, match=r"actions\[0\]\.metrics\.loss\[1\]"):
        store.commit(lambda _state: [action])


def test_gc_refuses_a_grace_that_is_not_a_number(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=5)
    store.io.write_bytes("embeddings/v0/item/in-flight/part-00000.parquet", b"a running writer")
    for grace in (math.nan, -1.0, math.inf):
        with pytest.raises(ConfigError, match="grace"):
            collect_garbage(store, grace_seconds=grace, force=True)
    assert store.io.exists("embeddings/v0/item/in-flight/part-00000.parquet")
    assert_one_line_error(cli("gc", "--store", uri, "--grace", "nan", "--force"), "--grace")
    assert store.io.exists("embeddings/v0/item/in-flight/part-00000.parquet")


def test_a_metric_that_is_not_a_number_is_recorded_as_null_not_refused(tmp_path):
    """The log refuses non-finite floats, so a candidate's nan recall (no evaluated user) is
    recorded explicitly as null: training is never lost to it."""
    import numpy as np

    from bc_ray.core.registry import family_requirement
    from bc_ray.store.versions import Candidate, register_candidate

    store = Store(f"file://{tmp_path}/store")
    record = register_candidate(store, Candidate(
        parent=None, dim=4, method="bc-aligner", spec={}, snapshot_id="s", cutoff=1.0,
        model=np.random.default_rng(0).bytes(16), transform=None,
        metrics={"recall_at_50": math.nan, "history": [0.5, math.inf]}))
    metrics = Store(store.uri).state().version(record.version).metrics
    assert metrics == {"recall_at_50": None, "history": [0.5, None],
                       "family_requires": family_requirement("graphsage")}


def test_a_store_an_older_writer_bricked_reads_again_and_can_be_mended(tmp_path, caplog):
    """The entry an older bc_ray wrote for `--grace-seconds inf` (null in JSON) is skipped with
    a warning, beside the actions of its entry; the previous retention stays, and `bc-ray store
    config` records a valid one."""
    import orjson

    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    store.commit(lambda _state: [_configured(60.0)])
    seq = store.state().seq + 1
    run = {"type": "run.recorded", "run_id": "r1", "kind": "refresh", "status": "succeeded"}
    old_entry = {"format": 1, "seq": seq, "writer": "old", "committed_at":
                 datetime.now(timezone.utc).isoformat(), "actions": [_configured(None), run]}
    store.io.create(entry_path(seq), orjson.dumps(old_entry))  # as the old writer put it

    state = Store(uri).state()
    assert state.seq == seq and "r1" in state.runs
    assert state.retention.staging_grace_seconds == 60.0
    assert "configures a retention no process can apply" in caplog.text
    mended = cli("store", "config", "--store", uri, "--grace-seconds", "600")
    assert mended.returncode == 0, mended.stderr
    assert Store(uri).state().retention.staging_grace_seconds == 600.0
    assert cli("versions", "--store", uri).returncode == 0


def test_a_rollback_under_a_bad_retention_variable_changes_nothing(tmp_path):
    """Its retention would run after the commit: the rollback is refused before it, so the
    error it prints is true (it used to print one after rolling back)."""
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8], rows=5, keep_versions=2)
    rng = np.random.default_rng(3)
    refresh_fake_tables(store, publish_fake_version(store, 6, rng), 5, rng)
    before = Store(uri).state()
    assert_one_line_error(cli("rollback", "--store", uri, env={"BC_RAY_KEEP_VERSIONS": "-3"}),
                          "BC_RAY_KEEP_VERSIONS")
    after = Store(uri).state()
    assert after.seq == before.seq and after.current_version == 1
