"""A layer over node ranges with each range's halo read in place (`halo.Halo`, the refresh's
way) against the same layer with the halo first copied into one source matrix per range (the
refresh's way before): compute seconds for every range of one layer, on one thread, and the
matrix each task copied. Both read the same sources; their rows must agree to 1e-5.

A synthetic user-item graph (users uniform, items by a power law: the most popular holds about
1 % of the edges, as in the 100M benchmark store), 64 dims, mean aggregation, chunks of 32,768
rows as `RefreshConfig.block_nodes`. Each variant runs three times, interleaved; the table keeps
their means.

    python benchmarks/bench_halo.py [--edges 5000000] [--partitions 8,32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.graph import Adjacency, shared_tensor  # noqa: E402
from bc_ray.models.graphsage.model import LayerStack, LinearSAGE  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.refresh.halo import Halo  # noqa: E402
from bc_ray.refresh.ranges import (  # noqa: E402
    NodeRanges,
    Outgoing,
    RangeGraph,
    find_hubs,
    range_sources,
    split_range,
)

DIM, CHUNK, REPEATS = 64, 32_768, 3


def graph_csr(edges: int) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric CSR (users, then items) of a synthetic graph of about `edges` edges."""
    rng = np.random.default_rng(0)
    users, items = edges // 5, edges // 50
    weights = (np.arange(items) + 1.0) ** -0.75
    keys = np.unique(rng.integers(0, users, edges) * items
                     + rng.choice(items, edges, p=weights / weights.sum()))
    user, item = keys // items, keys % items + users
    rows, cols = np.concatenate([user, item]), np.concatenate([item, user])
    order = np.lexsort((cols, rows))
    crow = np.zeros(users + items + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=users + items), out=crow[1:])
    return crow, cols[order]


def joined(graph: RangeGraph, hubs: list[np.ndarray], pieces: list[np.ndarray]) -> torch.Tensor:
    """The source matrix `[hubs; pieces...]` each task built before, whole blocks taken."""
    matrix = np.empty((graph.num_sources, DIM), dtype=np.float32)
    at = 0
    for part in hubs:
        matrix[at:at + part.shape[0]] = part
        at += part.shape[0]
    for q, part in enumerate(pieces):
        stop = int(graph.cuts[q + 1])
        if graph.whole[q]:
            ids = graph.source_ids[int(graph.cuts[q]):stop] - graph.bounds[q]
            np.take(part, ids, axis=0, out=matrix[at:stop])
        else:
            matrix[at:stop] = part
        at = stop
    return torch.from_numpy(matrix)


def layer_joined(stack: LayerStack, graph: RangeGraph, own: np.ndarray, hubs, pieces) -> tuple:
    x_src, x_own = joined(graph, hubs, pieces), shared_tensor(own)
    out = []
    for first in range(0, graph.num_rows, CHUNK):
        last = min(first + CHUNK, graph.num_rows)
        crow = torch.from_numpy(graph.crow[first:last + 1] - graph.crow[first])
        cols = torch.from_numpy(graph.cols[int(graph.crow[first]):int(graph.crow[last])])
        adjacency = Adjacency.from_csr(crow, cols, last - first, graph.num_sources)
        out.append(stack.layer(0, x_src, adjacency, x_own[first:last]))
    return torch.cat(out), x_src.numel() * 4


def layer_in_place(stack: LayerStack, graph: RangeGraph, own: np.ndarray, hubs,
                   pieces) -> tuple:
    halo, x_own = Halo.of(graph, hubs, pieces, DIM), shared_tensor(own)
    out = [stack.combine(0, halo.aggregate(slice(first, min(first + CHUNK, graph.num_rows)),
                                           "mean"), x_own[first:first + CHUNK])
           for first in range(0, graph.num_rows, CHUNK)]
    return torch.cat(out), 0


def one_count(crow: np.ndarray, cols: np.ndarray, parts: int, stack: LayerStack) -> dict:
    degrees = np.diff(crow)
    ranges = NodeRanges.balanced(degrees, parts)
    hubs = find_hubs(degrees, ranges)
    split = [split_range(crow[a:b + 1] - crow[a], cols[crow[a]:crow[b]], a, b, hubs, ranges)
             for a, b in (ranges.range(p) for p in range(parts))]
    layer = np.random.default_rng(1).standard_normal((degrees.size, DIM)).astype(np.float32)
    layer.setflags(write=False)  # as the object store hands its objects out
    outgoing = [Outgoing.of(*ranges.range(q), hubs, [pieces[q] for _, pieces in split])
                for q in range(parts)]
    sent = [outgoing[p].pieces(layer[slice(*ranges.range(p))]) for p in range(parts)]
    tasks = []
    for p, (graph, _) in enumerate(split):
        sources = range_sources(graph.whole, [s[1] for s in sent], [s[0] for s in sent],
                                [s[2 + p] for s in sent])
        tasks.append((graph, sent[p][0], sources[:parts], sources[parts:]))
    seconds = {"joined": 0.0, "in place": 0.0}
    copied, difference = 0, 0.0
    with torch.no_grad():
        for _ in range(REPEATS):
            for name, run in (("joined", layer_joined), ("in place", layer_in_place)):
                started = time.perf_counter()
                results = [run(stack, *task) for task in tasks]
                seconds[name] += (time.perf_counter() - started) / REPEATS
                if name == "joined":
                    expected = [r[0] for r in results]
                    copied = max(r[1] for r in results)
                else:
                    difference = max(difference, max(float((r[0] - e).abs().max())
                                                     for r, e in zip(results, expected)))
    return {"partitions": parts, "edge_ends": int(cols.size), "nodes": int(degrees.size),
            "joined_s": seconds["joined"], "in_place_s": seconds["in place"],
            "ratio": seconds["in place"] / seconds["joined"],
            "largest_copy_mb": copied / 2**20, "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=5_000_000)
    parser.add_argument("--partitions", default="8,32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = VersionSpec(num_layers=2, hidden_dim=DIM)
    stack = LayerStack(spec, torch.nn.ModuleList([LinearSAGE(DIM, DIM), LinearSAGE(DIM, DIM)]),
                       None).eval()
    crow, cols = graph_csr(args.edges)
    rows = [one_count(crow, cols, int(p), stack) for p in args.partitions.split(",")]
    write_json("halo", {"args": vars(args), "results": rows})
    print_table(f"One layer over node ranges, every range, one thread ({cols.size:,} edge ends, "
                f"{crow.size - 1:,} nodes; mean of {REPEATS})",
                ["P", "halo joined, s", "read in place, s", "in place vs joined",
                 "largest matrix copied, MB", "max |diff|"],
                [[r["partitions"], r["joined_s"], r["in_place_s"], r["ratio"],
                  r["largest_copy_mb"], f"{r['max_abs_difference']:.1e}"] for r in rows])


if __name__ == "__main__":
    main()
