"""What each worker of a sharded bump must hold on a store, and what the bump's plan makes of it
(`train/worker_memory.py`): the cut `plan_owners` makes over the snapshot's degrees; per worker
its ID rows with their optimizer state, its alignment targets (the current version's width),
its CSR rows and one layer of its rows (the layer-wise passes hold two); and, per ID optimizer,
the memory each worker would ask Ray for, or the bump's refusal, on a local Ray cluster of this
machine with the given object store.

    python benchmarks/worker_shares.py --store file:///path/to/store [--workers 2]
        [--id-optimizer adam rowwise_adagrad] [--object-store-gb 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402

MB = 1 << 20


def shares(owners, degrees, spec, target_dim: int, optimizer: str) -> list[dict]:
    """Each worker's rows, part by part, and their sum as the bump's plan counts it."""
    from bc_ray.core.sparse_rows import id_state_floats
    from bc_ray.train.sharded import row_bytes
    from bc_ray.train.worker_memory import CSR_BYTES, worker_state_bytes

    state = worker_state_bytes(owners, degrees, row_bytes(spec, target_dim, optimizer))
    rows = []
    for rank in range(owners.workers):
        (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
        count = owners.num_rows(rank)
        ends = int(degrees[a:b].sum() + degrees[owners.num_users + c:owners.num_users + d].sum())
        rows.append({"id_optimizer": optimizer, "rank": rank, "rows": count, "edge_ends": ends,
                     "id_mb": count * (spec.hidden_dim
                                       + id_state_floats(optimizer, spec.hidden_dim)) * 4 / MB,
                     "targets_mb": count * target_dim * 4 / MB,
                     "csr_mb": CSR_BYTES * (ends + count) / MB, "state_mb": state[rank] / MB,
                     "layer_mb": count * spec.hidden_dim * 4 / MB})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--id-optimizer", nargs="+", default=["adam", "rowwise_adagrad"])
    parser.add_argument("--object-store-gb", type=float, default=3.0)
    args = parser.parse_args()
    import ray

    from bc_ray.exceptions import ConfigError
    from bc_ray.models.graphsage.spec import VersionSpec
    from bc_ray.partition.edge_files import EdgeFiles, count_degrees
    from bc_ray.store.snapshots import load_entities
    from bc_ray.store.store import Store
    from bc_ray.train.sharded import plan_owners, row_bytes
    from bc_ray.train.worker_memory import (
        PEAK_OVER_STATE,
        placeable,
        plan_worker_memory,
        worker_state_bytes,
    )

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             object_store_memory=int(args.object_store_gb * 2**30), logging_level=logging.ERROR)
    store = Store(args.store)
    state = store.state()
    version = state.version()
    entities = load_entities(store, state)
    files = EdgeFiles.of(store, state, entities.num_users, entities.num_items)
    degrees = count_degrees(files, 1.0, None)
    spec = VersionSpec.from_dict(version.spec)
    node_mb = max(n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"]) / MB
    rows = []
    for optimizer in args.id_optimizer:
        width = row_bytes(spec, version.dim, optimizer)
        owners = plan_owners(files, args.workers, width, degrees=degrees)
        try:
            planned = plan_worker_memory(owners, degrees, width, 1.0, ray.nodes(), True)
            verdict = f"each asks {planned.request / MB:,.0f}"
        except ConfigError:
            state = worker_state_bytes(owners, degrees, width)
            placed = placeable(1.0, int(PEAK_OVER_STATE * max(state)), ray.nodes())
            verdict = (f"refused: {placed} of {args.workers} placed; together "
                       f"{PEAK_OVER_STATE * sum(state) / MB:,.0f} against {node_mb:,.0f}")
        rows += [{**share, "plan": verdict} for share in shares(owners, degrees, spec,
                                                                version.dim, optimizer)]
    ray.shutdown()
    write_json("worker-shares", {"args": vars(args), "ray_memory_mb": node_mb, "results": rows})
    print_table(f"Each sharded worker's share, aligned to version {version.version} "
                f"({args.workers} workers of 1 CPU; Ray's memory here {node_mb:,.0f} MB; MB)",
                ["ID optimizer", "rank", "rows", "edge ends", "ID rows + state", "targets",
                 "CSR rows", "state", "a layer", "the bump's plan"],
                [[r["id_optimizer"], r["rank"], f"{r['rows']:,}", f"{r['edge_ends']:,}",
                  f"{r['id_mb']:,.0f}", f"{r['targets_mb']:,.0f}", f"{r['csr_mb']:,.0f}",
                  f"{r['state_mb']:,.0f}", f"{r['layer_mb']:,.0f}", r["plan"]] for r in rows])


if __name__ == "__main__":
    main()
