"""`bc-ray publish` end to end on real stores: the rotation round trip (the issue's bar), a store
started from published embeddings alone, the gate, each method, S3, and what every reader sees."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import numpy as np
import pytest
from typer.testing import CliRunner

from bc_ray import read_embeddings
from bc_ray.cli.main import app
from bc_ray.exceptions import ConfigError, DataError, StoreError
from bc_ray.io import FileIO
from bc_ray.publish.config import PublishConfig
from bc_ray.publish.job import run_publish
from bc_ray.serve.state import ServingState
from bc_ray.store import store as store_module
from bc_ray.store.actions import Hook
from bc_ray.store.maintenance import collect_garbage
from bc_ray.store.snapshots import load_entities
from bc_ray.store.state import EXTERNAL_FAMILY
from bc_ray.store.store import RetentionPolicy, Store
from bc_ray.store.tables import TableFiles, table_prefix, write_table
from bc_ray.store.versions import (
    Candidate,
    check_refreshable,
    publish_with_tables,
    rollback_version,
)
from tests.publish.conftest import (
    current,
    embedding_table,
    put_parquet,
    rotation,
    write_rotated,
)
from tests.store.delta_readers import read_deltalake


def _gap(got: dict, expected: dict) -> float:
    """Largest difference between two {entity: (ids, matrix)} of the same ids."""
    worst = 0.0
    for entity, (ids, matrix) in expected.items():
        other_ids, other = got[entity]
        assert other_ids == ids
        worst = max(worst, float(np.abs(other - matrix).max()))
    return worst


def _source_versions(uri: str, version: int) -> set[int]:
    return {v for e in ("user", "item") for v in
            read_embeddings(uri, e, version, prefer_stored=False)["source_version"].to_list()}


def _random_tables(rng: np.random.Generator, dim: int) -> dict:
    return {"user": ([f"u{i}" for i in range(200)], rng.normal(size=(200, dim)).astype(np.float32)),
            "item": ([f"i{i}" for i in range(150)], rng.normal(size=(150, dim)).astype(np.float32))}


def _put(base: str, tables: dict, fixed: bool = False) -> tuple[str, str]:
    return tuple(put_parquet(f"{base}/{e}s/part-0.parquet", embedding_table(*tables[e],
                                                                           fixed=fixed))
                 .rsplit("/", 1)[0] for e in ("user", "item"))


@pytest.mark.ray
def test_a_published_rotation_reads_back_as_every_older_version(ray_cluster, tmp_path,
                                                                  small_snapshot):
    """The issue's bar: a trained and refreshed version 0, then a random rotation of its
    embeddings (plus N(0, 1e-4^2) noise) published as version 1: the ver-0 view computed from
    version 1's table through B_1 equals the original ver-0 embeddings within 1e-3. A second
    rotation checks the composed chain; then rollback, Delta, refresh and training."""
    from bc_ray.refresh.config import RefreshConfig
    from bc_ray.refresh.job import run_refresh
    from bc_ray.store.snapshots import publish_snapshot
    from bc_ray.train.config import TrainJobConfig
    from bc_ray.train.inputs import load_inputs
    from tests.helpers import publish_model_version

    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    publish_snapshot(store, small_snapshot.with_cutoff(0.7))
    publish_model_version(store, small_snapshot.with_cutoff(0.7))
    run_refresh(RefreshConfig(store=uri, mode="full", block_nodes=128))
    rng = np.random.default_rng(27)
    v0 = current(uri, 0)
    users, items = write_rotated(f"file://{tmp_path}/made-elsewhere/1", v0, rng)
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items,
                                        method="post-procrustes"))
    assert (outcome.version, outcome.status, outcome.parent) == (1, "published", 0)
    assert outcome.metrics["align_error_rel"] < 1e-2
    assert _source_versions(uri, 0) == {1}
    scale = max(float(np.abs(m).max()) for _, m in v0.values())
    assert _gap(current(uri), v0) > 0.1 * scale  # the table itself moved: the chain undoes it
    assert _gap(current(uri, 0, prefer_stored=False), v0) < 1e-3

    entry = next(e for _, e in store.log.entries()
                 if any(a.type == "version.candidate" and a.version == 1 for a in e.actions))
    assert [a.type for a in entry.actions] == ["version.candidate", "version.published",
                                               "refresh.published", "refresh.published"]
    record = store.state().version(1)
    assert record.family == EXTERNAL_FAMILY and "model" not in record.files
    assert record.spec["users"] == FileIO(users).uri and record.method == "post-procrustes"

    v1 = current(uri, 1)
    users, items = write_rotated(f"file://{tmp_path}/made-elsewhere/2", v1, rng)
    assert run_publish(PublishConfig(store=uri, users=users, items=items)).version == 2
    assert _gap(current(uri, 0, prefer_stored=False), v0) < 1e-3
    assert _gap(current(uri, 1, prefer_stored=False), v1) < 1e-3
    assert set(read_deltalake(store, None)["version"].to_list()) == {2}

    assert rollback_version(store, reason="test").version == 1  # a version without a model
    assert _gap(current(uri), v1) == 0.0
    delta = read_deltalake(store, None)
    assert set(delta["version"].to_list()) == {1} and delta.height == sum(
        len(ids) for ids, _ in v1.values())
    with pytest.raises(StoreError, match="version 1 was published from embeddings made "
                                         "elsewhere .* no model to refresh with"):
        check_refreshable(store.state())
    # The next version trains against the external one's tables (there is no model to run).
    inputs = load_inputs(TrainJobConfig(store=uri))
    assert inputs.model == "graphsage" and inputs.previous.model is None
    assert inputs.previous.dim == store.state().version(1).dim
    assert bool(inputs.previous.stored.user_mask.any() and inputs.previous.stored.item_mask.any())


def test_a_store_starts_from_published_embeddings(tmp_path):
    """Version 0 from `publish` (no snapshot, no model, text ids, fixed-size lists), then
    version 1: with one version kept, version 0's tables go and every reader (consumers, Serve)
    gets the ver-0 view through B_1."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    store.configure(RetentionPolicy(keep_versions=1, staging_grace_seconds=0))
    rng = np.random.default_rng(5)
    first = _random_tables(rng, 8)
    users, items = _put(f"file://{tmp_path}/ext/day1", first, fixed=True)
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items))
    assert (outcome.version, outcome.status, outcome.parent) == (0, "published", None)
    assert outcome.rows == {"user": 200, "item": 150}
    record = store.state().version(0)
    assert record.family == EXTERNAL_FAMILY and set(record.files) == {"chain", "metrics"}
    ordered = {e: (sorted(ids), m[np.argsort(ids)]) for e, (ids, m) in first.items()}
    assert _gap(current(uri), ordered) == 0.0

    users, items = write_rotated(f"file://{tmp_path}/ext/day2", current(uri), rng)
    assert run_publish(PublishConfig(store=uri, users=users, items=items)).version == 1
    state = store.state()
    assert state.table(0, "user") is None and state.table(0, "item") is None  # retention ran
    assert state.delta.tables["user"] == state.table(1, "user").refresh_id  # so did the mirror
    assert _source_versions(uri, 0) == {1}
    assert _gap(current(uri, 0), ordered) < 1e-3
    served = ServingState.load(store)
    rows, found, target = served.lookup("user", ordered["user"][0] + ["nobody"], 0)
    assert target == 0 and found.tolist() == [True] * 200 + [False]
    assert np.abs(rows[:200] - ordered["user"][1]).max() < 1e-3
    with pytest.raises(StoreError, match="retention removed its user table and its item table"):
        rollback_version(store, 0)
    collect_garbage(store, grace_seconds=0, force=True)  # nothing it needs is unreferenced
    assert _gap(current(uri, 0), ordered) < 1e-3


