"""`bc-ray serve` in the foreground: run until SIGINT or SIGTERM, then stop what it started.

Ctrl-C reaches the whole process group, Ray's own processes included, so a plain
`serve.shutdown()` can wait forever on a controller that is already gone, and a Ray worker killed
under HAProxy leaves HAProxy holding the port. Shutdown here is bounded: Serve and Ray are asked
to stop within a deadline, then every process this command started (HAProxy included) that is
still alive is terminated, and the command exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

START_GRACE_S = 5.0  # a signal during start-up lets `serve.run` finish this long first
SERVE_DEADLINE_S = 10.0  # Serve's own shutdown (a replica hit by Ctrl-C can hang in it)
RAY_DEADLINE_S = 8.0  # then the local Ray; then leftovers get SIGTERM and, 3 s later, SIGKILL


class StopSignal:
    """SIGINT and SIGTERM, caught from the moment it is made: install it right after connecting
    to Ray (whose driver installs a SIGTERM handler that aborts the process), so a signal that
    arrives while Serve is still starting is kept and acted on once it is up. Later signals are
    absorbed, so a second Ctrl-C cannot interrupt the shutdown half way."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        self.received.append(signum)
        self._event.set()

    def wait(self, until: threading.Event | None = None) -> int | None:
        """Block until a signal came (at once if one already did) and return the first, or
        until `until` is set (None then)."""
        while not self._event.wait(0.2):
            if until is not None and until.is_set():
                return None
        return self.received[0]


def start_in_background(start: Callable[[], None]) -> tuple[threading.Event, list[BaseException]]:
    """Run `start` in a daemon thread, so a signal can stop a start-up that hangs: (set when
    it returned or failed, its error if it failed)."""
    done, failure = threading.Event(), []

    def run() -> None:
        try:
            start()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="bc-ray-serve-start", daemon=True).start()
    return done, failure


def stop_serving(app_name: str, started_cluster: bool) -> list[str]:
    """Delete the application (on a cluster this command joined), or shut Serve and the local
    Ray down (on one it started), each within its deadline; returns what had to be forced."""
    import psutil

    started = psutil.Process().children(recursive=True) if started_cluster else []
    forced: list[str] = []

    def stop_serve() -> None:
        from ray import serve

        if started_cluster:
            serve.shutdown()
        else:
            serve.delete(app_name)

    def stop_ray() -> None:
        import ray

        ray.shutdown()

    if not _within(stop_serve, SERVE_DEADLINE_S):
        forced.append(f"Serve did not stop within {SERVE_DEADLINE_S:g} s")
    if started_cluster and not _within(stop_ray, RAY_DEADLINE_S):
        forced.append(f"Ray did not stop within {RAY_DEADLINE_S:g} s")
    leftovers = [process for process in started if is_alive(process)]
    for process in leftovers:
        forced.append(f"{_name(process)} (pid {process.pid}) terminated")
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=3)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return forced


def _within(step: Callable[[], None], seconds: float) -> bool:
    """Run `step` in a daemon thread; False if it failed or is still running after `seconds`."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            step()
            outcome.append(True)
        except Exception as exc:  # noqa: BLE001 - a half-dead cluster fails in many ways
            logger.warning("stopping Serve: %s: %s", type(exc).__name__, exc)

    worker = threading.Thread(target=run, name="bc-ray-serve-shutdown", daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(outcome)


def is_alive(process) -> bool:
    """Running and not a zombie; a process may exit between any two questions about it."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(process) -> str:
    try:
        return process.name()
    except Exception:  # noqa: BLE001 - it may be gone already
        return "process"
