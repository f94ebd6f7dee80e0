"""`bc-ray refresh`: recompute and publish ver-k embeddings with Ray Data (= `jobs/refresh.py`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bc_ray.cli.common import JsonOption, StoreOption, default_of, open_store
from bc_ray.cli.output import emit
from bc_ray.refresh.config import RefreshConfig
from bc_ray.render import key_values


NUM_TASKS_HELP = ("Inference tasks running at once (Ray Data task slots) in a refresh not split "
                  "into node ranges; a split one runs as many range tasks as the CPUs hold "
                  "(--cpus-per-task each).")


def refresh(
    store: StoreOption,
    full: Annotated[bool, typer.Option("--full", help="Recompute every node.")] = False,
    incremental: Annotated[bool, typer.Option(
        "--incremental", help="Recompute only nodes whose L-hop neighbourhood changed (falls "
                              "back to full, with the reason logged, when it cannot).")] = False,
    inference: Annotated[str, typer.Option(help="layerwise or sampled.")] = default_of(
        RefreshConfig, "inference"),
    num_tasks: Annotated[int, typer.Option(help=NUM_TASKS_HELP)] = default_of(
        RefreshConfig, "num_tasks"),
    cpus_per_task: Annotated[float, typer.Option(help="CPUs per inference task.")] = default_of(
        RefreshConfig, "cpus_per_task"),
    num_actors: Annotated[Optional[int], typer.Option(
        hidden=True, help="The old name of --num-tasks.")] = None,
    cpus_per_actor: Annotated[Optional[float], typer.Option(
        hidden=True, help="The old name of --cpus-per-task.")] = None,
    use_gpu: Annotated[bool, typer.Option(
        "--use-gpu", help="One GPU per inference task: GraphSAGE's layer and sampled stages "
                          "compute on it (not with --partitions).")] = default_of(
        RefreshConfig, "use_gpu"),
    block_nodes: Annotated[int, typer.Option(
        help="Nodes per chunk (one output block each).")] = default_of(
        RefreshConfig, "block_nodes"),
    partitions: Annotated[Optional[int], typer.Option(
        help="Split the layer-wise refresh into this many node ranges: each task holds its "
             "range's rows of the graph and of each layer's halo, never a whole layer, and "
             "caches its rows of every layer, so the next refresh over ranges is incremental "
             "(whatever its count). 0: unpartitioned. Default: unpartitioned while twice what "
             "it holds on one node fits the largest node, else the fewest ranges that fit.")
    ] = None,
    placement_timeout: Annotated[float, typer.Option(
        help="Seconds to wait, on a cluster that autoscales with no node that can run a task, "
             "for the one its autoscaler starts (the refresh is sized by the nodes alive); "
             "without an autoscaler, or with 0, such a refresh is refused at once.")] = default_of(
        RefreshConfig, "placement_timeout_s"),
    address: Annotated[Optional[str], typer.Option(help="Ray address (default: RAY_ADDRESS or "
                                                        "a local cluster).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every user and item embedding with the current model, publish atomically.

    Default: incremental when the previous refresh allows it, else full."""
    from bc_ray.cluster import connect
    from bc_ray.refresh.warm import start_task_processes

    if full and incremental:
        raise typer.BadParameter("choose one of --full and --incremental")
    mode = "full" if full else "incremental" if incremental else "auto"
    config = RefreshConfig(
        store=store, mode=mode, inference=inference,
        num_tasks=_renamed(num_tasks, num_actors, "num_tasks"),
        cpus_per_task=_renamed(cpus_per_task, cpus_per_actor, "cpus_per_task"),
        use_gpu=use_gpu, block_nodes=block_nodes, partitions=partitions,
        placement_timeout_s=placement_timeout)
    _check_refreshable(store)
    connect(address)
    # The tasks' processes start (and import torch) while this one imports the refresh.
    warming = start_task_processes(config)
    from bc_ray.refresh.job import run_refresh

    outcome = run_refresh(config, warming=warming)
    summary = {"version": outcome.version, "refresh_id": outcome.refresh_id,
               "mode": outcome.mode, **outcome.stats}
    emit(summary, as_json, key_values(summary))


def _check_refreshable(store: str) -> None:
    """What refuses a refresh without a cluster, said before one starts: a published version,
    and a family that does not load here (what to install)."""
    from bc_ray.core.registry import version_family
    from bc_ray.store.versions import check_refreshable

    state = open_store(store).written_state()
    check_refreshable(state)
    version_family(state.version())


def _renamed(value: float, old_value: float | None, name: str) -> float:
    """The value of an option that has an older, hidden name: the old name counts only where the
    new one was left at its default, and the two may not disagree."""
    default = default_of(RefreshConfig, name)
    if old_value is None or old_value == value:
        return value
    if value != default:
        new = "--" + name.replace("_", "-")
        raise typer.BadParameter(f"{new} {value} and its old name (given {old_value}) disagree; "
                                 f"give {new} alone")
    return old_value
