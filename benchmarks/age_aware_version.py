"""Publish an untrained age-aware GraphSAGE (`cold_start_mixing`) as the next version of a
store, aligned to the current one by the identity, so that a refresh benchmark can embed an
age-aware model of a large ingested store without training one first (a refresh's time and
memory do not depend on the weights). Use it on a copy (`cp -al STORE COPY`), not a store
anyone serves.

    python benchmarks/age_aware_version.py --store DIR [--hidden 64] [--layers 2]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bc_ray.core.graph import build_graph  # noqa: E402
from bc_ray.models.graphsage.model import build_model  # noqa: E402
from bc_ray.models.graphsage.serialization import model_to_bytes  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.store.snapshots import load_entities  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.store.versions import Candidate, publish_version, register_candidate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a local store's folder")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    store = Store(f"file://{os.path.abspath(args.store)}")
    state = store.state()
    current = state.version() if state.current_version is not None else None
    entities = load_entities(store, state)  # the model's tables are sized by them; no edges
    torch.manual_seed(0)
    spec = VersionSpec(num_layers=args.layers, hidden_dim=args.hidden, cold_start_mixing=True)
    model = build_model(spec, build_graph(entities, entities.edges, now=1.0)).eval()
    transform = None
    if current is not None:  # B_k = identity on the shared width
        transform = (np.eye(current.dim, spec.output_dim, dtype=np.float32),
                     np.zeros(current.dim, dtype=np.float32))
    record = register_candidate(store, Candidate(
        parent=None if current is None else current.version, dim=spec.output_dim,
        method="bc-aligner", spec=model.spec.to_dict(), snapshot_id=state.current_snapshot,
        cutoff=state.snapshot().cutoff, model=model_to_bytes(model), transform=transform))
    publish_version(store, record.version)
    print(f"published version {record.version}: {model.spec}")


if __name__ == "__main__":
    main()
