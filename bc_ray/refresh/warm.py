"""The refresh tasks' processes, started before the driver needs them.

A Ray job's worker processes start with the job and import torch and the stages' code (~2 s each
on a busy 2-core node), and Ray reuses them for every later task of the job. This module imports
neither torch nor the stages, so a job's entry point can start them as soon as it is connected,
before its own imports: the workers' start then overlaps the driver's (`bc-ray refresh` does),
and the refresh itself starts them while it reads the snapshot when nobody did.
"""

from __future__ import annotations

import ray

from bc_ray.refresh.config import RefreshConfig


@ray.remote
def _warm() -> str:
    import ray.data  # noqa: F401  (the stages' task code and what it imports)

    import bc_ray.refresh.edge_shuffle  # noqa: F401  (the partitioned refresh's tasks)
    import bc_ray.refresh.range_graphs  # noqa: F401
    import bc_ray.refresh.range_stages  # noqa: F401
    import bc_ray.refresh.tasks  # noqa: F401

    return ray.get_runtime_context().get_node_id()


def start_task_processes(config: RefreshConfig) -> list[ray.ObjectRef]:
    """One process per task slot of `config`, in the tasks' shape (CPUs and GPUs per task)."""
    warm = _warm.options(num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task,
                         scheduling_strategy="SPREAD")
    return [warm.remote() for _ in range(config.num_tasks)]


def release(warming: list[ray.ObjectRef]) -> None:
    """Cancel warm-ups not done yet: the work was done (or failed) without them, and a
    long-lived driver must not leave them queued. One already running is importing: a plain
    cancel interrupts the import and leaves the process, which Ray reuses, with half-imported
    modules (a later Ray Data task there failed on a circular import of ray.data), so its
    process is killed instead (`force`)."""
    if not warming:
        return
    for ref in ray.wait(warming, num_returns=len(warming), timeout=0)[1]:
        ray.cancel(ref, force=True)
