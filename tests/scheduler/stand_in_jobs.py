"""Stand-ins for the scheduler's jobs, run as real processes: `python` for a scheduler whose
train jobs land a version (named by the job's --run-name, as `bc-ray train` names it) and then
exit with a chosen status, and the part of the Jobs API the scheduler uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from bc_ray.store.store import Store
from bc_ray.store.versions import Candidate, publish_version, register_candidate
from tests.helpers import random_transform

ROOT = Path(__file__).resolve().parents[2]  # where `tests.` imports from


def interpreter(folder: Path, exit_code: int) -> str:
    """An executable that stands in for the jobs' Python: a train job lands a version."""
    path = folder / f"python-{exit_code}"
    path.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m "
                    f"tests.scheduler.stand_in_jobs {exit_code} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


class LocalJobs:
    """The Jobs API's part the scheduler uses; each job's command really runs."""

    def __init__(self) -> None:
        self.ran: dict[str, int] = {}

    def submit(self, submission_id: str, entrypoint: str, runtime_env: dict | None) -> None:
        self.ran[submission_id] = subprocess.run(entrypoint, shell=True, timeout=120).returncode

    def status(self, submission_id: str) -> str:
        code = self.ran.get(submission_id)
        return "MISSING" if code is None else "SUCCEEDED" if code == 0 else "FAILED"

    def logs_tail(self, submission_id: str) -> str:
        return ""

    def exit_code(self, submission_id: str) -> int | None:
        return self.ran.get(submission_id)

    def stop(self, submission_id: str) -> None:
        return None


def _last(flag: str, args: list[str]) -> str:
    """A flag's value as the CLI takes it: its last occurrence wins."""
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag][-1]


def _land_a_version(args: list[str]) -> None:
    store = Store(_last("--store", args))
    state = store.state()
    rng = np.random.default_rng(len(state.versions))
    parent = state.current_version
    record = register_candidate(store, Candidate(
        parent=parent, dim=8, method="bc-aligner", spec={"hidden_dim": 8}, snapshot_id="s",
        cutoff=1.0, model=rng.bytes(64),
        transform=None if parent is None else random_transform(rng, state.version(parent).dim, 8),
        metrics={"run_name": _last("--run-name", args)}))
    publish_version(store, record.version)


if __name__ == "__main__":  # <exit code> -m bc_ray.cli.main <step> --store URI ...
    code, step, args = int(sys.argv[1]), sys.argv[4], sys.argv[5:]
    if step == "train":
        _land_a_version(args)
    sys.exit(code)
