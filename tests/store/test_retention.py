import numpy as np
import pytest

from bc_ray import read_embeddings
from bc_ray.store.maintenance import apply_retention
from tests.helpers import (
    publish_fake_version,
    random_transform,
    refresh_fake_tables,
    store_with_chain,
)


def test_keep_latest_removes_old_tables_and_models_but_never_transforms(store_uri):
    store, _ = store_with_chain(store_uri, [8], rows=20)
    rng = np.random.default_rng(1)
    old_table = store.state().table(0, "item")
    publish_fake_version(store, 6, rng)
    refresh_fake_tables(store, 1, 20, rng)
    apply_retention(store)
    state = store.state()
    assert state.table(0, "item") is None and state.table(1, "item") is not None
    assert not any(store.io.exists(f.path) for f in old_table.files)
    assert state.versions[0].model_removed and not state.versions[1].model_removed
    assert store.io.exists(state.versions[1].files["transform"].path)
    assert not state.garbage  # grace 0: purged
    frame = read_embeddings(store_uri, "item", version=0)
    assert frame["source_version"].unique().to_list() == [1]


def test_superseded_refresh_waits_for_the_grace_period(tmp_path):
    from bc_ray.store.store import RetentionPolicy, Store

    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=10)
    store = Store(uri, retention=RetentionPolicy(staging_grace_seconds=3600))
    first = store.state().table(0, "user")
    refresh_fake_tables(store, 0, 10, np.random.default_rng(2))
    state = store.state()
    assert {f.path for f in first.files} <= set(state.garbage)
    assert all(store.io.exists(f.path) for f in first.files)  # a reader of the old state is safe


def test_keeping_two_versions_serves_the_real_old_table(store_uri):
    store, _ = store_with_chain(store_uri, [8], rows=20, keep_versions=2)
    rng = np.random.default_rng(1)
    publish_fake_version(store, 6, rng)
    refresh_fake_tables(store, 1, 20, rng)
    frame = read_embeddings(store_uri, "user", version=0)
    assert frame["source_version"].unique().to_list() == [0]
    transformed = read_embeddings(store_uri, "user", version=0, prefer_stored=False)
    assert transformed["source_version"].unique().to_list() == [1]


def test_retention_from_the_environment_and_a_bad_value_named(tmp_path, monkeypatch):
    import pytest

    from bc_ray.exceptions import ConfigError
    from bc_ray.store.store import Store

    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=10)
    monkeypatch.setenv("BC_RAY_KEEP_VERSIONS", "3")
    assert Store(uri).retention.keep_versions == 3
    monkeypatch.setenv("BC_RAY_KEEP_VERSIONS", "three")
    assert read_embeddings(uri, "item", version=0).height == 10  # readers never apply it
    with pytest.raises(ConfigError, match="BC_RAY_KEEP_VERSIONS"):
        apply_retention(Store(uri))


def test_retention_that_fails_after_a_commit_never_fails_it(tmp_path, caplog):
    """A bucket that refuses deletes: the refresh that committed returns (a job failing there
    would be retried and do its work twice), it is said, and `bc-ray gc` catches up."""
    from typer.testing import CliRunner

    from bc_ray.cli.main import app
    from bc_ray.store.store import RetentionPolicy, Store

    uri = f"file://{tmp_path}/store"
    store_with_chain(uri, [8], rows=10)
    store = Store(uri, retention=RetentionPolicy(keep_versions=1, staging_grace_seconds=0))
    first = store.state().table(0, "user")
    real_delete = store.io.delete

    def denied(rel: str, *args, **kwargs) -> None:
        if not rel.startswith("embeddings/"):  # the Delta mirror's own deletes pass
            return real_delete(rel, *args, **kwargs)
        raise PermissionError(13, "AccessDenied: s3:DeleteObject")

    store.io.delete = denied
    refresh_fake_tables(store, 0, 10, np.random.default_rng(3))  # must not raise
    assert "retention did not run after this commit (PermissionError" in caplog.text
    assert store.state().table(0, "user").refresh_id != first.refresh_id
    assert all(store.io.exists(f.path) for f in first.files)
    store.io.delete = real_delete
    result = CliRunner().invoke(app, ["gc", "--store", uri, "--grace", "0", "--force"])
    assert result.exit_code == 0, result.output
    assert not any(store.io.exists(f.path) for f in first.files)


def test_a_candidate_whose_parent_is_no_longer_current_loses_its_model(store_uri):
    """Its job died between training and publishing, then another version landed: it can never
    be published (its parent moved), so its model goes like a rejected one's."""
    from bc_ray.exceptions import StoreError
    from bc_ray.store.versions import (
        Candidate,
        publish_version,
        register_candidate,
        rollback_version,
    )

    store, _ = store_with_chain(store_uri, [8], rows=10, keep_versions=3)
    rng = np.random.default_rng(4)
    orphan = register_candidate(store, Candidate(
        parent=0, dim=8, method="bc-aligner", spec={"hidden_dim": 8}, snapshot_id="s",
        cutoff=1.0, model=rng.bytes(64), transform=random_transform(rng, 8, 8), metrics={}))
    apply_retention(store)
    assert not store.state().version(orphan.version).model_removed  # its parent is current
    publish_fake_version(store, 8, rng)
    apply_retention(store)
    state = store.state()
    assert state.version(orphan.version).model_removed and state.version(0).status == "published"
    assert not store.io.exists(orphan.files["model"].path)
    rollback_version(store, 0)
    with pytest.raises(StoreError, match="model was removed by retention"):
        publish_version(store, orphan.version)


def test_a_path_named_again_gets_a_whole_grace_period_when_dropped_again():
    """A file a commit names again while it waits on the garbage list (a table re-pointed at
    it) must not be purged on its first stamp when it is dropped a second time."""
    from bc_ray.store.actions import RefreshPublished
    from bc_ray.store.state import FileRecord, StoreState

    def refresh(path: str) -> RefreshPublished:
        return RefreshPublished(
            version=0, entity="user", refresh_id=path, files=[FileRecord(path, 1, "0" * 64)],
            rows=1, dim=1, refreshed_at="2026-01-01T00:00:00+00:00", snapshot_id="s",
            cutoff=0.0, mode="full")

    state = StoreState()
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    for seq, (path, day) in enumerate(zip(["embeddings/a", "embeddings/b", "embeddings/a",
                                           "embeddings/c"], days)):
        refresh(path).apply(state, seq, f"{day}T00:00:00+00:00")
    assert state.garbage["embeddings/a"].startswith("2026-01-04")  # dropped again on day 4
    assert state.garbage["embeddings/b"].startswith("2026-01-03")
