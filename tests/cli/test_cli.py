import dataclasses
import json
import os
import select
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.exceptions import ConfigError
from tests.conftest import PLUGINS

runner = CliRunner()
# The CLI in a bare process, saying last whether a Ray cluster was started.
NO_CLUSTER_CHECK = ("import sys, runpy; sys.argv = ['bc-ray'] + sys.argv[1:]\n"
                    "try:\n    runpy.run_module('bc_ray.cli.main', run_name='__main__')\n"
                    "finally:\n    ray = sys.modules.get('ray')\n"
                    "    print('a cluster' if ray and ray.is_initialized() else 'no cluster', "
                    "file=sys.stderr)")


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "benchmark"):
        assert command in result.output


def test_data_synth_and_info(tmp_path):
    store = f"file://{tmp_path}/store"
    result = runner.invoke(app, ["data", "synth", "--store", store, "--users", "200", "--items",
                                 "150", "--edges", "3000", "--cutoff", "0.5"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["data", "info", "--store", store, "--json"])
    data = json.loads(info.output)
    assert data["edges"] == 3000 and data["cutoff"] == 0.5 and data["visible_edges"] == 1500
    assert set(data["features"]["item"]) == {"category", "brand"}
    text = runner.invoke(app, ["data", "info", "--store", store])
    assert "rating_histogram" in text.output


def test_import_real_data(tmp_path, ml100k_path):
    store = f"file://{tmp_path}/store"
    result = runner.invoke(app, ["data", "import", "--format", "movielens-100k", "--path",
                                 ml100k_path, "--store", store])
    assert result.exit_code == 0, result.output
    assert "users          943" in result.output


def test_errors_are_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bc_ray.cli.main", "data", "import", "--format",
         "movielens-100k", "--path", str(tmp_path / "missing"), "--store", str(tmp_path / "s")],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: file not found")
    assert "Traceback" not in result.stderr


def test_a_path_with_no_store_and_a_mistyped_method_are_said_before_a_cluster_starts(tmp_path):
    """Each in a bare process that starts no Ray cluster (one would take seconds to start, and
    print its own warnings, before the error)."""
    missing = f"file://{tmp_path}/no-such-store"
    synth = runner.invoke(app, ["data", "synth", "--store", f"file://{tmp_path}/store",
                                "--users", "50", "--items", "40", "--edges", "400"])
    assert synth.exit_code == 0, synth.output
    for args, said in [
            (["versions", "--store", missing], f"no store at {missing}"),
            (["refresh", "--store", missing], f"no store at {missing}"),
            (["train", "--store", missing], f"no store at {missing}"),
            (["data", "info", "--store", missing], f"no store at {missing}"),
            (["status", "--store", missing], f"no store at {missing}"),
            (["rollback", "--store", missing], f"no store at {missing}"),
            (["store", "mirror", "--store", missing], f"no store at {missing}"),
            (["export", "--store", missing, "--format", "delta", "--out",
              str(tmp_path / "view")], f"no store at {missing}"),
            (["refresh", "--store", f"file://{tmp_path}/store"], "no published version yet"),
            (["train", "--store", f"file://{tmp_path}/store", "--method", "bc-alligner"],
             "unknown method 'bc-alligner'; choose one of ['bc-aligner',")]:
        done = subprocess.run([sys.executable, "-c", NO_CLUSTER_CHECK, *args],
                              capture_output=True, text=True)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and said in lines[0], (args, lines)
        assert lines[1:] == ["no cluster"], (args, lines)  # one line, and no cluster started
    listed = done.stderr.split("choose one of", 1)[1]
    assert "popularity" not in listed and "keep-all" not in listed  # baselines it refuses


