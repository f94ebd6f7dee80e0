"""How the nightly path grows with the graph: time and peak memory per stage and per process at
several sizes, each stage beside the plainest single-process code doing the same work.

Synthetic marketplaces with about 10 users per item and 10 edges per user (10M edges: ~1M users,
100k items), 2 layers, 64 dims. Stages:

- ingest: build the snapshot and publish it to the store (plain: build it and write its three
  tables with polars);
- train: sampled mini-batch steps of version 0 in one process (edges/s and the epoch it implies;
  full-graph steps beside it while the graph is small enough to time them);
- refresh: the Ray Data job's driver in a fresh process that connects to the running cluster,
  timed from the process's start (imports, connect) to the committed version (plain: a fresh
  process reads the snapshot, builds the graph, runs layer-wise inference and writes both
  tables, timed the same way);
- incremental: the Ray Data job after about 1 % new edges (plain: the full plain refresh);
- read: `read_embeddings` of ver-0 users (plain: polars reads the table's files);
- lookup: Serve's state answers 1k random user ids (plain: a dict from id to row).

Plain stages and the refresh job's driver run in a fresh process each (the driver connects to
the cluster as `bc-ray refresh` does), so their peak memory is their own (VmHWM); Ray's workers
are sampled every 0.2 s by process title. Ingest and training run in the benchmark's process.

    python benchmarks/bench_scale.py [--edges 1000000,3000000,10000000] [--plot scale.png]
    python benchmarks/bench_scale.py --crossover   # full-graph vs sampled training by size
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from tests.helpers import publish_untrained_model  # noqa: E402

HIDDEN, CUTOFF, NEW_FRACTION, LOOKUP_IDS = 64, 0.99, 0.01, 1000
MB = 1 << 20
FLOOR = [0]  # peak RSS of a process with the libraries imported (set in main)


def _kind(title: str) -> str:
    """Refresh tasks (inference, fused with the Parquet write in the last stage) by the
    function they run, the actor that assembles layers; Ray's own actors and helpers are the
    rest."""
    if any(name in title for name in ("layer_runs", "sampled_runs", "_warm", "input_task",
                                      "inner_task", "final_task", "outgoing_task", "reach_task",
                                      "_range_graph_task", "_shuffle_task", "_degrees_task",
                                      "_latest_task", "_period_task", "_seen_before_task",
                                      "_send_task", "_firsts_task", "_count_task")):
        return "task"
    if "TrainWorker" in title:
        return "train worker"
    if "LayerBuilder" in title:
        return "builder"
    return "write" if title.startswith("Write") else "other Ray"


class Sampler:
    """Calls `sample` every `interval` seconds on a thread while the block runs."""

    interval = 0.2

    def sample(self) -> None:
        raise NotImplementedError

    def _poll(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory(Sampler):
    """Peak resident memory per process kind while a stage runs: the driver, and Ray's workers
    by their process title (refresh tasks, separate Parquet writers, the rest). The plain
    processes report their own exact peak (VmHWM)."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.private: dict[str, int] = {}  # without the object store's (and files') pages

    def sample(self) -> None:
        import psutil

        for process in psutil.process_iter():
            try:
                kind = ("driver" if process.pid == os.getpid()
                        else self.kind(" ".join(process.cmdline()[:1])))
                if kind is None:
                    continue
                info = process.memory_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.peaks[kind] = max(self.peaks.get(kind, 0), info.rss)
            self.private[kind] = max(self.private.get(kind, 0), info.rss - info.shared)

    def kind(self, title: str) -> str | None:
        """Which kind a process of this title is (None: not sampled)."""
        if not title.startswith("ray::") or "IDLE" in title:
            return None
        return _kind(title.removeprefix("ray::"))

    def summary(self) -> str:
        order = ("driver", "task", "train worker", "builder", "write", "other Ray")
        return ", ".join(f"{k} {self.peaks[k] / MB:,.0f}" for k in order if k in self.peaks)


