"""The nightly path on a store built as a team builds it: D daily batches of interactions, each
landed as a Parquet file and ingested by `bc-ray data ingest`, never the whole history in one
process. Then, as the scheduler would run them (each command its own process, on one running
Ray cluster): version 0 and a bump to version 1 trained with a step budget (`bc-ray train
--max-steps`, the bump warm-started; with `--sharded W` by W workers that each hold only their
share, and the same bump in one process beside it, from a copy of the store), the bump's full
refresh unpartitioned and over P node ranges, one more day ingested, the incremental refresh
over the ranges, 1k-id lookups from Serve's state and a ver-0 read (version 1's rows through
B_1). The plain single-process refresh (`bench_scale.plain_refresh`: read the snapshot, build
the graph, layer-wise inference, write both tables) runs beside them where it fits.

The days grow: day d adds `daily / 10` users and `daily / 100` items; half its interactions
are by that day's new users, half by anyone seen so far, on items drawn with a heavy skew
towards the older, popular ones (a fifth on the day's new items). Time and peak resident
memory per process kind: each command's process (sampled every 0.2 s) and Ray's workers by
process title (`bench_scale.PeakMemory`).

    python benchmarks/bench_nightly.py [--days 10] [--daily 1000000] [--partitions 4]
                                       [--sharded W] [--no-plain] [--batch-size B]
                                       [--object-store-gb G] [--store DIR] [--keep-store DIR]
                                       [--no-bump] [--id-optimizer rowwise_adagrad]

At 100M interactions (RESULTS §10) the path ran in parts: `--store` starts from a store whose
version 0 an earlier run trained and refreshed, and a sharded bump that fails (out of memory at
the edge of the machine) is recorded as such while the path goes on with version 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's stage lines, not one for all

from benchmarks.bench_scale import MB, PeakMemory, in_fresh_process, plain_refresh  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

DAY_SECONDS = 86_400
FIRST_DAY = 1_767_225_600  # 2026-01-01
LOOKUP_IDS = 1000


def day_batch(day: int, daily: int, seed: int = 0):
    """Day `day`'s interactions (external ids: idx x 3 + 7, so no id equals its index)."""
    import polars as pl

    rng = np.random.default_rng([seed, day])
    new_users, new_items = daily // 10, daily // 100
    users_now, items_now = new_users * (day + 1), new_items * (day + 1)
    half = daily // 2
    users = np.concatenate([users_now - new_users + rng.integers(0, new_users, half),
                            rng.integers(0, users_now, daily - half)])
    fresh = daily // 5
    items = np.concatenate([items_now - new_items + rng.integers(0, new_items, fresh),
                            (items_now * rng.random(daily - fresh) ** 3).astype(np.int64)])
    return pl.DataFrame({
        "user": users * 3 + 7, "item": rng.permutation(items) * 3 + 7,
        "ts": FIRST_DAY + day * DAY_SECONDS + rng.integers(0, DAY_SECONDS, daily),
        "rating": np.ones(daily, dtype=np.float32)})


def run_cli(*args: str) -> tuple[float, float, dict]:
    """(seconds, the process's peak RSS in MB, its JSON output) of one `bc-ray` command."""
    import psutil

    started = time.perf_counter()
    command = os.path.join(os.path.dirname(sys.executable), "bc-ray")
    # Files, not pipes: a pipe nobody reads while the command runs fills up (Ray prints its
    # workers' logs) and the command hangs in its last write.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([command, *args, "--json"], stdout=stdout, stderr=stderr,
                                   text=True)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        process.wait()
        seconds = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"bc-ray {' '.join(args)} failed ({process.returncode}):\n"
                           f"{err[-3000:]}")
    start = out.find("{") if out.startswith("{") else out.find("\n{") + 1
    result = json.loads(out[start:])
    # A sharded bump's workers log their stages and their private memory (forwarded by Ray to
    # the command's stderr): kept, to split a worker's peak by stage.
    result["worker_log"] = list(dict.fromkeys(  # once each: Ray may forward a line twice
        line.strip() for line in err.splitlines()
        if "sharded worker" in line or "MB private" in line))
    return seconds, peak / MB, result


