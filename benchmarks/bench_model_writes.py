"""M_k's model file at the end of a sharded bump: rank 0 gathering every worker's ID rows into
whole tables and saving them (`gathered_model` + `save_model`, as the bump did), against the
file written in place, each worker's rows a block at a time as they arrive (`write_model_file`).

`--workers` gloo ranks (spawned processes on 127.0.0.1) each hold their rows of ID tables of
`--nodes` nodes (10 users per item, `--hidden` wide) and a 2-layer GraphSAGE's dense weights.
Each mode runs in fresh processes, the modes interleaved, `--repeats` times. "holds" is a
rank's peak resident memory (VmHWM, reset before the write) above what it held before (its
rows); "s" the write's time on rank 0 (the collective and the file, not flushed to disk), after
rank 0 has probed once whether this torch can write in place ("probed": its first fake tensor
sets torch's dispatch up, once per process; a bump pays it once). The
two files' tensor records must be equal (their names, CRC-32s and sizes).

    python benchmarks/bench_model_writes.py [--nodes 1000000,4000000,20000000] [--workers 2]
      [--repeats 2] [--folder /tmp]   # the JSON: model-writes.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_scale import MB  # noqa: E402
from benchmarks.common import print_table, proc_status, write_json  # noqa: E402

MODES = ("gathered", "in place")


def _owners(nodes: int, workers: int):
    import numpy as np

    from bc_ray.core.row_shards import RowOwners

    users = nodes * 10 // 11
    return RowOwners(users, np.linspace(0, users, workers + 1).astype(np.int64),
                     np.linspace(0, nodes - users, workers + 1).astype(np.int64))


def _rank(rank: int, port: int, mode: str, nodes: int, args: argparse.Namespace, path: str,
          results) -> None:
    import torch
    import torch.distributed as dist

    from bc_ray.models.graphsage.model import EmbeddingModel
    from bc_ray.models.graphsage.model_file_writer import writes_in_place
    from bc_ray.models.graphsage.serialization import save_model
    from bc_ray.models.graphsage.sharded_model_file import gathered_model, write_model_file
    from bc_ray.models.graphsage.spec import VersionSpec

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    owners = _owners(nodes, args.workers)
    torch.manual_seed(rank)
    model = EmbeddingModel(VersionSpec(num_layers=2, hidden_dim=args.hidden), 0, 0,
                           {"segment": 8}, {"category": 24, "brand": 80}).eval()
    rows = torch.empty(owners.num_rows(rank), args.hidden).uniform_(-1, 1)
    probe = 0.0
    if mode == "in place" and rank == 0:  # whether torch can: once per process (cached)
        started = time.perf_counter()
        if not writes_in_place():
            raise RuntimeError("this torch cannot write a model file in place")
        probe = time.perf_counter() - started
    dist.barrier()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM from here
    base, started = proc_status("VmRSS:"), time.perf_counter()
    target = path if rank == 0 else None
    if mode == "in place":
        write_model_file(model, rows, owners, target)
    else:
        whole = gathered_model(model, rows, owners)
        if whole is not None:
            save_model(whole, target)
        del whole
    results[rank] = {"seconds": time.perf_counter() - started,
                     "holds": proc_status("VmHWM:") - base, "probe_seconds": probe}
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _records(path: str) -> list[tuple]:
    """Each tensor's record: its name, CRC-32 and size."""
    with zipfile.ZipFile(path) as archive:
        return [(i.filename, i.CRC, i.file_size) for i in archive.infolist()
                if "/data/" in i.filename]


def write(mode: str, nodes: int, args: argparse.Namespace, folder: str) -> tuple[dict, list]:
    """Each rank's time and peak, and the file's records, of one write."""
    import torch.multiprocessing as mp

    path = os.path.join(folder, "model.pt")
    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_rank, args=(_free_port(), mode, nodes, args, path, results), nprocs=args.workers,
             join=True)
    records, size = _records(path), os.path.getsize(path)
    os.remove(path)
    return {"ranks": [results[r] for r in range(args.workers)], "file_bytes": size}, records


def sizes(nodes: int, args: argparse.Namespace) -> tuple[list, dict]:
    folder = tempfile.mkdtemp(prefix="bench-model-writes-", dir=args.folder)
    try:
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        files = set()
        for _ in range(args.repeats):
            for mode in MODES:
                run, records = write(mode, nodes, args, folder)
                runs[mode].append(run)
                files.add(tuple(records))
        if len(files) != 1:
            raise RuntimeError("the two modes' files hold different tensors")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    median = {mode: [{key: statistics.median(run["ranks"][rank][key] for run in mode_runs)
                      for key in ("seconds", "holds", "probe_seconds")}
                     for rank in range(args.workers)]
              for mode, mode_runs in runs.items()}
    size = runs[MODES[0]][0]["file_bytes"]
    rows = []
    for rank in range(args.workers):
        gathered, in_place = median["gathered"][rank], median["in place"][rank]
        rows.append([f"{nodes:,}", rank, f"{size / MB:,.0f}", f"{gathered['holds'] / MB:,.0f}",
                     f"{in_place['holds'] / MB:,.0f}",
                     in_place["holds"] / max(gathered["holds"], 1), gathered["seconds"],
                     in_place["seconds"], in_place["seconds"] / gathered["seconds"],
                     in_place["probe_seconds"]])
    return rows, {"nodes": nodes, "file_bytes": size, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1000000,4000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--folder", default=None, help="where the files are written (a disk)")
    parser.add_argument("--name", default="model_writes")
    args = parser.parse_args()
    rows, results = [], []
    for nodes in (int(n) for n in args.nodes.split(",") if n):
        size_rows, entry = sizes(nodes, args)
        rows += size_rows
        results.append(entry)
    print_table(f"M_k's model file gathered on rank 0 or written in place ({args.workers} "
                f"workers, hidden {args.hidden}; medians of {args.repeats})",
                ["nodes", "rank", "file MB", "gathered: holds MB", "in place: holds MB",
                 "holds ratio", "gathered s", "in place s", "time ratio",
                 "in place: torch probed, s"], rows)
    write_json(args.name, {"workers": args.workers, "hidden": args.hidden,
                           "repeats": args.repeats, "sizes": results})


if __name__ == "__main__":
    main()
