"""The version log: put-if-absent commits, folding, checkpoints, and racing writers."""

import multiprocessing
import threading

import numpy as np
import pytest

from bc_ray.exceptions import CommitConflictError
from bc_ray.io import FileIO
from bc_ray.store.log import HINT, VersionLog, checkpoint_path, entry_path
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store
from tests.helpers import publish_fake_version, refresh_fake_tables


def _run(i: int) -> dict:
    return {"type": "run.recorded", "run_id": f"r{i}", "kind": "test", "status": "ok"}


def test_state_is_the_fold_of_the_log_with_checkpoints(store_uri):
    io = FileIO(store_uri)
    log = VersionLog(io, checkpoint_interval=10)
    state = log.read_state()
    for i in range(25):
        state = log.commit(state, [_run(i)], writer="test")
    assert io.exists(checkpoint_path(10)) and io.exists(checkpoint_path(20))
    assert int(io.read_bytes(HINT).decode().split(":")[1].strip(" }")) == 20
    fresh = VersionLog(io).read_state()
    assert fresh.seq == 24 and sorted(fresh.runs) == sorted(f"r{i}" for i in range(25))
    # A lost hint only costs reads: the fold from scratch is the same state.
    io.delete(HINT)
    assert VersionLog(io).read_state().to_dict() == fresh.to_dict()


def test_racing_threads_exactly_one_wins(store_uri):
    io = FileIO(store_uri)
    log = VersionLog(io)
    base = log.read_state()
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            VersionLog(FileIO(store_uri)).commit(base, [_run(i)], writer=f"t{i}")
            outcomes.append("won")
        except CommitConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert log.read_state().seq == 0 and not io.exists(entry_path(1))


def _writer(uri: str, writer: int, commits: int, queue) -> None:
    log = VersionLog(FileIO(uri))
    for i in range(commits):
        log.commit_with_retry(lambda _s, i=i: [_run(writer * 1000 + i)], writer=str(writer),
                              retries=200)
    queue.put(writer)


@pytest.mark.parametrize("processes", [3])
def test_racing_processes_lose_nothing(store_uri, processes):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(store_uri, w, 5, queue)) for w in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    state = VersionLog(FileIO(store_uri)).read_state()
    expected = {f"r{w * 1000 + i}" for w in range(processes) for i in range(5)}
    assert set(state.runs) == expected and state.seq == len(expected) - 1


def test_a_checkpoint_with_keys_from_a_newer_bc_ray_is_read(tmp_path):
    """Consumers upgrade after the jobs that write: keys this bc_ray does not know are left out."""
    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(0)
    refresh_fake_tables(store, publish_fake_version(store, 4, rng), rows=3, rng=rng)
    written = store.state().to_dict()
    newer = {**written, **{kind: {k: {**v, "from_a_newer_bc_ray": 1} for k, v in
                                  written[kind].items()}
                           for kind in ("snapshots", "versions", "tables")}}
    assert StoreState.from_dict(newer).to_dict() == written


def test_an_unreadable_checkpoint_is_read_around(store_uri, caplog):
    """A checkpoint this bc_ray cannot read (damaged, or of a newer shape) costs only reads:
    the newest earlier one is folded from, and it is said once."""
    io = FileIO(store_uri)
    log = VersionLog(io, checkpoint_interval=10)
    state = log.read_state()
    for i in range(22):
        state = log.commit(state, [_run(i)], writer="test")
    io.delete(checkpoint_path(20))
    io.create(checkpoint_path(20), b'{"seq": 20}')  # JSON, but not a state's
    for _ in range(2):
        fresh = VersionLog(io).read_state()
        assert fresh.seq == 21 and sorted(fresh.runs) == sorted(f"r{i}" for i in range(22))
    assert caplog.text.count("unreadable (KeyError") == 1
    assert "00000000000000000020.checkpoint.json" in caplog.text
    for seq in range(10):  # checkpoint 10 is what it folds from, not the log's start
        io.delete(entry_path(seq))
    assert VersionLog(io).read_state().to_dict() == fresh.to_dict()


def test_a_checkpoint_that_cannot_be_written_never_fails_its_commit(tmp_path, caplog):
    """The entry has landed when its checkpoint or hint fails (a full disk, a throttled PUT):
    the commit returns, it is said, and reads fold from the entries."""
    io = FileIO(f"file://{tmp_path}/store")
    log = VersionLog(io, checkpoint_interval=2)
    state = log.read_state()

    def full_disk(rel: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    io.replace = full_disk
    for i in range(3):
        state = log.commit(state, [_run(i)], writer="test")
    assert state.seq == 2 and "checkpoint 2 of" in caplog.text
    assert "No space left on device" in caplog.text
    assert VersionLog(FileIO(io.uri)).read_state().to_dict() == state.to_dict()
