"""Giving freed memory back to the operating system after a large transient read.

Arrow's allocator (mimalloc) and glibc's malloc both keep freed pages for reuse; after a
process has streamed a few hundred MB of Parquet once, those pages stay in its resident memory
for the rest of its life. A long-lived process (a training worker, a refresh driver) that will
not read that much again returns them here: 0.2 GB of a training worker's 0.5 GB after it
streamed a 3M-edge file (`train/sharded.py`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import pyarrow as pa


def return_freed_memory() -> None:
    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc is None:
        return
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def private_bytes() -> int:
    """This process's private resident memory (RssAnon: without file pages and shared memory,
    such as a mapped model or the object store); 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status
                        if line.startswith("RssAnon:"))
    except (OSError, StopIteration):
        return 0


class PeakWatch:
    """The peak of `private_bytes` between two calls of `take`, sampled by a daemon thread
    every `interval` seconds: a long stage's transient, which its end does not show. A lower
    bound: the thread needs the GIL, so a transient within one call that holds it is missed
    (numpy's and torch's large operations let it go)."""

    def __init__(self, interval: float = 0.05) -> None:
        self._peak = private_bytes()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True,
                                        name="bc-ray-peak-watch")
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            now = private_bytes()
            with self._lock:
                self._peak = max(self._peak, now)

    def take(self) -> int:
        """The peak since the last call (or the start); the next one starts from now."""
        now = private_bytes()
        with self._lock:
            peak, self._peak = max(self._peak, now), now
        return peak

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
