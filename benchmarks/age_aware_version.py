"""Publish an untrained age-aware GraphSAGE (`cold_start_mixing`; with `--no-mixing` a plain
one, to set beside it) as the next version of a store, aligned to the current one by the
identity, so that a refresh benchmark can embed a model of a large ingested store without
training one first (a refresh's time and memory do not depend on the weights). Use it on a copy
(`cp -al STORE COPY`), not a store anyone serves.

    python benchmarks/age_aware_version.py --store DIR [--hidden 64] [--layers 2] [--no-mixing]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bc_ray.core.graph import build_graph  # noqa: E402
from bc_ray.store.snapshots import load_entities  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from tests.helpers import publish_untrained_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="a local store's folder")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--mixing", action=argparse.BooleanOptionalAction, default=True,
                        help="age-aware (the default) or plain")
    args = parser.parse_args()
    store = Store(f"file://{os.path.abspath(args.store)}")
    state = store.state()
    entities = load_entities(store, state)  # the model's tables are sized by them; no edges
    cutoff = state.snapshot().cutoff
    version, model = publish_untrained_model(
        store, build_graph(entities, entities.edges, now=cutoff), args.hidden, cutoff,
        args.layers, mixing=args.mixing)
    print(f"published version {version}: {model.spec}")


if __name__ == "__main__":
    main()