def test_a_bump_on_published_embeddings_keeps_the_family_the_team_trained(tmp_path, caplog):
    """Version 0 trained by the `tiny` plug-in, version 1 published from elsewhere: a bump
    without --model goes on with tiny and version 0's spec, saying so (it silently switched
    to GraphSAGE); --spec is read by that family, and --model still chooses another."""
    import numpy as np

    from bc_ray.store.state import EXTERNAL_FAMILY
    from bc_ray.store.store import Store
    from bc_ray.store.versions import Candidate, publish_version, register_candidate
    from bc_ray.train.config import TrainJobConfig
    from bc_ray.train.inputs import trained_before_published

    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(0)
    for parent, family, spec in ((None, "tiny", {"dim": 8}), (0, EXTERNAL_FAMILY, {})):
        record = register_candidate(store, Candidate(
            parent=parent, dim=8, method="bc-aligner", spec=spec, snapshot_id="s", cutoff=1.0,
            model=rng.bytes(16), transform=None if parent is None else
            (np.eye(8, dtype=np.float32), np.zeros(8, dtype=np.float32)), family=family))
        publish_version(store, record.version)
    with caplog.at_level("INFO", logger="bc_ray.train.inputs"):
        job = trained_before_published(TrainJobConfig(store=store.uri), store.state())
    assert job.model == "tiny" and job.spec.to_dict() == {"dim": 8}
    assert "training tiny as version 0, the newest trained one, was" in caplog.text
    alone = trained_before_published(TrainJobConfig(store=store.uri), _only_published(store))
    assert alone.model is None  # nothing trained here: GraphSAGE, as for version 0
    sharded = TrainJobConfig(store=store.uri, sharded=True, targets="stored")
    assert trained_before_published(sharded, store.state()).model is None  # GraphSAGE only
    gone = store.state()
    gone.versions[0].family = "gone"
    with pytest.raises(ConfigError, match="so a bump without --model trains the family of "
                                          "version 0, the newest trained here: version 0 was "
                                          "trained by model family 'gone'"):
        trained_before_published(TrainJobConfig(store=store.uri), gone)


def _only_published(store):
    """`store`'s state as if its first version had been published too (none trained here)."""
    state = store.state()
    state.versions[0].family = state.versions[1].family
    return state


def test_a_bump_of_a_plugin_version_reads_its_spec_and_is_checked_before_a_cluster(tmp_path):
    """`--spec` alone is read by the current version's family (the test-only `tiny`, whose
    `dim` GraphSAGE's parser does not know), and what the method or --sharded refuse against
    that version is said before a cluster starts."""
    from bc_ray.store.store import Store
    from bc_ray.store.versions import Candidate, publish_version, register_candidate

    uri = f"file://{tmp_path}/store"
    synth = runner.invoke(app, ["data", "synth", "--store", uri, "--users", "50", "--items",
                                "40", "--edges", "400"])
    assert synth.exit_code == 0, synth.output
    store = Store(uri)
    snapshot = store.state().snapshot()
    register_candidate(store, Candidate(
        parent=None, dim=8, method="bc-aligner", spec={"dim": 8}, snapshot_id=snapshot.id,
        cutoff=snapshot.cutoff, model=b"never read here", transform=None, family="tiny"))
    publish_version(store, 0)
    with_plugins = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for args, said in [
            (["--method", "finetune-m0", "--spec", "dim=16"],
             "finetune-m0 cannot change the architecture: the tiny spec"),
            (["--warm-start", "mean"], "the tiny model family has no warm start"),
            (["--sharded", "--num-workers", "1", "--targets", "stored"],
             "--sharded trains GraphSAGE (its ID tables are what is sharded), not tiny")]:
        done = subprocess.run([sys.executable, "-c", NO_CLUSTER_CHECK, "train", "--store", uri,
                               *args], capture_output=True, text=True, env=with_plugins)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and said in lines[0], (args, done.stderr)
        assert lines[1:] == ["no cluster"], (args, lines)
    # Without the plug-in installed, a refresh of that version says what to install, before
    # a cluster starts (it used to start Ray and its warm-up tasks first).
    without = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", NO_CLUSTER_CHECK, "refresh", "--store", uri],
                          capture_output=True, text=True, env=without)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "which does not load here" in lines[0], done.stderr
    assert lines[1:] == ["no cluster"], lines


