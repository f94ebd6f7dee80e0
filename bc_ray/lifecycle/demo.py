"""`bc-ray demo`: the product end to end, for real, on a local Ray cluster.

1. The data set's first period lands as files and is ingested as batch 0 (the same code as
   `bc-ray data ingest`); version 0 is trained on Ray Train, embeddings refreshed on Ray Data,
   consumer models trained on the ver-0 embeddings they read from the store.
2. For k = 1..K: the next period lands and is ingested as one batch (new users and items
   included), a nightly incremental refresh runs, a version bump trains M_k with B_k, gates and
   publishes it, and the embeddings are refreshed.
3. Ray Serve answers ver-0 compatible embeddings over HTTP, which are fed to the consumers; polars
   reads the same view in batch.
4. A table per version (intended metric, consumer AUC with true ver-0 vs transformed embeddings,
   alignment error, rows refreshed, stage times), written as JSON and PNG into the store.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from datetime import datetime

import numpy as np
import polars as pl
import torch

from bc_ray.consumer.reader import read_embeddings
from bc_ray.core.embedded import embedded
from bc_ray.core.family import ModelSpec
from bc_ray.core.graph import build_graph
from bc_ray.core.registry import get_family
from bc_ray.core.splits import period_split
from bc_ray.core.train_config import TrainConfig
from bc_ray.data import load_dataset
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.ingest.attempt import IngestOutcome
from bc_ray.ingest.batch import ingest
from bc_ray.lifecycle.config import DemoConfig
from bc_ray.lifecycle.consumers import ConsumerSuite, by_index
from bc_ray.lifecycle.landing import land_period
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.store import Store
from bc_ray.store.versions import load_model_bytes
from bc_ray.train.config import GateConfig, TrainJobConfig
from bc_ray.train.job import run_training

Progress = Callable[[str], None]


def _snapshot(config: DemoConfig) -> GraphSnapshot:
    if config.dataset.partition(":")[0] == "synthetic":  # settings it names win over --scale
        return load_dataset(config.dataset, num_users=max(200, int(2000 * config.scale)),
                            num_items=max(150, int(1500 * config.scale)),
                            num_edges=max(5000, int(100_000 * config.scale)), seed=config.seed)
    return load_dataset(config.dataset)


class Demo:
    def __init__(self, config: DemoConfig, progress: Progress) -> None:
        self.config, self.progress = config, progress
        self.store = Store(config.store)
        self.rows: list[dict] = []
        self.model0 = None
        self.consumers: ConsumerSuite | None = None
        self.visible_edges = 0
        self.holdout_days = 7.0
        self.batches: list[IngestOutcome] = []

    # -- stages -------------------------------------------------------------------------------
    def _timed(self, timings: dict, name: str, fn):
        self.progress(name)
        started = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - started, 1)
        return result

    def _ingest(self, timings: dict, snapshot: GraphSnapshot, step: int) -> IngestOutcome:
        """The period ending at t_step lands as Parquet files and is ingested as one batch."""
        start = -1.0 if step == 0 else self.config.time(step - 1)
        end = self.config.time(step)
        self.visible_edges = int(end * snapshot.num_edges)
        files = land_period(self.store, snapshot, start, end, f"period-{step:03d}")
        outcome = self._timed(timings, f"ingest batch {step}", lambda: ingest(
            self.store, files.request, files.mapping, batch_id=f"demo-period-{step:03d}"))
        self.batches.append(outcome)
        return outcome

    def _holdout_days(self, snapshot: GraphSnapshot, cutoff: float) -> float:
        """The calendar days covering the most recent 5% of the timeline seen so far."""
        timestamps = snapshot.edges["timestamp"]
        t = snapshot.edges["t"]
        end = int(timestamps.filter(t <= cutoff).max())
        start = int(timestamps.filter(t <= cutoff - 0.05).max())
        return max((end - start) / 86_400, 1.0 / 24)

    def _spec(self, version: int) -> ModelSpec:
        """Wider by `width_step` per version (GraphSAGE keeps its depth in the demo)."""
        family = get_family(self.config.model)
        if family.name == "graphsage":
            return family.parse_spec(f"hidden={self.config.hidden}").grown(
                version, width_step=self.config.width_step, deepen_at=10**6)
        return family.grown(family.default_spec(), version, self.config.width_step)

    def _job(self, version: int) -> TrainJobConfig:
        spec = self._spec(version)
        gate = GateConfig(max_align_error_rel=0.5, min_recall_vs_parent=0.5)
        if self.config.method == "non-bc":  # published anyway: showing the damage is the point
            gate = GateConfig(max_align_error_rel=math.inf, min_recall_vs_parent=0.0)
        # At least ~30 steps per epoch, so small demos align as well as large ones.
        batch = int(min(4096, max(256, self.visible_edges // (30 * self.config.num_workers or 30))))
        train = TrainConfig(epochs=self.config.epochs, batch_size=batch, lr=3e-3,
                            eval_every=5, warmup_epochs=min(10, self.config.epochs // 2),
                            seed=self.config.seed)
        return TrainJobConfig(store=self.store.uri, method=self.config.method,
                              model=self.config.model,
                              num_workers=self.config.num_workers, spec=spec, train=train,
                              holdout_days=self.holdout_days, gate=gate, checkpoint_every=10,
                              cpus_per_worker=1.0 if self.config.num_workers <= 2 else 0.5)

    def _ver0(self, snapshot: GraphSnapshot) -> dict:
        """True ver-0 embeddings (M_0 on the store's current graph: what Keep-All would serve),
        the store's ver-0 compatible view read with polars, and the current version's own
        embeddings fed raw (what consumers get without bc_ray, as Non-BC: the first ver-0
        dimensions), all laid out by the data set's entity index (zeros for entities not
        ingested yet)."""
        current = load_snapshot(self.store)
        graph = build_graph(current, current.edges, now=1.0)
        z = torch.cat(embedded(self.model0, graph)).numpy()
        true = []
        for part, entity in ((z[: graph.num_users], "user"), (z[graph.num_users:], "item")):
            frame = pl.DataFrame({"id": current.entities(entity)["id"],
                                  "embedding": pl.Series(part, dtype=pl.Array(pl.Float32,
                                                                              part.shape[1]))})
            true.append(by_index(frame, snapshot, entity))
        # through the transform chain from the latest table (what keep-latest serves), not
        # the stored ver-0 table retention may still keep
        served = tuple(by_index(read_embeddings(self.store.uri, e, version=0,
                                                prefer_stored=False), snapshot, e)
                       for e in ("user", "item"))
        dim = served[0].shape[1]
        raw = tuple(_fit_width(by_index(read_embeddings(self.store.uri, e), snapshot, e), dim)
                    for e in ("user", "item"))
        return {"true": tuple(true), "served": served, "raw": raw}

    def _score(self, snapshot: GraphSnapshot, version: int, cutoff: float) -> dict:
        split = period_split(snapshot, cutoff, cutoff + self.config.step, seed=self.config.seed)
        views = self._ver0(snapshot)
        if self.consumers is None:
            self.consumers = ConsumerSuite.train(split, *views["served"])
        users = snapshot.users["first_t"].to_numpy() <= cutoff
        items = snapshot.items["first_t"].to_numpy() <= cutoff
        gap = torch.cat([(views["served"][0] - views["true"][0])[torch.from_numpy(users)],
                         (views["served"][1] - views["true"][1])[torch.from_numpy(items)]])
        return {"auc_true_ver0": self.consumers.auc(split, *views["true"]),
                "auc_transformed": self.consumers.auc(split, *views["served"]),
                "auc_raw_current": self.consumers.auc(split, *views["raw"]),
                "align_error": float(gap.norm(dim=1).mean()), "split": split}

    def version_zero(self, snapshot: GraphSnapshot) -> None:
        timings: dict = {}
        cutoff = self.config.time(0)
        self._ingest(timings, snapshot, 0)
        self.holdout_days = self._holdout_days(snapshot, cutoff)
        trained = self._timed(timings, "train version 0 (Ray Train)",
                              lambda: run_training(self._job(0)))
        refresh = self._timed(timings, "refresh version 0 (Ray Data)", lambda: run_refresh(
            RefreshConfig(store=self.store.uri, mode="full")))
        self.model0 = get_family(self.config.model).from_bytes(load_model_bytes(self.store, 0),
                                                                light=True)
        scores = self._timed(timings, "train consumers on ver-0",
                             lambda: self._score(snapshot, 0, cutoff))
        self._row(0, cutoff, trained, refresh, None, scores, timings)

    def bump(self, snapshot: GraphSnapshot, version: int) -> None:
        timings: dict = {}
        cutoff = self.config.time(version)
        self._ingest(timings, snapshot, version)
        self.holdout_days = self._holdout_days(snapshot, cutoff)
        nightly = self._timed(timings, "nightly refresh (incremental)", lambda: run_refresh(
            RefreshConfig(store=self.store.uri)))
        trained = self._timed(timings, f"bump to version {version} ({self.config.method})",
                              lambda: run_training(self._job(version)))
        refresh = None
        if trained.status == "published":
            refresh = self._timed(timings, f"refresh version {trained.version}",
                                  lambda: run_refresh(RefreshConfig(store=self.store.uri,
                                                                    mode="full")))
        scores = self._timed(timings, "score consumers", lambda: self._score(snapshot, version,
                                                                            cutoff))
        self._row(version, cutoff, trained, refresh, nightly, scores, timings)

    def _row(self, step, cutoff, trained, refresh, nightly, scores, timings) -> None:
        batch = self.batches[-1]
        self.rows.append({
            "step": step, "t": cutoff, "batch": batch.batch_id, "batch_edges": batch.stats["edges"],
            "new_users": batch.stats["new_users"], "new_items": batch.stats["new_items"],
            "version": trained.version, "status": trained.status,
            "reasons": trained.reasons, "dim": self.store.state().version(trained.version).dim,
            "recall_at_50": trained.metrics.get("recall_at_50"),
            "auc_true_ver0": scores["auc_true_ver0"]["mean"],
            "auc_transformed": scores["auc_transformed"]["mean"],
            "auc_raw_current": scores["auc_raw_current"]["mean"],
            "auc_by_task": {"true": scores["auc_true_ver0"],
                            "transformed": scores["auc_transformed"],
                            "raw_current": scores["auc_raw_current"]},
            "align_error": scores["align_error"],
            "rows_refreshed": sum((refresh or nightly).stats["rows"].values()),
            "nightly_refresh": None if nightly is None else {
                "mode": nightly.mode, "affected_fraction": nightly.stats["affected_fraction"]},
            "seconds": timings})
        self.last_split = scores["split"]

    def serve_check(self, snapshot: GraphSnapshot) -> dict:
        """Ver-0 embeddings over HTTP from Ray Serve, fed to the consumers."""
        import httpx
        from ray import serve

        from bc_ray.serve.app import build_app
        from bc_ray.serve.config import ServeConfig, ServeSettings

        self.progress("Ray Serve: ver-0 embeddings over HTTP")
        serve.start(http_options={"host": "127.0.0.1", "port": self.config.port})
        settings = ServeSettings(max_rows=4096)
        serve.run(build_app(ServeConfig(store=self.store.uri, settings=settings)),
                  name="bc-ray-demo", route_prefix="/")
        base = f"http://127.0.0.1:{self.config.port}"
        served = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for entity in ("user", "item"):
                ids = snapshot.entities(entity)["id"].to_list()
                parts = []
                for start in range(0, len(ids), settings.max_rows):
                    answer = client.post("/v1/embeddings", json={
                        "entity": entity, "ids": ids[start:start + settings.max_rows],
                        "version": 0})
                    answer.raise_for_status()
                    parts.append(np.asarray(answer.json()["embeddings"], np.float32))
                served.append(torch.from_numpy(np.concatenate(parts)))
            versions = client.get("/v1/versions").json()
        auc = self.consumers.auc(self.last_split, *served)
        serve.delete("bc-ray-demo")
        return {"url": base, "served_version": versions["current_version"],
                "auc_from_http": auc["mean"]}


def _fit_width(z: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` coordinates (zero-padded when narrower): how a consumer built for
    ver-0's width reads another version's rows."""
    if z.shape[1] >= dim:
        return z[:, :dim]
    return torch.nn.functional.pad(z, (0, dim - z.shape[1]))


def run_demo(config: DemoConfig, progress: Progress = print) -> dict:
    started = time.perf_counter()
    progress(f"loading {config.dataset}")
    snapshot = _snapshot(config)
    demo = Demo(config, progress)
    demo.version_zero(snapshot)
    for version in range(1, config.versions + 1):
        demo.bump(snapshot, version)
    http = demo.serve_check(snapshot)
    report = {"config": dataclasses.asdict(config), "store": demo.store.uri,
              "dataset": snapshot.meta.name, "rows": demo.rows, "serve": http,
              "seconds": round(time.perf_counter() - started, 1),
              "finished_at": datetime.now().isoformat(timespec="seconds")}
    return report


def default_store() -> str:
    return f"file://{os.path.abspath('demo-store')}/run-{time.strftime('%Y%m%d-%H%M%S')}"
