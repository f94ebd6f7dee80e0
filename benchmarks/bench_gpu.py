"""Training and inference on one GPU against the CPU of the same machine, in the same run.

What `--use-gpu` runs on each Ray Train worker, without Ray (the device machine has none): the
trainer on `cuda`, its joint module wrapped in DDP over an NCCL process group, the row-sparse ID
gradients averaged over NCCL (`average_sparse_gradients`), evaluation on the GPU; then the
refresh's layer-wise inference with the model and graph on the GPU. Version 0 (non-bc) is
trained first, version 1 (bc-aligner, multi-step) against it, on each device alike. Without a
GPU the script runs the CPU half and says so.

    python benchmarks/bench_gpu.py [--edges 1000000] [--epochs 3] [--hidden 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import traceback

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.core.sparse_rows import average_sparse_gradients  # noqa: E402
from bc_ray.core.splits import period_split  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.core.version import PreviousVersion, prepare_trainer, split_evaluator  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.models.graphsage.inference import layerwise_embed  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402


def synchronized(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(method: str, spec: VersionSpec, split, config: TrainConfig, device: torch.device,
          previous: PreviousVersion | None) -> tuple[object, dict]:
    """One version on `device`, DDP-wrapped as a Ray Train worker wraps it; steady edges/s over
    the epochs after the first."""
    trainer = prepare_trainer(get_method(method), spec, split.graph, config, previous,
                              lambda targets: split_evaluator(split, targets),
                              item_pool=split.item_pool, device=device)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        trainer.joint, trainer.sparse_parameter_names())
    trainer.module = DistributedDataParallel(
        trainer.joint, device_ids=[device.index] if device.type == "cuda" else None)
    history = []
    for epoch in range(1, config.epochs + 1):
        history.append(trainer.run_epoch(epoch))
        synchronized(device)
    steady = history[1:] or history
    rate = sum(h["edges"] for h in steady) / sum(h["seconds"] for h in steady)
    metrics = trainer.evaluate(config.epochs)
    return trainer, {"edges_per_s": rate, "loss": history[-1]["loss"],
                     "align": history[-1]["align"], **metrics}


def sparse_average_check(trainer, device: torch.device) -> str:
    """One backward, then the ID gradients averaged over the process group: with one rank the
    mean is the gradient itself."""
    if not trainer.sparse_parameters:
        return "no row-sparse tables (full-graph mode)"
    trainer.module.train()
    batch = next(iter(trainer.task.epoch(99)))
    loss = trainer.module(batch, None)[0]
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    before = [p.grad.coalesce().to_dense().clone() for p in trainer.sparse_parameters
              if p.grad is not None]
    average_sparse_gradients(trainer.sparse_parameters)
    after = [p.grad.coalesce().to_dense() for p in trainer.sparse_parameters
             if p.grad is not None]
    worst = max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))
    return f"ok on {dist.get_backend()} ({device.type}), max change {worst:.2e}"


def inference_seconds(model, graph, device: torch.device,
                      repeats: int = 5) -> tuple[float, torch.Tensor]:
    """The median of `repeats` timed passes, after a warm-up (CUDA kernels, the adjacency)."""
    model = model.to(device)
    graph = graph.to(device)
    layerwise_embed(model, graph)
    times = []
    for _ in range(repeats):
        synchronized(device)
        started = time.perf_counter()
        out = layerwise_embed(model, graph)[-1]
        synchronized(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), out.cpu()


def guarded(results: dict, name: str, fn):
    try:
        return fn()
    except Exception as error:  # report every section, whichever fails
        traceback.print_exc()
        results.setdefault("failures", {})[name] = f"{type(error).__name__}: {error}"
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", default="64",
                        help="widths, comma-separated (256 on the CPU at 1M edges: over a minute "
                             "an epoch on 16 threads)")
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    has_gpu = torch.cuda.is_available()
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if has_gpu else [])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    # As a Ray Train worker: NCCL for the GPU's tensors; gloo for the CPU run beside it.
    dist.init_process_group("cpu:gloo,cuda:nccl" if has_gpu else "gloo", rank=0, world_size=1)

    started = time.perf_counter()
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=args.edges // 50, num_items=args.edges // 70, num_edges=args.edges)))
    split = period_split(snapshot, 0.8, 0.9, max_eval_users=5000)
    print(f"graph: {split.graph.num_nodes:,} nodes, {split.graph.num_edges:,} training edges "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    results: dict = {"edges": args.edges, "train_edges": split.graph.num_edges,
                     "gpu": torch.cuda.get_device_name(0) if has_gpu else None,
                     "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "runs": []}
    train_rows, infer_rows = [], []
    for hidden in (int(h) for h in args.hidden.split(",")):
        spec = VersionSpec(hidden_dim=hidden)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch, eval_every=args.epochs,
                             warmup_epochs=0, mode="sampled", lam=16.0,
                             sparse_ids_min_nodes=0)  # the row-sparse ID path at any size
        by_device, reference = {}, None
        for device in devices:
            key = f"{hidden}/{device.type}"
            v0 = guarded(results, f"train v0 {key}",
                         lambda: train("non-bc", spec, split, config, device, None))
            if v0 is None:
                continue
            previous = PreviousVersion(0, spec, [torch.eye(spec.output_dim)],
                                       model=v0[0].model.cpu().eval())
            v1 = guarded(results, f"train v1 {key}",
                         lambda: train("bc-aligner", spec, split, config, device, previous))
            check = guarded(results, f"sparse average {key}",
                            lambda: sparse_average_check((v1 or v0)[0], device))
            # The same model (the first device's version 0) on every device: equal to float
            # tolerance, or the GPU path computes something else.
            if reference is None:
                reference = copy.deepcopy(v0[0].model).cpu()
            infer = guarded(results, f"inference {key}",
                            lambda: inference_seconds(copy.deepcopy(reference), split.graph,
                                                      device))
            by_device[device.type] = {"v0": v0[1], "v1": v1 and v1[1], "sparse_average": check,
                                      "inference_s": infer and infer[0]}
            if infer is not None:
                by_device[device.type]["_z"] = infer[1]
            run = {"hidden": hidden, "device": device.type,
                   **{k: v for k, v in by_device[device.type].items() if k != "_z"}}
            results["runs"].append(run)
            print(run, flush=True)
            write_json("gpu", results)  # kept should a later run hit the time limit
        cpu, gpu = by_device.get("cpu"), by_device.get("cuda")
        for version in ("v0", "v1"):
            if cpu and cpu[version]:
                g = gpu[version] if gpu and gpu[version] else None
                train_rows.append([hidden, version, cpu[version]["edges_per_s"],
                                   g["edges_per_s"] if g else "-",
                                   g["edges_per_s"] / cpu[version]["edges_per_s"] if g else "-",
                                   cpu[version]["recall"], g["recall"] if g else "-",
                                   cpu[version].get("align_error", "-"),
                                   g.get("align_error", "-") if g else "-"])
        if cpu and cpu["inference_s"]:
            g = gpu["inference_s"] if gpu and gpu["inference_s"] else None
            same = (float((gpu["_z"] - cpu["_z"]).abs().max()) if g else "-")
            infer_rows.append([hidden, cpu["inference_s"], g or "-",
                               cpu["inference_s"] / g if g else "-", same])
            results.setdefault("inference_max_abs_diff", {})[hidden] = same
    if train_rows:
        print_table(f"Sampled training, {split.graph.num_edges:,} edges, batch {args.batch}, "
                    f"{args.epochs} epochs (CPU: {torch.get_num_threads()} threads)",
                    ["hidden", "version", "CPU edges/s", "GPU edges/s", "GPU/CPU", "CPU recall",
                     "GPU recall", "CPU align err", "GPU align err"], train_rows)
    if infer_rows:
        print_table("Layer-wise inference of every node (the refresh's compute), s",
                    ["hidden", "CPU s", "GPU s", "speed-up", "max abs diff GPU vs CPU"],
                    infer_rows)
    for name, failure in results.get("failures", {}).items():
        print(f"FAILED {name}: {failure}")
    print("written", write_json("gpu", results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