def ingest_day(uri: str, landing: str, day: int, daily: int) -> tuple[float, float, dict]:
    path = f"{landing}/day-{day:03d}.parquet"
    day_batch(day, daily).write_parquet(path)
    return run_cli("data", "ingest", "--store", uri, "--edges", path, "--user-col", "user",
                   "--item-col", "item", "--time-col", "ts", "--rating-col", "rating")


def read_view(uri: str) -> tuple[float, int]:
    """A ver-0 read of every user (the current version's rows through the chain): seconds,
    rows."""
    from bc_ray.consumer.reader import read_embeddings

    started = time.perf_counter()
    frame = read_embeddings(uri, "user", version=0)
    return time.perf_counter() - started, frame.height


def lookups(uri: str, repeats: int = 50) -> tuple[float, float]:
    """Serve's state: (seconds to load it, seconds per lookup of LOOKUP_IDS user ids)."""
    import polars as pl

    from bc_ray.serve.state import ServingState
    from bc_ray.store.store import Store

    started = time.perf_counter()
    serving = ServingState.load(Store(uri))
    load_s = time.perf_counter() - started
    store = Store(uri)
    state = store.state()
    first = state.table(state.current_version, "user").files[0]
    ids = pl.read_parquet(store.get(first), columns=["id"])["id"].sample(
        LOOKUP_IDS, seed=0).to_list()
    started = time.perf_counter()
    for _ in range(repeats):
        serving.lookup("user", ids, None)
    return load_s, (time.perf_counter() - started) / repeats


def _stages(out: dict) -> str:
    """A refresh's stages and their seconds, as its output names them, and its ranges' plan."""
    ranges = out.get("partitions") or {}
    plan = (f"{ranges['count']} ranges, {ranges.get('whole_blocks', 0)} blocks read whole, "
            f"a layer task must hold {ranges['task_must_hold_mb_max']:,.0f} MB, a build task "
            f"{ranges.get('build_must_hold_mb_max', 0):,.0f} MB; " if ranges else "")
    return plan + ", ".join(f"{label} {out[label]['seconds']:.1f}s"
                     + (f" (compute {out[label]['compute_seconds']:.1f}s)"
                        if "compute_seconds" in out[label] else "")
                     for label in out if isinstance(out[label], dict) and "seconds" in out[label])


def _outcome(out: dict) -> str:
    note = f"{out.get('status')}; gate {out.get('reasons') or 'passed'}"
    for name in ("recall_at_50", "parent_recall_at_50", "align_error_rel"):
        if out.get(name) is not None:
            note += f"; {name} {out[name]:.4f}"
    for name in ("worker_graph_bytes", "worker_id_bytes"):  # a sharded bump's shares
        if out.get(name):
            note += f"; {name} {[round(int(b) / MB) for b in out[name]]} MB"
    return note