def test_an_older_published_table_kept_gives_way_to_the_newest(tmp_path):
    """Two kept versions of a publish-only store (no snapshot: the same empty snapshot id),
    the newer with 50 more users: ver-0 readers get the chain over the newest table, which
    covers them, as Serve does, not the kept ver-0 table that never will."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    store.configure(RetentionPolicy(keep_versions=2, staging_grace_seconds=0))
    rng = np.random.default_rng(8)
    first = _random_tables(rng, 8)
    run_publish(PublishConfig(store=uri, users=_put(f"file://{tmp_path}/a", first)[0],
                              items=_put(f"file://{tmp_path}/a", first)[1]))
    grown = {"user": ([*first["user"][0], *(f"n{i}" for i in range(50))],
                      np.vstack([first["user"][1], rng.normal(size=(50, 8))]).astype(np.float32)),
             "item": first["item"]}
    users, items = write_rotated(f"file://{tmp_path}/b", grown, rng)
    assert run_publish(PublishConfig(store=uri, users=users, items=items)).version == 1
    assert store.state().table(0, "user") is not None  # kept
    view = read_embeddings(uri, "user", 0)
    assert view.height == 250 and view["source_version"].unique().to_list() == [1]
    assert read_embeddings(uri, "user", 1).height == 250


def test_the_current_versions_tables_published_again_change_nothing(tmp_path, caplog):
    """A retry (its reply lost) is not one more version with an identity B_k: the CLI says the
    tables are the current version's and exits 0; other bytes, or the same bytes after another
    version, publish as before (an older version's are said to be its)."""
    uri = f"file://{tmp_path}/store"
    rng = np.random.default_rng(3)
    users, items = _put(f"file://{tmp_path}/ext/day1", _random_tables(rng, 8))
    assert run_publish(PublishConfig(store=uri, users=users, items=items)).version == 0
    seq = Store(uri).state().seq

    again = CliRunner().invoke(app, ["publish", "--store", uri, "--users", users, "--items",
                                     items, "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert (summary["status"], summary["version"], summary["parent"]) == \
        ("already published", 0, None)
    assert summary["rows"] == {"user": 200, "item": 150}
    assert Store(uri).state().seq == seq

    rotated = write_rotated(f"file://{tmp_path}/ext/day2", current(uri), rng)
    assert run_publish(PublishConfig(store=uri, users=rotated[0], items=rotated[1])).version == 1
    back = run_publish(PublishConfig(store=uri, users=users, items=items))
    assert (back.status, back.version) == ("published", 2)  # not the current version's bytes
    assert "these tables are version 0's (the same bytes)" in caplog.text


def test_each_table_may_name_its_own_id_column(tmp_path):
    """A team's exports with `user_id` and `item_id`: --user-id-col and --item-id-col (each
    defaulting to --id-col); a missing one is named by its own option; the same bytes read the
    same way are the current version's, read another way are not."""
    uri = f"file://{tmp_path}/store"
    rng = np.random.default_rng(4)
    tables = _random_tables(rng, 8)
    folders = {}
    for entity, column in (("user", "user_id"), ("item", "id")):
        table = embedding_table(*tables[entity], id_col=column)
        if entity == "item":  # the same ids under a second name
            table = table.append_column("item_key", table.column("id"))
        folders[entity] = put_parquet(f"file://{tmp_path}/ext/{entity}s/part-0.parquet", table)

    def publish(*options: str):
        return CliRunner().invoke(app, ["publish", "--store", uri, "--users", folders["user"],
                                        "--items", folders["item"], "--json", *options])

    missing = publish("--item-id-col", "item_id", "--user-id-col", "user_id")
    assert missing.exit_code != 0 and "no column 'item_id'" in str(missing.exception)
    assert "name it with --item-id-col" in str(missing.exception)
    done = publish("--user-id-col", "user_id")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rows"] == {"user": 200, "item": 150}
    assert sorted(read_embeddings(uri, "user")["id"].to_list()) == sorted(tables["user"][0])
    again = publish("--id-col", "id", "--user-id-col", "user_id")
    assert json.loads(again.output)["status"] == "already published", again.output
    spec = Store(uri).state().version(0).spec
    assert (spec["user_id_col"], spec["item_id_col"]) == ("user_id", "id")
    another_way = publish("--user-id-col", "user_id", "--item-id-col", "item_key")
    assert json.loads(another_way.output)["version"] == 1, another_way.output


def test_ids_the_snapshot_lacks_are_counted_and_a_table_of_none_of_its_ids_refused(tmp_path):
    """Embeddings keyed by another id scheme (a wrong --id-col, row numbers) would publish a
    version no consumer can join: refused, naming the table. Some ids outside the snapshot
    (entities not ingested yet) are published, counted and warned about."""
    uri = f"file://{tmp_path}/store"
    synth = CliRunner().invoke(app, ["data", "synth", "--store", uri, "--users", "50",
                                     "--items", "40", "--edges", "400"])
    assert synth.exit_code == 0, synth.output
    snapshot = load_entities(Store(uri), Store(uri).state())
    ids = {e: snapshot.entities(e)["id"].to_list() for e in ("user", "item")}
    rng = np.random.default_rng(4)

    def tables(user_ids: list, item_ids: list) -> dict:
        return {"user": (user_ids, rng.normal(size=(len(user_ids), 8)).astype(np.float32)),
                "item": (item_ids, rng.normal(size=(len(item_ids), 8)).astype(np.float32))}

    shifted = [i + 10**9 for i in ids["user"]]
    users, items = _put(f"file://{tmp_path}/wrong", tables(shifted, ids["item"]))
    count = len(ids["user"])
    with pytest.raises(DataError, match=rf"--users: none of its {count} ids is one of the "
                                        rf"store's {count} users .*check --id-col"):
        run_publish(PublishConfig(store=uri, users=users, items=items))
    assert Store(uri).state().versions == {}

    users, items = _put(f"file://{tmp_path}/more", tables(ids["user"] + shifted[:5],
                                                           ids["item"]))
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items))
    assert outcome.status == "published"
    assert outcome.metrics["ids_outside_snapshot"] == {"user": 5, "item": 0}


@pytest.mark.parametrize("variable,value", [("BC_RAY_KEEP_VERSIONS", "-3"),
                                            ("BC_RAY_GRACE_SECONDS", "-1")])
def test_a_retention_that_cannot_apply_is_refused_before_the_commit(tmp_path, monkeypatch,
                                                                     variable, value):
    """A bad BC_RAY_* variable is refused before the version lands (its retention would run
    after the commit): no version, no files; the next publish, without it, is whole."""
    uri = f"file://{tmp_path}/store"
    store = Store(uri)
    users, items = _put(f"file://{tmp_path}/ext", _random_tables(np.random.default_rng(4), 8))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        run_publish(PublishConfig(store=uri, users=users, items=items))
    assert store.state().versions == {} and store.io.list_files("embeddings") == {}
    assert store.io.list_files("versions") == {}  # its staged model, chain and metrics too
    monkeypatch.delenv(variable)
    assert run_publish(PublishConfig(store=uri, users=users, items=items)).version == 0
    assert read_embeddings(uri, "user").height == 200


def test_a_step_after_the_commit_that_fails_leaves_the_tables_the_log_names(tmp_path,
                                                                           monkeypatch):
    """The version has landed when a post-commit step fails (a hook that raises): its tables
    stay, readable, and the error still reaches the caller."""
    uri = f"file://{tmp_path}/store"
    users, items = _put(f"file://{tmp_path}/ext", _random_tables(np.random.default_rng(6), 8))

    def failing(_store: Store) -> None:
        raise RuntimeError("the object store went away")

    monkeypatch.setitem(store_module._POST_COMMIT, Hook.RETENTION, failing)
    with pytest.raises(RuntimeError, match="went away"):
        run_publish(PublishConfig(store=uri, users=users, items=items))
    assert Store(uri).state().current_version == 0
    assert read_embeddings(uri, "user").height == 200 and read_embeddings(uri).height == 150


def test_a_taken_number_or_a_moved_parent_commits_nothing(chain_store):
    """Tables are written for one version number against one parent: a commit finding either
    changed is refused, and the version's staged files go with it."""
    store, uri = chain_store
    ids, matrix = current(uri)["user"]
    candidate = Candidate(parent=0, dim=16, method="post-procrustes", spec={}, snapshot_id="",
                          cutoff=0.0, model=None, transform=(np.eye(16, dtype=np.float32),
                                                             np.zeros(16, np.float32)),
                          family=EXTERNAL_FAMILY)
    now = datetime.now(timezone.utc)
    tables = [TableFiles(e, write_table(store, table_prefix(store, 1, e, "r"), ids, matrix, 1,
                                        now), len(ids), 16) for e in ("user", "item")]
    seq, versions = store.state().seq, store.io.list_files("versions")
    for version, parent, message in ((0, 0, "version 0 was registered by another writer"),
                                     (1, None, "the current version moved from None to 0")):
        with pytest.raises(StoreError, match=message):
            publish_with_tables(store, dataclasses.replace(candidate, parent=parent,
                                                           transform=None if parent is None
                                                           else candidate.transform),
                                version, "r", tables, now, "external")
        assert store.state().seq == seq and store.io.list_files("versions") == versions


def test_the_gate_records_a_rejected_version_and_writes_no_table(chain_store, tmp_path):
    store, uri = chain_store
    rng = np.random.default_rng(9)
    unrelated = {e: (ids, rng.normal(size=m.shape).astype(np.float32))
                 for e, (ids, m) in current(uri).items()}
    users, items = _put(f"file://{tmp_path}/ext", unrelated)
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items))
    assert outcome.status == "rejected" and "relative alignment error" in outcome.reasons[0]
    state = store.state()
    assert state.current_version == 0 and state.version(1).status == "rejected"
    assert state.version(1).metrics["align_error_rel"] > 0.5
    assert state.table(1, "user") is None and store.io.list_files("embeddings/v1") == {}
    seq = store.state().seq
    result = CliRunner().invoke(app, ["publish", "--store", uri, "--users", users, "--items",
                                      items, "--json"])  # a retry: rejected again, not recorded
    assert result.exit_code == 3, result.output
    again = json.loads(result.output)
    assert (again["status"], again["version"], again["reasons"]) == \
        ("rejected", 1, outcome.reasons)
    assert again["align_error_rel"] == outcome.metrics["align_error_rel"]
    assert store.state().seq == seq and 2 not in store.state().versions
    looser = run_publish(PublishConfig(store=uri, users=users, items=items,
                                       max_align_error_rel=5.0))  # gated anew
    assert (looser.status, looser.version) == ("published", 2)


