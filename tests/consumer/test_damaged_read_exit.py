"""A consumer that hits a damaged file exits 1 after the named `CorruptFileError`, never with an
abort at interpreter exit, and leaves no native thread of its read behind (issue 25, item 18).

Real consumer processes (the public API in `python -c`), a real damaged table (one flipped bit),
real CPU contention (two busy-loop processes on the machine's cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.helpers import store_with_chain

READS = 50
READ = ("import sys, bc_ray; bc_ray.read_embeddings(sys.argv[1], 'item', version=0)")
SCAN = ("import sys, bc_ray; bc_ray.scan_embeddings(sys.argv[1], 'item', version=0).collect()")
NATIVE_THREADS = """
import os, sys, bc_ray
from bc_ray.exceptions import CorruptFileError
try:
    bc_ray.scan_embeddings(sys.argv[1], 'item', version=0).collect()
except CorruptFileError:
    pass
names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]
print(sorted(names))
"""


def damage(store) -> str:
    """Flip one bit in the middle of the ver-1 item file; returns its path."""
    path = store.io.path(store.state().table(1, "item").files[0].path)
    data = bytearray(store.io.read_bytes(store.state().table(1, "item").files[0].path))
    data[len(data) // 2] ^= 1 << 3
    store.io.fs.pipe_file(path, bytes(data))
    return path


@contextmanager
def busy_cores(count: int = 2, seconds: int = 300):
    """`count` busy-loop processes, each ending by itself after `seconds` at the latest."""
    loops = [subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + "
                               f"{seconds}\nwhile time.time() < end: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def consumer(code: str, uri: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)


def test_damaged_reads_under_load_exit_1_never_abort(tmp_path):
    uri = f"file://{tmp_path}/store"
    store, _ = store_with_chain(uri, [8, 6], rows=100)
    path = damage(store)
    codes = [READ if i % 2 else SCAN for i in range(READS)]
    with busy_cores(), ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda code: consumer(code, uri), codes))
    outcomes = [(r.returncode, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
                for r in results]
    aborted = [o for o in outcomes if o[0] != 1]
    assert not aborted, aborted
    for _, last_line in outcomes:
        assert last_line.startswith("bc_ray.exceptions.CorruptFileError: file "), last_line
        assert path in last_line


def test_a_damaged_s3_scan_starts_no_aws_sdk_thread(s3_uri):
    """The lazy reader verifies files through the store's fsspec handle: no pyarrow S3
    filesystem, so no AWS C++ SDK event-loop thread is left for interpreter exit."""
    store, _ = store_with_chain(s3_uri, [8, 6], rows=100)
    damage(store)
    done = consumer(NATIVE_THREADS, s3_uri)
    assert done.returncode == 0, done.stderr
    assert "AwsEventLoop" not in done.stdout, done.stdout
