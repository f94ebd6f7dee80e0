"""The consumer side at the 100M store's size: Serve's state and a consumer's read, each in a
process of its own, against what that process must hold.

The store holds two versions published with `bc-ray publish` (no training: the sizes are what
matter here, not the rows' meaning): version 0 random, version 1 a rotation of it plus noise,
with B_1 fitted post hoc. At the default size, 10M users and 1M items of 64 floats, the tables
are those of the 100M-interaction store (RESULTS §10). Each stage runs in a fresh process:

- `read_embeddings(user, version=0)`: every user as a ver-0 view (version 1's rows through B_1);
- `read_embeddings(user)`: every user as stored (version 1);
- the baseline, `pl.read_parquet` of the same files: what a consumer reading them without
  bc_ray holds (the rows as stored, no checks, no view);
- `ServingState.load` and lookups of 1k user ids: a Serve replica's state.

"Must hold" is the output: 8 bytes an id and 4 d bytes a row (Serve: both tables); "floor" a
fresh process that imported what the stages import. The issue's target is a peak within 2x of
what the process must hold.

    python benchmarks/bench_consumers.py [--users 10000000] [--items 1000000] [--dim 64]
                                         [--repeats 2] [--keep-store DIR | --store DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_nightly import run_cli  # noqa: E402
from benchmarks.bench_scale import MB, in_fresh_process  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

LOOKUP_IDS = 1000
ROWS_PER_WRITE = 1_000_000


def write_tables(folder: str, users: int, items: int, dim: int, version: int) -> None:
    """users.parquet and items.parquet of `version`: random rows for version 0, for version 1
    the same rows rotated (one fixed orthogonal matrix) plus a little noise. Written a million
    rows at a time, so the benchmark's own process never holds a table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(dim, dim)))[0]
    for entity, count in (("users", users), ("items", items)):
        with pq.ParquetWriter(os.path.join(folder, f"{entity}.parquet"), pa.schema(
                [("id", pa.int64()), ("embedding", pa.list_(pa.float32()))])) as writer:
            for first in range(0, count, ROWS_PER_WRITE):
                rows = min(ROWS_PER_WRITE, count - first)
                rng = np.random.default_rng([0, len(entity), first])
                z = rng.normal(size=(rows, dim)).astype(np.float32)
                if version:
                    noise = np.random.default_rng([version, len(entity), first]).normal(
                        scale=0.01, size=(rows, dim))
                    z = (z @ rotation + noise).astype(np.float32)
                ids = np.arange(first, first + rows, dtype=np.int64) * 3 + 7
                writer.write_table(pa.table({"id": ids, "embedding": pa.array(list(z))}))


def build_store(root: str, users: int, items: int, dim: int) -> tuple[str, list[float]]:
    """The store and the seconds each publish took."""
    uri, seconds = os.path.join(root, "store"), []
    for version in (0, 1):
        folder = os.path.join(root, f"v{version}")
        os.makedirs(folder)
        in_fresh_process(write_tables, folder, users, items, dim, version)
        took, _, _ = run_cli("publish", "--store", uri,
                             "--users", os.path.join(folder, "users.parquet"),
                             "--items", os.path.join(folder, "items.parquet"),
                             "--method", "post-procrustes")
        seconds.append(took)
    return uri, seconds


def imports() -> None:
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import bc_ray.consumer.reader  # noqa: F401
    import bc_ray.serve.state  # noqa: F401


def read_view(uri: str, version: int | None) -> tuple[float, int, int]:
    """(seconds, rows, bytes it must hold) of `read_embeddings`."""
    from bc_ray.consumer.reader import read_embeddings

    started = time.perf_counter()
    frame = read_embeddings(uri, "user", version=version)
    seconds = time.perf_counter() - started
    dim = frame.schema["embedding"].shape[0]
    return seconds, frame.height, frame.height * (8 + 4 * dim)