def bump_sharded(command: list[str], workers: int, record: Callable[..., None]) -> None:
    """The sharded bump to version 1, recorded; where it runs out of memory (at the edge of the
    machine) that is recorded and the path goes on with version 0. `--store` takes the
    `--days` of the run that built it (the next day ingested is day `--days`)."""
    stage = f"bump to version 1 (step budget, warm start), sharded W={workers}"
    started = time.perf_counter()
    with PeakMemory() as memory:
        try:
            seconds, peak, out = run_cli(*command, "--warm-start", "mean")
        except RuntimeError as failed:
            if "memory" not in str(failed).lower():
                raise  # any other failure is a fault to see, not a measurement
            lines = [line for line in str(failed).splitlines() if line.strip()]
            record(f"{stage}: FAILED", time.perf_counter() - started, 0.0, memory,
                   " | ".join(lines[-3:])[-600:])
            return
    record(stage, seconds, peak, memory, _outcome(out), out["worker_log"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--daily", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="Examples per optimiser step in all (split over sharded workers).")
    parser.add_argument("--sharded", type=int, default=0, metavar="W",
                        help="Train versions 0 and 1 with `bc-ray train --sharded` on W workers "
                             "(version 0 is refreshed before the bump: its tables are the "
                             "targets); 0: in one process, as `bc-ray train --num-workers 0`.")
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                        help="Run the designs that hold the whole graph in one process beside: "
                             "the plain single-process refresh, the unpartitioned refresh and, "
                             "with --sharded, a one-process bump (they must fit).")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="Start from this store (a local folder, left as it is: the run "
                             "works on a copy of hard links) whose version 0 is trained and "
                             "refreshed by an earlier --sharded run of the same --days: the "
                             "ingest and version 0 are skipped.")
    parser.add_argument("--id-optimizer", default="adam",
                        help="`bc-ray train --id-optimizer` of every training command (adam or "
                             "rowwise_adagrad: one float of state per ID row, not 2 d).")
    parser.add_argument("--keep-store", default=None, metavar="DIR",
                        help="Keep a copy (hard links) of the store as it is after version 0 "
                             "and its refresh in DIR, for a later --store run.")
    parser.add_argument("--bump", action=argparse.BooleanOptionalAction, default=True,
                        help="Train the bump to version 1; --no-bump runs the rest of the path "
                             "on version 0 (with --store: where the bump does not fit).")
    parser.add_argument("--object-store-gb", type=float, default=None,
                        help="The local cluster's object store (default: Ray's, 30%% of the "
                             "memory). Its pages stay resident once a refresh has filled it, so "
                             "at 100M edges the bump's workers need it smaller; what does not "
                             "fit is spilled to disk.")
    args = parser.parse_args()
    if (args.store or args.keep_store) and not args.sharded:
        parser.error("--store and --keep-store are a --sharded run's version 0: pass --sharded W")
    if args.store and args.keep_store:
        parser.error("--keep-store keeps a version 0 this run trains: not with --store")
    import ray

    store_bytes = int(args.object_store_gb * 2**30) if args.object_store_gb else None
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             object_store_memory=store_bytes, log_to_driver=False,
             logging_level=logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    work = scratch_dir("bench-nightly-")
    uri, landing = f"file://{work}/store", f"{work}/landing"
    os.makedirs(landing)
    if args.store:  # the store's files are written once and replaced by renames: links suffice
        subprocess.run(["cp", "-al", args.store, f"{work}/store"], check=True)
    rows: list[dict] = []
    edges = args.days * args.daily
    started = time.perf_counter()

    def record(stage: str, seconds: float, process_mb: float, memory: PeakMemory | None = None,
               note: str = "", worker_log: list[str] | None = None) -> None:
        workers = {} if memory is None else {k: v / MB for k, v in memory.peaks.items()
                                             if k != "driver"}
        private = {} if memory is None else {k: v / MB for k, v in memory.private.items()
                                             if k != "driver"}
        rows.append({"edges": edges, "stage": stage, "seconds": seconds,
                     "process_peak_mb": process_mb, "workers_peak_mb": workers,
                     "workers_private_mb": private, "note": note,
                     **({"worker_log": worker_log} if worker_log else {})})
        print(f"  {stage}: {seconds:.1f}s, process {process_mb:,.0f} MB, workers "
              f"{ {k: round(v) for k, v in workers.items()} } {note}", flush=True)
        write_json("nightly", {"args": vars(args), "results": rows})

    ingest_s, ingest_peak = [], 0.0
    for day in range(0 if args.store else args.days):
        seconds, peak, _ = ingest_day(uri, landing, day, args.daily)
        ingest_s.append(seconds)
        ingest_peak = max(ingest_peak, peak)
        if day % 10 == 9 or day == args.days - 1:
            print(f"  ingested day {day + 1}/{args.days}: {seconds:.1f}s, peak "
                  f"{peak:,.0f} MB ({time.perf_counter() - started:.0f}s so far)", flush=True)
    if ingest_s:
        record(f"ingest {args.days} days of {args.daily:,} (per day)", float(np.mean(ingest_s)),
               ingest_peak, note=f"last day {ingest_s[-1]:.1f}s, {sum(ingest_s):.0f}s in all")

    train = ["train", "--store", uri, "--address", address, "--max-steps", str(args.max_steps),
             "--holdout-days", "1", "--max-align-error-rel", "5", "--min-recall-vs-parent", "0",
             "--id-optimizer", args.id_optimizer]
    one_table = [*train, "--num-workers", "0", "--batch-size", str(args.batch_size)]
    refresh = ["refresh", "--store", uri, "--address", address]
    if args.sharded:
        sharded = [*train, "--sharded", "--num-workers", str(args.sharded), "--targets", "stored",
                   "--batch-size", str(args.batch_size // args.sharded)]  # as many in all
        if not args.store:
            with PeakMemory() as memory:
                seconds, peak, out = run_cli(*sharded)
            record(f"train version 0 (step budget), sharded W={args.sharded}", seconds, peak,
                   memory, _outcome(out), out["worker_log"])
            with PeakMemory() as memory:  # its stored tables are version 1's alignment targets
                seconds, peak, out = run_cli(*refresh, "--full", "--partitions",
                                             str(args.partitions))
            record(f"full refresh of version 0, P={args.partitions}", seconds, peak, memory,
                   f"inside the job {out['seconds']:.1f}s: {_stages(out)}")
            if args.keep_store:
                subprocess.run(["cp", "-al", f"{work}/store", args.keep_store], check=True)
        if args.plain:  # the same bump in one process, from the same version 0, on a copy
            twin = f"{work}/twin"
            shutil.copytree(f"{work}/store", twin)
            swap = {uri: f"file://{twin}"}
            with PeakMemory() as memory:
                seconds, peak, out = run_cli(*[swap.get(a, a) for a in one_table],
                                             "--warm-start", "mean", "--targets", "stored")
            record("bump to version 1 (step budget, warm start), one process, on a copy",
                   seconds, peak, memory, _outcome(out))
            shutil.rmtree(twin)
        if args.bump:
            bump_sharded(sharded, args.sharded, record)
    else:
        seconds, peak, out = run_cli(*one_table)
        record("train version 0 (step budget)", seconds, peak, note=out.get("status", ""))
        with PeakMemory() as memory:
            seconds, peak, out = run_cli(*one_table, "--warm-start", "mean")
        record("bump to version 1 (step budget, warm start)", seconds, peak, memory,
               _outcome(out))
    for count in (0, args.partitions) if args.plain else (args.partitions,):
        with PeakMemory() as memory:
            seconds, peak, out = run_cli(*refresh, "--full", "--partitions", str(count))
        record(f"full refresh, P={count}", seconds, peak, memory,
               f"inside the job {out['seconds']:.1f}s: {_stages(out)}")
    if args.plain:
        (plain_s, plain_peak) = in_fresh_process(plain_refresh, uri, f"{work}/plain")
        record("plain single-process refresh", plain_s, plain_peak / MB)
    seconds, peak, _ = ingest_day(uri, landing, args.days, args.daily)
    record("ingest one more day", seconds, peak)
    with PeakMemory() as memory:
        seconds, peak, out = run_cli(*refresh, "--partitions", str(args.partitions))
    assert out["mode"] == "incremental", out["reason"]
    record(f"incremental refresh, P={args.partitions}", seconds, peak, memory,
           f"{out['mode']}: {out['reason']}; affected {out['affected_fraction']:.0%}; "
           f"{_stages(out)}")
    (load_s, lookup_s), peak = in_fresh_process(lookups, uri)
    record(f"Serve state load, then lookups of {LOOKUP_IDS} ids", load_s, peak / MB,
           note=f"{lookup_s * 1000:.2f} ms per lookup")
    (read_s, count), peak = in_fresh_process(read_view, uri)
    record("ver-0 read of every user", read_s, peak / MB, note=f"{count:,} rows")
    ray.shutdown()
    print_table(f"The nightly path on {args.days} ingested days of {args.daily:,} interactions "
                f"({os.cpu_count()} CPUs; MB; {time.perf_counter() - started:.0f}s in all)",
                ["stage", "s", "process peak", "Ray workers' peaks", "note"],
                [[r["stage"], r["seconds"], f"{r['process_peak_mb']:,.0f}",
                  ", ".join(f"{k} {v:,.0f}" for k, v in r["workers_peak_mb"].items()) or "-",
                  r["note"]] for r in rows])


if __name__ == "__main__":
    main()
