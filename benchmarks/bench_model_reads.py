"""A model on S3 read by a process that needs one span of its ID tables: loaded whole, as a
partitioned refresh's input task and a sharded bump's worker did where the store is not local,
against read in parts (`ModelFile`: the dense weights, then the span of each ID table by one
ranged read); and the driver's side of each: the file's bytes read, held and checked before it
put them into the object store, or the file's sha256 streamed and its directory read.

The store is moto's S3 server on 127.0.0.1. The model is GraphSAGE's, 2 layers, `--hidden`
wide, with 10 users per item; the span is node range 0 of `--parts` equal ranges (its users),
as an input task of the partitioned refresh reads it, and the process computes the range's h_0
from it. A whole-loading task got the file's bytes from the object store, so here it reads them
from a copy in /dev/shm (memory, as the object store is); the driver and the task reading in
parts go to S3. Each measurement runs in a fresh spawned process, the modes interleaved,
`--repeats` times: "holds" is its peak resident memory (VmHWM) above what it held once its
imports were done ("model loaded": the same once the model was read, before h_0 was computed).
The modes' h_0 must be equal bit for bit.

With `--refresh-edges E`, then the whole refresh: a store of E edges on the S3 server, refreshed
over `--parts` ranges on a local Ray cluster (`--repeats` times), its time and the driver's and
the tasks' peaks, labelled `--label`; run it at the commit before and after a change.

    python benchmarks/bench_model_reads.py [--nodes 1000000,4000000] [--parts 8] [--repeats 2]
    python benchmarks/bench_model_reads.py --nodes "" --refresh-edges 3000000 --label before
      [--name model-reads]   # the JSON: model-reads-before.json
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_scale import MB, in_fresh_process  # noqa: E402
from benchmarks.bench_two_nodes import start_s3  # noqa: E402
from benchmarks.common import print_table, proc_status, write_json  # noqa: E402

PATH = "models/model.pt"


def publish(uri: str, users: int, items: int, hidden: int) -> dict:
    """The model file written to the store: its size and sha256."""
    import torch

    from bc_ray.io import FileIO
    from bc_ray.models.graphsage.model import EmbeddingModel
    from bc_ray.models.graphsage.serialization import model_to_bytes
    from bc_ray.models.graphsage.spec import VersionSpec

    torch.manual_seed(0)
    model = EmbeddingModel(VersionSpec(num_layers=2, hidden_dim=hidden), users, items,
                           {"segment": 8}, {"category": 24, "brand": 80})
    data = model_to_bytes(model)
    FileIO(uri).write_bytes(PATH, data)
    with open(_shm_copy(uri), "wb") as handle:
        handle.write(data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _shm_copy(uri: str) -> str:
    return f"/dev/shm/bench-model-reads-{hashlib.sha256(uri.encode()).hexdigest()[:12]}.pt"


def input_task(uri: str, mode: str, users: int) -> dict:
    """h_0 of users 0..users-1 from the model read `mode` ("whole" or "parts")."""
    import torch

    from bc_ray.models.graphsage.serialization import model_from_bytes
    from bc_ray.partition.model_source import ModelSource

    base = proc_status("VmRSS:")
    started = time.perf_counter()
    if mode == "whole":  # its bytes as the object store handed them over: a private copy
        with open(_shm_copy(uri), "rb") as handle:
            model = model_from_bytes(handle.read(), light=True)
    else:
        model = ModelSource(uri, None, PATH, mode="parts").load({"user": (0, users),
                                                                 "item": (0, 0)})
    loaded = proc_status("VmHWM:") - base
    rows = torch.arange(users)
    with torch.no_grad():
        h0 = model.inputs_of("user", {}, rows, torch.zeros(users), 0.0)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "holds": proc_status("VmHWM:") - base, "model_holds": loaded,
            "h0_sha256": hashlib.sha256(h0.numpy().tobytes()).hexdigest()}


def driver(uri: str, mode: str, size: int, sha256: str) -> dict:
    """The driver's check of the file: its bytes read, held and hashed ("whole", what
    `load_model_bytes` did before `ray.put`), or streamed and its directory read ("parts":
    `ModelSource.of_file`)."""
    from bc_ray.partition.model_source import ModelSource
    from bc_ray.store.state import FileRecord
    from bc_ray.store.store import Store

    store, record = Store(uri), FileRecord(PATH, size, sha256)
    base = proc_status("VmRSS:")
    started = time.perf_counter()
    if mode == "whole":
        data = store.get(record)
        assert len(data) == size
    else:
        assert ModelSource.of_file(store, record).mode == "parts"
    return {"seconds": time.perf_counter() - started, "holds": proc_status("VmHWM:") - base}


def reads(uri: str, nodes: int, args: argparse.Namespace) -> tuple[list, dict]:
    """The table's rows and the JSON's entry for one model size (module docstring)."""
    users, items = nodes * 10 // 11, nodes - nodes * 10 // 11
    file, _ = in_fresh_process(publish, f"{uri}/{nodes}", users, items, args.hidden)
    atexit.register(os.remove, _shm_copy(f"{uri}/{nodes}"))
    span = nodes // args.parts
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for mode in ("whole", "parts"):
            task, _ = in_fresh_process(input_task, f"{uri}/{nodes}", mode, span)
            check, _ = in_fresh_process(driver, f"{uri}/{nodes}", mode, file["size"],
                                        file["sha256"])
            runs.setdefault(mode, []).append({"task": task, "driver": check})
    digests = {r["task"]["h0_sha256"] for mode_runs in runs.values() for r in mode_runs}
    assert len(digests) == 1, "the modes' h_0 differ"
    median = {mode: {side: {key: statistics.median(r[side].get(key, 0) for r in mode_runs)
                            for key in ("seconds", "holds", "model_holds")}
                     for side in ("task", "driver")}
              for mode, mode_runs in runs.items()}
    rows = []
    for side in ("task", "driver"):
        whole, parts = median["whole"][side], median["parts"][side]
        loaded = (f"{whole['model_holds'] / MB:,.0f} / {parts['model_holds'] / MB:,.0f}"
                  if side == "task" else "-")
        rows.append([f"{nodes:,}", side, f"{file['size'] / MB:,.0f}", loaded,
                     f"{whole['holds'] / MB:,.0f}", f"{parts['holds'] / MB:,.0f}",
                     parts["holds"] / whole["holds"], whole["seconds"], parts["seconds"],
                     parts["seconds"] / whole["seconds"]])
    return rows, {"nodes": nodes, "users": users, "items": items, "span": span,
                  "file_bytes": file["size"], "runs": runs}


def refreshes(uri: str, args: argparse.Namespace) -> tuple[list, dict]:
    """The partitioned refresh of an `--refresh-edges` store on S3 (module docstring)."""
    import ray

    from benchmarks.bench_partitions import measured
    from benchmarks.bench_two_nodes import publish as publish_store

    store = f"{uri}/refresh"
    publish_store(store, args.refresh_edges)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        address = ray.get_runtime_context().gcs_address
        runs = []
        for _ in range(args.repeats):
            seconds, stats, memory = measured(address, store, args.parts)
            runs.append({"seconds": seconds, "job_seconds": stats["seconds"],
                         "input_stage_seconds": stats.get("layer0", {}).get("seconds"),
                         **{k: v for k, v in memory.items() if k != "summary"}})
    finally:
        ray.shutdown()
    rows = [[args.label, f"{args.refresh_edges:,}", args.parts, run["seconds"],
             run["input_stage_seconds"], f"{run['driver_private_mb']:,.0f}",
             f"{run['task_private_mb']:,.0f}"] for run in runs]
    return rows, {"edges": args.refresh_edges, "label": args.label, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1000000,4000000")
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--refresh-edges", type=int, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument("--name", default="model_reads",
                        help="the JSON's name under BC_RAY_BENCH_OUT (and the label after it)")
    args = parser.parse_args()
    server, uri = start_s3()
    # moto assembling a 1 GB upload outlasts s3fs's timeout: s3fs retries (and succeeds; the
    # driver's check verifies the file's sha256) while moto logs the abandoned attempt.
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    rows, results, refreshed = [], [], None
    try:
        for nodes in (int(n) for n in args.nodes.split(",") if n):
            size_rows, entry = reads(uri, nodes, args)
            rows += size_rows
            results.append(entry)
        if args.refresh_edges:
            refresh_rows, refreshed = refreshes(uri, args)
    finally:
        server.stop()
    name = args.name + (f"-{args.label}" if args.label else "")
    if rows:
        print_table(f"A model on S3 read whole or in parts (range 0 of {args.parts}, hidden "
                    f"{args.hidden}; medians of {args.repeats})",
                    ["nodes", "process", "file MB", "model loaded MB: whole / parts",
                     "whole: holds MB", "parts: holds MB", "holds ratio", "whole s", "parts s",
                     "time ratio"], rows)
    if refreshed:
        print_table(f"The partitioned refresh on S3 ({args.label or 'this commit'})",
                    ["label", "edges", "P", "s", "input stage s", "driver private MB",
                     "tasks' private peak MB"], refresh_rows)
    write_json(name, {"parts": args.parts, "hidden": args.hidden, "repeats": args.repeats,
                      "sizes": results, "refresh": refreshed})


if __name__ == "__main__":
    main()
