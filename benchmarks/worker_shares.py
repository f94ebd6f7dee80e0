"""What each worker of a sharded bump must hold on a store: the cut `plan_owners` makes over the
snapshot's degrees, and per worker its ID rows with their optimizer state, its alignment
targets (the current version's width), its CSR rows, and one layer of its rows (the layer-wise
passes hold two). No Ray: the degrees are counted by streaming the edge files in this process.

    python benchmarks/worker_shares.py --store file:///path/to/store [--workers 2]
                                       [--id-optimizer rowwise_adagrad]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402

MB = 1 << 20


def main() -> None:
    from bc_ray.core.sparse_rows import id_state_floats
    from bc_ray.models.graphsage.spec import VersionSpec
    from bc_ray.partition.edge_files import EdgeFiles
    from bc_ray.store.snapshots import load_entities
    from bc_ray.store.store import Store
    from bc_ray.train.sharded import plan_owners, row_bytes

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--id-optimizer", default="rowwise_adagrad")
    args = parser.parse_args()
    store = Store(args.store)
    state = store.state()
    version = state.version()
    entities = load_entities(store, state)
    files = EdgeFiles.of(store, state, entities.num_users, entities.num_items)
    degrees = np.zeros(files.num_nodes, dtype=np.int64)
    for index in range(len(files.files)):
        for users, items, _ in files.edges(index):
            degrees[:files.num_users] += np.bincount(users, minlength=files.num_users)
            degrees[files.num_users:] += np.bincount(items, minlength=files.num_items)
    spec = VersionSpec.from_dict(version.spec)
    owners = plan_owners(files, args.workers, row_bytes(spec, version.dim, args.id_optimizer),
                         degrees=degrees)
    rows = []
    for rank in range(args.workers):
        (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
        count = owners.num_rows(rank)
        ends = int(degrees[a:b].sum() + degrees[files.num_users + c:files.num_users + d].sum())
        share = {"rank": rank, "rows": count, "edge_ends": ends,
                 "id_mb": count * (spec.hidden_dim
                                   + id_state_floats(args.id_optimizer, spec.hidden_dim)) * 4 / MB,
                 "targets_mb": count * version.dim * 4 / MB,
                 "csr_mb": (8 * ends + 8 * (count + 1)) / MB,
                 "layer_mb": count * spec.hidden_dim * 4 / MB}
        share["state_mb"] = share["id_mb"] + share["targets_mb"] + share["csr_mb"]
        rows.append(share)
    write_json("worker-shares", {"args": vars(args), "results": rows})
    print_table(f"Each sharded worker's share ({args.workers} workers; MB)",
                ["rank", "rows", "edge ends", "ID rows + state", "targets", "CSR rows",
                 "state", "a layer"],
                [[r["rank"], f"{r['rows']:,}", f"{r['edge_ends']:,}", f"{r['id_mb']:,.0f}",
                  f"{r['targets_mb']:,.0f}", f"{r['csr_mb']:,.0f}", f"{r['state_mb']:,.0f}",
                  f"{r['layer_mb']:,.0f}"] for r in rows])


if __name__ == "__main__":
    main()