def _measured(fn: Callable, *args) -> tuple:
    """fn's result and this process's peak RSS: VmHWM, since ru_maxrss keeps the forking
    parent's peak across exec."""
    result = fn(*args)
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return result, peak_kb * 1024


def in_fresh_process(fn: Callable, *args) -> tuple:
    """(fn's own result, the process's peak RSS in bytes) of fn(*args) in a new process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measured, fn, *args).result()


def runtime_floor() -> int:
    """Peak RSS of a process that has only imported what the stages use (torch, polars, ...)."""
    return in_fresh_process(_imports)[1]


def _imports() -> None:
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401

    import bc_ray.models.graphsage.inference  # noqa: F401
    import bc_ray.store.store  # noqa: F401


# -- plain single-process stages (module level: they run in spawned processes) ------------------
def plain_ingest(raw_path: str, out: str) -> float:
    """Seconds to build the snapshot and write its tables (loading the raw pickle excluded)."""
    import pickle

    from bc_ray.data.snapshot import build_snapshot

    with open(raw_path, "rb") as handle:
        raw = pickle.load(handle)
    started = time.perf_counter()
    snapshot = build_snapshot(raw).with_cutoff(CUTOFF)
    os.makedirs(out, exist_ok=True)
    for name in ("users", "items", "edges"):
        getattr(snapshot, name).write_parquet(os.path.join(out, f"{name}.parquet"))
    return time.perf_counter() - started


def plain_refresh(uri: str, out: str) -> float:
    """Seconds from a bare process (imports included) to both tables written."""
    started = time.perf_counter()
    import polars as pl
    import torch

    from bc_ray.core.graph import build_graph
    from bc_ray.models.graphsage.inference import layerwise_embed
    from bc_ray.models.graphsage.serialization import model_from_bytes
    from bc_ray.data.timeline import edges_until
    from bc_ray.store.snapshots import load_snapshot
    from bc_ray.store.store import Store
    from bc_ray.store.versions import load_model_bytes

    torch.set_num_threads(os.cpu_count() or 1)
    store = Store(uri)
    state = store.state()
    snapshot = load_snapshot(store, state=state)
    graph = build_graph(snapshot, edges_until(snapshot, snapshot.meta.cutoff),
                        now=snapshot.meta.cutoff)
    model = model_from_bytes(load_model_bytes(store, state.version().version, state), light=True)
    [z] = layerwise_embed(model, graph)
    os.makedirs(out, exist_ok=True)
    for entity, rows, ids in (("user", z[: graph.num_users], snapshot.users["id"]),
                              ("item", z[graph.num_users:], snapshot.items["id"])):
        pl.DataFrame({"id": ids, "embedding": rows.numpy()}).write_parquet(
            os.path.join(out, f"{entity}.parquet"))
    return time.perf_counter() - started


def ray_refresh(address: str, uri: str, mode: str) -> dict:
    """The refresh job's driver, as `bc-ray refresh` runs it: its own process on the cluster."""
    import logging

    import ray

    from bc_ray.refresh.config import RefreshConfig
    from bc_ray.refresh.job import run_refresh

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    with OwnMemory() as memory:
        stats = run_refresh(RefreshConfig(store=uri, mode=mode)).stats
    return {**stats, "driver_private_peak_mb": memory.peak_anon / MB,
            "driver_object_store_pages_mb": memory.peak_shmem / MB}


class OwnMemory(Sampler):
    """This process's peak private memory (RssAnon) and object-store pages it maps (RssShmem).
    VmHWM adds both; the second are the store's, shared with every process that maps them."""

    interval = 0.1

    def __init__(self) -> None:
        self.peak_anon = self.peak_shmem = 0

    def sample(self) -> None:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        self.peak_anon = max(self.peak_anon, int(fields["RssAnon"].split()[0]) * 1024)
        self.peak_shmem = max(self.peak_shmem, int(fields["RssShmem"].split()[0]) * 1024)