def test_each_entity_is_gated_on_its_own(chain_store, tmp_path, caplog):
    """Users from a broken pipeline beside well-aligned items: pooled, the items' small error
    would carry the users' through the gate."""
    store, uri = chain_store
    rng = np.random.default_rng(4)
    tables = current(uri)
    q = rotation(rng, tables["item"][1].shape[1])
    ids, users = tables["user"]
    broken = {"user": (ids[:40], rng.normal(size=(40, users.shape[1])).astype(np.float32)),
              "item": (tables["item"][0], (tables["item"][1] @ q.T).astype(np.float32))}
    users, items = _put(f"file://{tmp_path}/ext", broken)
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items))
    by_entity = outcome.metrics["align_error_rel_by_entity"]
    assert outcome.metrics["align_sample_by_entity"] == {"user": 8, "item": 60}
    assert outcome.metrics["ids_dropped"] == {"user": 260, "item": 0}  # and said
    assert "260 of the 300 user ids of version 0 are not in the new table" in caplog.text
    assert by_entity["item"] < 0.5 < by_entity["user"]
    assert outcome.metrics["align_error_rel"] < 0.5  # what a pooled gate would have read
    assert outcome.status == "rejected" and outcome.reasons == [
        f"relative alignment error {by_entity['user']:.3f} on 8 held-out users exceeds 0.5 "
        "(--max-align-error-rel)"]
    assert store.state().current_version == 0


