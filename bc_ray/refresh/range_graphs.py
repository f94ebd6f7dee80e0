"""Range graphs built by Ray tasks from the snapshot's edge files, streamed batch by batch: no
process (the driver included) ever holds the whole edge list or the whole CSR.

Two passes over the files: one task per file counts degrees (and checks the file's sha256,
streamed: `partition.edge_files`), which the driver adds up to plan the ranges; then one task
per file sends every range the ends in its rows (an 8-byte key each: `edge_shuffle.py`), and
one task per range builds its CSR from them and sends every other range the ids of the rows it
will need of it.
"""

from __future__ import annotations

import numpy as np
import ray

from bc_ray.core.node_rows import drained, rows_of_keys
from bc_ray.partition.task_memory import HEADROOM
from bc_ray.refresh.ranges import NodeRanges, split_range
from bc_ray.refresh.sizing import build_bytes


@ray.remote
def _range_graph_task(ranges: NodeRanges, hubs: np.ndarray, part: int, *pieces) -> tuple:
    """(what it found, range `part`'s graph, and for each range q the ids of q's rows it
    needs), from its ends as every file's shuffle task sent them (`edge_shuffle.RangeEnds`,
    read where they lie in the object store). What it found: the graph's sizes and,
    incrementally, the range's nodes with new edges ("touched", local rows)."""
    start, stop = ranges.range(part)
    num_nodes = int(ranges.bounds[-1])
    touched = np.zeros(stop - start, dtype=bool)
    for piece in pieces:
        touched[piece.touched] = True
    crow, neighbours = rows_of_keys(drained([piece.keys for piece in pieces]), stop - start,
                                    num_nodes)
    graph, outgoing = split_range(crow, neighbours, start, stop, hubs, ranges)
    found = {"sources": graph.num_sources, "bytes": graph.nbytes, "whole": graph.whole,
             "touched": np.flatnonzero(touched)}
    return (found, graph, *outgoing)


def build_range_graphs(ends: list[list[ray.ObjectRef]], ranges: NodeRanges, hubs: np.ndarray,
                       cpus: float, degrees: np.ndarray
                       ) -> tuple[list[dict], list[ray.ObjectRef], list[list[ray.ObjectRef]]]:
    """(what each range's task found (`_range_graph_task`) and what it was planned to hold
    ("build_bytes"), graph refs by range, pieces[p][q]: the ids of q's rows range p needs),
    from `ends[p]`, range p's ends as the shuffle sent them (`edge_shuffle.shuffle_ends`).
    Each task asks Ray for the memory it holds (`sizing.range_bytes`' build)."""
    parts = len(ranges)
    ranges_ref, hubs_ref = ray.put(ranges), ray.put(hubs)
    outputs, holds = [], []
    for part in range(parts):
        start, stop = ranges.range(part)
        holds.append(build_bytes(int(degrees[start:stop].sum()), stop - start, degrees.size))
        task = _range_graph_task.options(num_cpus=cpus, num_returns=parts + 2,
                                         memory=int(HEADROOM * holds[-1]),
                                         scheduling_strategy="SPREAD")
        outputs.append(task.remote(ranges_ref, hubs_ref, part, *ends[part]))
    sizes = [{**found, "build_bytes": held}
             for found, held in zip(ray.get([o[0] for o in outputs]), holds)]
    return sizes, [o[1] for o in outputs], [o[2:] for o in outputs]