def plain_read(files: list[str]) -> float:
    import polars as pl

    started = time.perf_counter()
    pl.read_parquet(files, columns=["id", "embedding"])
    return time.perf_counter() - started


def plain_lookup(files: list[str], ids: list, repeats: int) -> float:
    """Seconds per lookup of `ids` after loading (a dict from id to row, one matrix)."""
    import polars as pl

    frame = pl.read_parquet(files, columns=["id", "embedding"])
    index = {key: row for row, key in enumerate(frame["id"].to_list())}
    # the files hold plain lists (every engine reads them); vectors of one size as a matrix
    dim = frame["embedding"].list.len()[0] if frame.height else 0
    matrix = frame["embedding"].cast(pl.Array(pl.Float32, dim)).to_numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        rows = np.fromiter((index.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        matrix[rows[rows >= 0]]
    return (time.perf_counter() - started) / repeats


def train_rate(graph, mode: str, steps: int, batch_size: int = 2048) -> float:
    """Edges/s of `steps` training steps after one warm-up step (version 0, one process)."""
    import torch

    from bc_ray.models.graphsage.model import build_model
    from bc_ray.models.graphsage.spec import VersionSpec
    from bc_ray.core.train_config import TrainConfig
    from bc_ray.core.trainer import VersionTrainer

    torch.manual_seed(0)
    trainer = VersionTrainer(build_model(VersionSpec(hidden_dim=HIDDEN), graph), graph,
                             TrainConfig(batch_size=batch_size, mode=mode))
    triples = trainer.task.epoch_triples(1)
    batches = max(1, len(triples) // batch_size)
    trainer.step(triples.slice(0, batch_size))
    started = time.perf_counter()
    for step in range(1, steps + 1):
        start = step % batches * batch_size  # small graphs wrap around
        trainer.step(triples.slice(start, start + batch_size))
    return steps * batch_size / (time.perf_counter() - started)


def graph_of(edges: int):
    from bc_ray.core.graph import build_graph
    from bc_ray.data.snapshot import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate

    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=edges // 10, num_items=edges // 100, num_edges=edges)))
    return build_graph(snapshot, snapshot.edges, now=1.0)


def crossover(sizes: list[int]) -> None:
    """Full-graph against sampled training steps by graph size (where `auto` should switch)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows, results = [], []
    for edges in sizes:
        graph = graph_of(edges)
        full = train_rate(graph, "full", steps=3)
        sampled = train_rate(graph, "sampled", steps=10)
        rows.append([edges, graph.num_nodes, full, sampled, sampled / full])
        results.append({"edges": edges, "nodes": graph.num_nodes, "full": full,
                        "sampled": sampled})
    print_table(f"Training steps, full graph vs sampled (batch 2048, fanout 10, hidden {HIDDEN},"
                f" {os.cpu_count()} CPUs)",
                ["edges", "nodes", "full edges/s", "sampled edges/s", "sampled / full"], rows)
    write_json("scale_crossover", {"results": results})


# -- the nightly path at one size -----------------------------------------------------------------
def must_hold_mb(nodes: int, edges: int, graph: bool = True) -> float:
    """What a process computing one layer must hold: both directions of the edges as CSR
    (int64 columns, row pointers) and the layer it reads and the one it writes (float32). The
    layer builder holds no graph: a layer's blocks and the layer they make."""
    csr = 2 * edges * 8 + (nodes + 1) * 8 if graph else 0
    return (csr + 2 * nodes * HIDDEN * 4) / MB


def one_size(edges: int, steps: int) -> list[dict]:
    import ray
    import torch

    from bc_ray.consumer.reader import read_embeddings
    from bc_ray.core.graph import build_graph
    from bc_ray.data.snapshot import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate
    from bc_ray.data.timeline import edges_until
    from bc_ray.serve.state import ServingState
    from bc_ray.store.snapshots import advance_snapshot, publish_snapshot
    from bc_ray.store.store import Store

    work = scratch_dir(f"bench-scale-{edges}-")
    uri = f"file://{work}/store"
    raw = generate(SyntheticConfig(num_users=edges // 10, num_items=edges // 100,
                                   num_edges=edges))
    with open(f"{work}/raw.pickle", "wb") as handle:
        pickle.dump(raw, handle)
    rows: list[dict] = []

    def record(stage: str, ours_s: float, plain_s: float, memory: str, plain_mb: float,
               note: str = "") -> None:
        rows.append({"edges": edges, "stage": stage, "ours_s": ours_s, "plain_s": plain_s,
                     "ratio": ours_s / plain_s if plain_s else float("nan"),
                     "peak_mb": memory, "plain_peak_mb": plain_mb / MB, "note": note})
        print(f"  {edges:,} {stage}: {ours_s:.1f}s vs plain {plain_s:.1f}s; peak MB {memory};"
              f" plain {plain_mb / MB:,.0f} {note}", flush=True)

    # ingest
    with PeakMemory() as memory:
        started = time.perf_counter()
        snapshot = build_snapshot(raw).with_cutoff(CUTOFF)
        store = Store(uri)
        publish_snapshot(store, snapshot)
        ingest_s = time.perf_counter() - started
    plain_s, plain_mb = in_fresh_process(plain_ingest, f"{work}/raw.pickle",
                                         f"{work}/plain-ingest")
    record("ingest", ingest_s, plain_s, memory.summary(), plain_mb)
    del raw

    # train (version 0, sampled mini-batches; one process)
    graph = build_graph(snapshot, edges_until(snapshot, CUTOFF), now=CUTOFF)
    torch.set_num_threads(os.cpu_count() or 1)
    with PeakMemory() as memory:
        sampled = train_rate(graph, "sampled", steps)
    full = train_rate(graph, "full", 2) if graph.num_nodes <= 400_000 else float("nan")
    epoch_s = graph.num_edges / sampled
    record("train epoch (projected)", epoch_s, graph.num_edges / full, memory.summary(), 0,
           f"sampled {sampled:,.0f} edges/s, full graph {full:,.0f} edges/s (plain column)")

    publish_untrained_model(store, graph, HIDDEN, CUTOFF)
    nodes = graph.num_nodes
    del graph, snapshot

    # full refresh against the plain one, both timed from a bare process's start to the
    # committed (written) result: the job's driver is its own process, as `bc-ray refresh` is
    address = ray.get_runtime_context().gcs_address
    with PeakMemory() as memory:
        job_s, (stats, driver_peak) = timed(lambda: in_fresh_process(ray_refresh, address, uri,
                                                                     "full"))
    memory.peaks["driver"] = driver_peak
    plain_s, (_, plain_mb) = timed(lambda: in_fresh_process(plain_refresh, uri,
                                                            f"{work}/plain-refresh"))
    record("full refresh", job_s, plain_s, memory.summary(), plain_mb,
           f"from process start (inside the job {stats['seconds']:.1f}s); must hold "
           f"{must_hold_mb(nodes, edges):,.0f} MB per process (the builder "
           f"{must_hold_mb(nodes, edges, graph=False):,.0f}) beyond the {FLOOR[0] / MB:,.0f} MB "
           f"runtime; driver private peak {stats['driver_private_peak_mb']:,.0f} MB")

    # incremental after ~1 % new edges
    advance_snapshot(Store(uri), CUTOFF + NEW_FRACTION)
    with PeakMemory() as memory:
        job_s, (stats, driver_peak) = timed(lambda: in_fresh_process(ray_refresh, address, uri,
                                                                     "incremental"))
    memory.peaks["driver"] = driver_peak
    plain_s, (_, plain_mb) = timed(lambda: in_fresh_process(plain_refresh, uri,
                                                            f"{work}/plain-refresh2"))
    record("incremental refresh", job_s, plain_s, memory.summary(), plain_mb,
           f"from process start (inside the job {stats['seconds']:.1f}s); "
           f"{stats['affected_fraction']:.0%} of nodes affected; driver private peak "
           f"{stats['driver_private_peak_mb']:,.0f} MB")

    # consumer read and Serve lookups
    state = Store(uri).state()
    table = state.table(0, "user")
    files = [f"{work}/store/{f.path}" for f in table.files]
    with PeakMemory() as memory:
        started = time.perf_counter()
        frame = read_embeddings(uri, "user", version=0)
        read_s = time.perf_counter() - started
    plain_s, plain_mb = in_fresh_process(plain_read, files)
    record("ver-0 read", read_s, plain_s, memory.summary(), plain_mb, f"{frame.height:,} rows")
    ids = frame["id"].sample(LOOKUP_IDS, seed=0).to_list()
    del frame
    serving = ServingState.load(Store(uri))
    repeats = 50
    started = time.perf_counter()
    for _ in range(repeats):
        serving.lookup("user", ids, None)
    lookup_s = (time.perf_counter() - started) / repeats
    plain_lookup_s, plain_mb = in_fresh_process(plain_lookup, files, ids, repeats)
    record(f"lookup of {LOOKUP_IDS} ids", lookup_s, plain_lookup_s, "-", plain_mb,
           "Serve's in-memory state, per request")
    return rows


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    for stage in dict.fromkeys(r["stage"] for r in results):
        points = [(r["edges"], r["ours_s"]) for r in results if r["stage"] == stage]
        axis.loglog(*zip(*points), marker="o", label=stage)
    edges = sorted({r["edges"] for r in results})
    axis.loglog(edges, [e / edges[0] * 10 for e in edges], "k--", linewidth=0.8,
                label="linear (slope 1)")
    axis.set_xlabel("edges")
    axis.set_ylabel("seconds")
    axis.set_title("bc_ray nightly path by graph size (2 CPUs)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", default="1000000,3000000,10000000")
    parser.add_argument("--steps", type=int, default=20, help="sampled training steps timed")
    parser.add_argument("--plot", default=None, help="write the log-log plot here (PNG)")
    parser.add_argument("--crossover", action="store_true")
    args = parser.parse_args()
    sizes = [int(e) for e in args.edges.split(",")]
    if args.crossover:
        crossover(sizes)
        return
    import logging

    import ray
    import ray.data

    FLOOR[0] = runtime_floor()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # A long-lived cluster: Ray Data's per-cluster actors (stats, autoscaling requests) start
    # with its first dataset, once, not with every refresh job.
    ray.data.range(1).materialize()
    results: list[dict] = []
    for edges in sizes:
        results += one_size(edges, args.steps)
        write_json("scale", {"runtime_floor_mb": FLOOR[0] / MB, "results": results})
    ray.shutdown()
    print_table(f"The nightly path by size (2 layers, hidden {HIDDEN}, {os.cpu_count()} CPUs;"
                " peak RSS in MB per process kind)",
                ["edges", "stage", "bc_ray s", "plain s", "ratio", "peak MB (bc_ray)",
                 "peak MB (plain)", "note"],
                [[r["edges"], r["stage"], r["ours_s"], r["plain_s"], r["ratio"], r["peak_mb"],
                  f"{r['plain_peak_mb']:,.0f}", r["note"]] for r in results])
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        growth = [[stage, last / first,
                   next(r["ours_s"] for r in results if r["edges"] == last and r["stage"] == stage)
                   / next(r["ours_s"] for r in results if r["edges"] == first
                          and r["stage"] == stage)]
                  for stage in dict.fromkeys(r["stage"] for r in results)]
        print_table(f"Growth from {first:,} to {last:,} edges",
                    ["stage", "edges ratio", "time ratio"], growth)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
