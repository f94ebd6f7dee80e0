"""How a refresh stage runs on Ray Data: one dataset pass with a task per run of nodes, its
output either streamed to the layer builder as object references or written by the sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ray

from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.sink import EmbeddingSink
from bc_ray.refresh.tasks import LayerStage, SampledStage

STREAM_BLOCK_BYTES = 16 << 20


def stage_pass(fn: Callable, stage: LayerStage | SampledStage, config: RefreshConfig,
               stream: bool = False) -> ray.data.Dataset:
    """One Ray Data pass: a task per run, each yielding one batch per chunk of its nodes.

    Built from local items (`range` would add a read task per run) under its own context:
    without per-operator resource reservation, which with one operator only holds half the
    slots back (measured: the second task of a 2-CPU pass waited for the first), and with
    `stream`, blocks of about a chunk, so the builder assembles a layer while it is computed
    instead of receiving each task's rows as one block at its end."""
    count = len(stage.runs.bounds) - 1
    context = ray.data.DataContext.get_current()
    saved = context.op_resource_reservation_enabled, context.target_max_block_size
    context.op_resource_reservation_enabled = False
    if stream:
        context.target_max_block_size = STREAM_BLOCK_BYTES
    try:  # a dataset keeps a copy of the context it was created under
        runs = ray.data.from_items([{"id": run} for run in range(count)],
                                   override_num_blocks=count)
    finally:
        context.op_resource_reservation_enabled, context.target_max_block_size = saved
    return runs.map_batches(
        fn, fn_kwargs={"stage": stage}, batch_size=1, batch_format="numpy",
        compute=ray.data.TaskPoolStrategy(size=config.num_tasks),
        num_cpus=config.cpus_per_task, num_gpus=config.gpus_per_task)


def block_refs(dataset: ray.data.Dataset) -> Iterator[list[ray.ObjectRef]]:
    """The pass's output blocks as object references, as each is produced.

    `iter_internal_ref_bundles` is a Ray Data DeveloperAPI, kept here alone because no public
    API streams references: `iter_batches` would bring every block's rows to the driver (the
    layer builder, not the driver, is to hold a layer) and `to_arrow_refs` waits for the whole
    pass, so the builder could no longer assemble a layer while it is computed."""
    for bundle in dataset.iter_internal_ref_bundles():
        yield list(bundle.block_refs)


def write_pass(dataset: ray.data.Dataset, sink: EmbeddingSink, config: RefreshConfig) -> None:
    """The final pass into the sink, with the same concurrency and resources as its map, or Ray
    Data will not fuse the two (each task then writes the rows it computed)."""
    dataset.write_datasink(sink, concurrency=config.num_tasks,
                           ray_remote_args={"num_cpus": config.cpus_per_task,
                                            "num_gpus": config.gpus_per_task})
