"""Shared helpers for benchmark scripts: timing, tables, JSON output."""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

from bc_ray.experiments.provenance import code_version

OUT_DIR = os.environ.get("BC_RAY_BENCH_OUT", "bench-out")


def scratch_dir(prefix: str) -> str:
    """A temporary folder removed when the script exits (benchmark stores reach gigabytes)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` runs (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    head = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    lines = [f"## {title}", "", head,
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, data: dict, path: str | None = None) -> str:
    """`data`, with the machine it ran on and the code that ran (`code_version`), as
    `name`.json where every benchmark writes (or at `path`)."""
    path = path or os.path.join(OUT_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "code": code_version(), **data}
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    return path


def proc_status(field: str) -> int:
    """A memory field of this process's /proc status, in bytes (VmRSS now, VmHWM its peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) * 1024
