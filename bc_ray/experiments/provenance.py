"""Which code made a result: a number in RESULTS is traceable only to the commit that wrote it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bc_ray


def code_version() -> dict[str, object]:
    """The bc_ray release, and where it runs from a git checkout, the commit and whether the
    working tree differed from it (`dirty`: the result is not reproducible from the commit
    alone). Outside a checkout (an installed wheel) the commit is None."""
    root = Path(bc_ray.__file__).resolve().parents[1]
    found: dict[str, object] = {"bc_ray": bc_ray.__version__, "commit": None, "dirty": None}
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "bc_ray",
                       "benchmarks", "jobs")
    except (OSError, subprocess.SubprocessError):
        return found
    return {**found, "commit": commit, "dirty": bool(changes)}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout.strip()