def test_benchmark_rejects_bad_counts_before_any_work(tmp_path):
    from bc_ray.experiments.lambdas import LAM_RULE

    for option in ("--seeds", "--epochs"):
        result = runner.invoke(app, ["benchmark", "paper", "--out", str(tmp_path / "out"),
                                     "--quick", option, "0"])
        assert result.exit_code == 2 and option in result.output, result.output
    assert not (tmp_path / "out").exists()
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"preset": "quick", "dataset": "synthetic-s0", "lam_grid": []}))
    for source, message in ((tmp_path / "missing", "cannot read"),
                            (earlier, "not 'converged'")):
        result = runner.invoke(app, ["benchmark", "paper", "--out", str(tmp_path / "out"),
                                     "--preset", "converged", "--lam-from", str(source)])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
    for preset, grid, message in (("converged", "4,x", "comma-separated"),
                                  ("converged", "0,16", "> 0"), ("converged", "nan", "> 0"),
                                  ("quick", "4,16", "--preset converged")):
        result = runner.invoke(app, ["benchmark", "paper", "--out", str(tmp_path / "out"),
                                     "--preset", preset, "--lam-grid", grid])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
    sequence = tmp_path / "sequence.json"  # lambda chosen for another model, from another grid
    sequence.write_text(json.dumps({"preset": "converged", "dataset": "synthetic-s0",
                                    "model": {"family": "sequence"}, "lam_values": [4.0, 16.0],
                                    "lam_grid": [], "lam_rule": LAM_RULE}))
    older = tmp_path / "older.json"  # lambda chosen by the old rule (best sum over versions)
    older.write_text(json.dumps({"preset": "converged", "dataset": "synthetic-s0",
                                 "model": {"family": "sequence"}, "lam_values": [4.0, 16.0],
                                 "lam_grid": [{"method": "bc-aligner", "chosen": 4.0,
                                               "validation_sum": {"4.0": -1.0}}]}))
    result = runner.invoke(app, ["benchmark", "paper", "--out", str(tmp_path / "out"),
                                 "--preset", "converged", "--lam-from", str(older),
                                 "--model", "sequence", "--lam-grid", "4,16"])
    flat = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "run the grid again" in flat, result.output
    for extra, message in (([], "model 'sequence', not 'graphsage'"),
                           (["--model", "sequence"], "give the same --lam-grid"),
                           (["--model", "sequence", "--lam-grid", "16,4"], "no lambda")):
        result = runner.invoke(app, ["benchmark", "paper", "--out", str(tmp_path / "out"),
                                     "--preset", "converged", "--lam-from", str(sequence),
                                     *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_lambda_grid_replaces_the_presets():
    from bc_ray.cli.benchmark_cmd import _with_lam_grid
    from bc_ray.experiments.paper import PRESETS

    chosen = _with_lam_grid(PRESETS["converged"], "64, 4,16,4")
    assert chosen.lam_grid == (4.0, 16.0, 64.0)
    assert dataclasses.replace(chosen, lam_grid=PRESETS["converged"].lam_grid) == \
        PRESETS["converged"]


def test_scheduler_job_arguments_are_shell_words(tmp_path):
    from bc_ray.cli.scheduler_cmd import _split

    assert _split('--method bc-aligner --note "two words"', "--train-args") == \
        ["--method", "bc-aligner", "--note", "two words"]
    result = runner.invoke(app, ["scheduler", "once", "--store", f"file://{tmp_path}/s",
                                 "--ray-address", "http://127.0.0.1:1", "--train-args",
                                 '--note "unbalanced'])
    assert result.exit_code == 2 and "cannot split" in result.output, result.output


def test_nested_values_read_as_their_entries():
    from bc_ray.render import key_values

    text = key_values({"last_refresh": {"user": {"version": 2, "rows": 5},
                                        "item": {"version": 2}}, "ids": [1, 2],
                       "sizes": {"a": [1, 2], "b": 3, "c": []}})
    assert text.splitlines() == ["last_refresh  user=(version=2, rows=5), item=(version=2)",
                                 "ids           1, 2",
                                 "sizes         a=(1, 2), b=3, c="]


def test_a_rejected_bump_says_what_helps(capsys):
    import pytest
    import typer

    from bc_ray.cli.train_cmd import _report
    from bc_ray.train.runs import TrainOutcome

    rejected = TrainOutcome(3, "rejected", {"align_error_rel": 0.6}, ["relative alignment error"])
    with pytest.raises(typer.Exit) as exited:
        _report(rejected, as_json=True, fail_on_reject=True)
    said = capsys.readouterr()
    assert exited.value.exit_code == 3 and json.loads(said.out)["status"] == "rejected"
    assert "the gate rejected version 3" in said.err and "--lam" in said.err
    _report(TrainOutcome(4, "published", {}), as_json=True, fail_on_reject=True)
    assert capsys.readouterr().err == ""


def test_every_command_has_a_one_line_summary():
    """`--help` lists a command by its help's first paragraph, line breaks kept (typer's rich
    mode): that paragraph is one line, details after a blank line."""
    import inspect

    import typer

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield " ".join([*path, name]), inspect.cleandoc(sub.help or "")
            yield from walk(sub, [*path, name])

    for name, text in walk(typer.main.get_command(app), []):
        assert text, f"{name} has no help"
        assert "\n" not in text.split("\n\n")[0], f"{name}: {text.splitlines()[:2]}"


def test_the_scheduler_refuses_a_store_nothing_has_written(tmp_path):
    """A mistyped --store is one line, not a new store of leases and failed runs (a landing
    zone or --publish-from, which fill a new store, start one)."""
    result = runner.invoke(app, ["scheduler", "once", "--store", f"file://{tmp_path}/stor",
                                 "--ray-address", "http://127.0.0.1:1", "--kind", "refresh"])
    assert result.exit_code != 0 and "no store at" in str(result.exception) + result.output
    assert not (tmp_path / "stor").exists()


def test_a_long_running_scheduler_waits_for_an_unwritten_store(tmp_path):
    """`scheduler run` (a Deployment started before the first ingest) waits for the store,
    writing nothing and saying why once, instead of exiting into a crash loop."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bc_ray.cli.main", "scheduler", "run", "--store",
         f"file://{tmp_path}/stor", "--ray-address", "http://127.0.0.1:1"],
        stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stderr], [], [], 60)
        assert ready, "scheduler run said nothing within 60 s"
        line = process.stderr.readline()  # the first thing it says
        assert "no store at" in line and "waiting for it" in line, line
        assert process.poll() is None
        assert not (tmp_path / "stor").exists()
    finally:
        process.kill()
        process.wait()


def test_waiting_for_a_store_ends_when_something_writes_it(tmp_path):
    import threading

    from bc_ray.cli.scheduler_cmd import wait_until_written
    from bc_ray.store.store import RetentionPolicy, Store

    uri = f"file://{tmp_path}/stor"
    waiter = threading.Thread(target=wait_until_written, args=(uri, 0.05), daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()
    Store(uri).configure(RetentionPolicy())
    waiter.join(30)
    assert not waiter.is_alive()


def test_versions_names_a_method_only_where_a_version_has_a_parent(tmp_path):
    from tests.helpers import store_with_chain

    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8, 6], rows=10)
    lines = runner.invoke(app, ["versions", "--store", uri]).output.splitlines()
    first, latest = (line.lstrip("* ").split() for line in lines[2:4])
    assert lines[0].split()[4] == "method" and lines[3].startswith("* 1"), lines
    assert (first[0], first[4], latest[4]) == ("0", "-", "bc-aligner"), lines
