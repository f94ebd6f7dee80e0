"""Which code made a result: a number in RESULTS is traceable only to the commit that wrote it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bc_ray


def code_version() -> dict[str, object]:
    """The bc_ray release, and where it runs from its own git checkout, the commit and whether
    the code differed from it (`dirty`: changed or new files under bc_ray/, benchmarks/, jobs/;
    the result is not reproducible from the commit alone). Elsewhere (an installed wheel) the
    commit is None."""
    root = Path(bc_ray.__file__).resolve().parents[1]
    found: dict[str, object] = {"bc_ray": bc_ray.__version__, "commit": None, "dirty": None}
    try:
        # bc_ray's own checkout only: a wheel installed in a venv inside another project's
        # repository would otherwise be given that project's commit
        if Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root:
            return found
        commit = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--", "bc_ray", "benchmarks", "jobs")
    except (OSError, subprocess.SubprocessError):
        return found
    return {**found, "commit": commit, "dirty": bool(changes)}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout.strip()
