"""A commit whose reply is lost on the way back from S3: the client retries the put-if-absent
write, and S3 answers the retry "exists" because the first try landed. That entry is the
writer's own, read back and taken as committed; before, it was taken for another writer's, and
the commit was made again as the next entry (a refresh twice, its own live files sent to
garbage; a compaction that deleted the staged segments its landed entry named)."""

from __future__ import annotations

import uuid

import boto3
import numpy as np
import pytest

from bc_ray.exceptions import CommitConflictError, CommitStateUnknownError
from bc_ray.io import FileIO, StorageOptions
from bc_ray.store.log import VersionLog, entry_path
from bc_ray.store.store import RetentionPolicy, Store
from tests.helpers import publish_fake_version, refresh_fake_tables
from tests.store.faulty_s3 import FaultyS3


@pytest.fixture
def faulty(s3_server):
    proxy = FaultyS3(s3_server)
    yield proxy
    proxy.close()


def _store(faulty: FaultyS3) -> Store:
    bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=faulty.endpoint).create_bucket(Bucket=bucket)
    return Store(f"s3://{bucket}/store",
                 StorageOptions(endpoint_url=faulty.endpoint, region="us-east-1"),
                 retention=RetentionPolicy(keep_versions=1, staging_grace_seconds=0))


def test_a_refresh_whose_commit_reply_is_lost_commits_once(faulty):
    store = _store(faulty)
    rng = np.random.default_rng(61)
    publish_fake_version(store, 8, rng)
    seq = store.state().seq
    faulty.drop_put_reply = entry_path(seq + 1)
    refresh_fake_tables(store, 0, 30, rng)
    assert faulty.dropped == 1, "the fault never reached the commit"
    state = store.state()
    refreshes = [e for _, e in store.log.entries(seq + 1)
                 if any(a.to_json()["type"] == "refresh.published" for a in e.actions)]
    assert len(refreshes) == 1
    for entity in ("user", "item"):
        paths = {f.path for f in state.table(0, entity).files}
        assert not paths & set(state.garbage)  # a second commit sent its own files there
        assert all(store.io.exists(path) for path in paths)


def test_a_lost_reply_is_told_from_another_writers_entry(tmp_path):
    """Read back after a failed write: these bytes are the writer's own commit, other bytes
    are a conflict, and no entry at all leaves the outcome unknown."""
    io = FileIO(f"file://{tmp_path}/store")
    log = VersionLog(io)
    run = [{"type": "run.recorded", "run_id": "r0", "kind": "test", "status": "ok"}]
    real_create = io.create

    def lands_then_fails(rel: str, data: bytes) -> None:
        real_create(rel, data)
        raise FileExistsError(rel)  # the retried write answered by the first

    io.create = lands_then_fails
    assert log.commit(log.read_state(), run, writer="a").seq == 0
    io.create = real_create
    assert [seq for seq, _ in log.entries()] == [0]

    with pytest.raises(CommitConflictError):  # entry 0 is taken: another writer's bytes
        log.commit(log.read_state().__class__(), run, writer="b")

    def never_lands(rel: str, data: bytes) -> None:
        raise ConnectionResetError("reset by peer")

    io.create = never_lands
    with pytest.raises(CommitStateUnknownError, match="may or may not have landed"):
        log.commit(log.read_state(), run, writer="a")


def test_a_failed_write_whose_entry_cannot_be_read_back_is_of_unknown_outcome(tmp_path):
    """The write timed out (it may still land) and the read-back is refused too: the outcome
    is unknown, so the writer's staged files are kept (gc decides later), never removed."""
    from bc_ray.exceptions import StorageAccessError
    from bc_ray.store.store import Store

    store = Store(f"file://{tmp_path}/store")
    staged = f"{store.new_prefix('r')}/part.bin"
    store.io.write_bytes(staged, b"x")
    real_read = store.io.read_bytes
    written: list[str] = []

    def times_out(rel: str, data: bytes) -> None:
        written.append(rel)
        raise TimeoutError("the PUT timed out")

    def throttled(rel: str) -> bytes:
        if rel in written:  # the entry's read-back
            raise StorageAccessError(f"cannot read {rel}: SlowDown")
        return real_read(rel)

    store.io.create, store.io.read_bytes = times_out, throttled
    run = {"type": "run.recorded", "run_id": "r0", "kind": "test", "status": "ok"}
    with pytest.raises(CommitStateUnknownError):
        store.commit(lambda _state: [run], staged=staged.rsplit("/", 1)[0])
    assert store.io.exists(staged)