def read_plain(uri: str) -> tuple[float, int, int]:
    """The baseline: polars reads the current user table's files as they are."""
    import polars as pl

    from bc_ray.store.store import Store

    store = Store(uri)
    state = store.state()
    record = state.table(state.current_version, "user")
    paths = [store.io.path(f.path) for f in record.files]
    started = time.perf_counter()
    frame = pl.read_parquet(paths, columns=["id", "embedding"])
    return time.perf_counter() - started, frame.height, frame.height * (8 + 4 * record.dim)


def serve_state(uri: str) -> tuple[float, int, int, float]:
    """(seconds to load, rows, bytes it must hold, milliseconds per lookup of 1k ids)."""
    from bc_ray.serve.state import ServingState
    from bc_ray.store.store import Store

    started = time.perf_counter()
    serving = ServingState.load(Store(uri))
    seconds = time.perf_counter() - started
    tables = serving.tables.values()
    rows = sum(len(t.ids) for t in tables)
    must_hold = sum(len(t.ids) * 8 + t.matrix.nbytes for t in tables)
    users = len(serving.tables["user"].ids)
    ids = (np.random.default_rng(0).choice(users, LOOKUP_IDS, replace=False) * 3 + 7).tolist()
    started, repeats = time.perf_counter(), 50
    for _ in range(repeats):
        _, found, _ = serving.lookup("user", ids, None)
    if not found.all():
        raise RuntimeError("a lookup missed ids the table holds")
    return seconds, rows, must_hold, (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of every stage (seconds of each; the highest peak)")
    parser.add_argument("--name", default="consumers",
                        help="the JSON's name under BC_RAY_BENCH_OUT")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep-store", default=None, metavar="DIR",
                       help="build the store in DIR (which must not exist) and keep it")
    where.add_argument("--store", default=None, metavar="DIR",
                       help="measure a store a run with --keep-store built (another "
                            "commit's code on the same tables)")
    args = parser.parse_args()

    if args.store:
        uri, publish_s = os.path.join(args.store, "store"), []
    else:
        root = args.keep_store or scratch_dir("bc-ray-consumers-")
        os.makedirs(root, exist_ok=True)
        uri, publish_s = build_store(root, args.users, args.items, args.dim)
    floor = in_fresh_process(imports)[1]
    stages = [("ver-0 view of every user (through B_1)", read_view, (uri, 0)),
              ("every user as stored (version 1)", read_view, (uri, None)),
              ("baseline: pl.read_parquet of the same files", read_plain, (uri,)),
              ("Serve state load (users and items)", serve_state, (uri,))]
    runs: dict[str, list] = {title: [] for title, _, _ in stages}
    for _ in range(args.repeats):  # the stages interleaved, each run in a fresh process
        for title, fn, fn_args in stages:
            runs[title].append(in_fresh_process(fn, *fn_args))
    rows_out, results = [], {}
    for title, measured in runs.items():
        seconds = [m[0][0] for m in measured]
        _, rows, must_hold, *lookup_ms = measured[0][0]
        peak = max(m[1] for m in measured)
        lookups = [m[0][3] for m in measured] if lookup_ms else None
        results[title] = {"seconds": seconds, "rows": rows, "must_hold_mb": must_hold / MB,
                          "peak_mb": peak / MB, "above_floor_mb": (peak - floor) / MB,
                          "lookup_ms": lookups}
        rows_out.append([title, " / ".join(f"{s:.1f}" for s in seconds), f"{rows:,}",
                         f"{must_hold / MB:,.0f}", f"{peak / MB:,.0f}",
                         f"{(peak - floor) / must_hold:.2f}",
                         " / ".join(f"{m:.2f}" for m in lookups) if lookups else "-"])
    print_table(f"Consumers of {args.users:,} users and {args.items:,} items, d = {args.dim} "
                f"(process floor {floor / MB:,.0f} MB)",
                ["stage", "s (each run)", "rows", "must hold MB", "highest peak MB",
                 "above floor / must hold", "1k-id lookup ms"], rows_out)
    path = write_json(args.name, {"users": args.users, "items": args.items, "dim": args.dim,
                                  "floor_mb": floor / MB, "publish_s": publish_s,
                                  "stages": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