@pytest.mark.parametrize("method, published", [("post-lin", True), ("post-lowrank", True),
                                               ("post-procrustes", False)])
def test_each_method_fits_what_it_can(chain_store, tmp_path, method, published):
    """A linear change to a larger dimension: least squares fits recover it, Procrustes (an
    isometry) cannot and is rejected by a gate of 0.1."""
    store, uri = chain_store
    rng = np.random.default_rng(2)
    change = rng.normal(size=(24, 16)) / 4
    moved = {e: (ids, (m @ change.T).astype(np.float32)) for e, (ids, m) in current(uri).items()}
    users, items = _put(f"file://{tmp_path}/ext", moved)
    outcome = run_publish(PublishConfig(store=uri, users=users, items=items, method=method,
                                        max_align_error_rel=0.1))
    assert (outcome.status == "published") is published, outcome
    if published:
        assert outcome.dim == 24 and _gap(current(uri, 0, prefer_stored=False),
                                          current(uri, 0)) < 0.05


def test_s3_round_trip(s3_uri):
    """Store and tables on the S3 server: folders read, version 0 then 1, read back and Delta."""
    store = Store(s3_uri)
    base = s3_uri.rsplit("/", 1)[0] + "/made-elsewhere"
    rng = np.random.default_rng(11)
    first = _random_tables(rng, 8)
    users, items = _put(f"{base}/day1", first)
    assert run_publish(PublishConfig(store=s3_uri, users=users, items=items)).version == 0
    before = current(s3_uri)
    users, items = write_rotated(f"{base}/day2", before, rng)
    outcome = run_publish(PublishConfig(store=s3_uri, users=users, items=items))
    assert outcome.version == 1 and store.state().version(1).spec["users"] == users
    assert _gap(current(s3_uri, 0, prefer_stored=False), before) < 1e-3
    delta = read_deltalake(store, None)
    assert set(delta["version"].to_list()) == {1} and delta.height == 350
