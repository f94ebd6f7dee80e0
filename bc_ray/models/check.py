"""A model family checked against bc_ray's contract in one process, in seconds, without Ray:
`bc-ray model check NAME` and `check_family`.

A plug-in that breaks a rule otherwise fails on a cluster minutes into a bump or a refresh: two
ranks that take different step counts hang DDP, a weight one step leaves unused stops Ray Train,
an `affected` that misses an entity leaves a stale row an incremental refresh copies for ever.
Each rule here is one check on a small synthetic graph, said in one line where it fails, so a
team checks its family before anything is installed on a cluster.
"""

from __future__ import annotations

import pickle
import sysconfig
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from bc_ray.core.embedded import embedded
from bc_ray.core.evaluation import alignment_error
from bc_ray.core.family import Changes, EmbeddingModule, ModelFamily, ModelSpec, Vocabularies
from bc_ray.core.family_base import has_warm_start
from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.methods import get_method
from bc_ray.core.registry import family_source, get_family
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.version import PreviousVersion, finish_version, prepare_trainer
from bc_ray.data.snapshot import GraphSnapshot, build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate
from bc_ray.data.timeline import (
    appeared_nodes,
    edge_endpoints,
    edges_between,
    edges_until,
    entity_count_at,
)
from bc_ray.exceptions import BcRayError

# A graph small enough for seconds, large enough for every family's batches and windows.
# Sparse enough that a GNN's new interactions leave some rows untouched (incremental refresh).
GRAPH = SyntheticConfig(num_users=1_000, num_items=800, num_edges=5_000, days=60)
BEFORE = 0.95  # version 0 and the earlier refresh see the edges up to here; then the rest arrive
TRAIN = TrainConfig(epochs=2, batch_size=256, lr=5e-3, eval_every=2, warmup_epochs=0,
                    max_steps=24)
TOLERANCE = 1e-5  # as the refresh's own tests: max abs difference of a row


class ContractError(BcRayError):
    """A family broke a rule of the model contract (the message names the rule)."""


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # passed | failed | skipped
    detail: str
    seconds: float


@dataclass
class FamilyReport:
    """What `check_family` found: each check's result, in the order they ran."""

    family: str
    source: str
    spec: dict[str, Any] | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "source": self.source, "spec": self.spec, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


@dataclass
class Bench:
    """What the checks share: the family, its specs, the graph before and after new data, and
    the models earlier checks made (None until made)."""

    family: ModelFamily
    spec: ModelSpec
    snapshot: GraphSnapshot
    before: GraphTensors
    after: GraphTensors
    seed: int
    spec1: ModelSpec | None = None
    model0: EmbeddingModule | None = None

    def vocab(self, graph: GraphTensors) -> Vocabularies:
        return Vocabularies.of(graph)

    def config(self, **changes: Any) -> TrainConfig:
        return replace(TRAIN, seed=self.seed, **changes)

    def earlier_nodes(self, nodes: np.ndarray) -> np.ndarray:
        """The `before` graph's numbers of `after`'s nodes (entities both have): items follow
        the users, so they shift by the users added since."""
        shift = self.after.num_users - self.before.num_users
        return np.where(nodes < self.after.num_users, nodes, nodes - shift)


Check = Callable[[Bench], str]


def check_family(name: str, spec: str | None = None, *, seed: int = 0,
                 on_check: Callable[[CheckResult], None] | None = None) -> FamilyReport:
    """Run every check of the model contract on the family called `name` (as `--model` names
    it) with `spec` (`key=value` text; default: the family's default spec); `on_check` hears
    each result as it comes. Nothing is written anywhere and no Ray cluster starts."""
    report = FamilyReport(name, family_source(name), None)

    def record(result: CheckResult) -> None:
        report.checks.append(result)
        if on_check is not None:
            on_check(result)

    started = time.perf_counter()
    try:
        family = get_family(name)
    except BcRayError as error:
        record(CheckResult("loads", "failed", str(error), _since(started)))
        return report
    record(CheckResult("loads", "passed", f"{type(family).__qualname__}, model API "
                       f"{family.api_version}, refresh strategy {family.refresh_strategy!r}",
                       _since(started)))
    started = time.perf_counter()
    try:
        chosen = family.parse_spec(spec) if spec else family.default_spec()
        report.spec = chosen.to_dict()
    except Exception as error:  # noqa: BLE001 - a plug-in's parser may raise anything
        record(CheckResult("spec", "failed", _said(error), _since(started)))
        return report
    bench = _bench(family, chosen, seed)
    for check_name, check in CHECKS:
        record(_run(check_name, check, bench, report.checks))
    return report


def _bench(family: ModelFamily, spec: ModelSpec, seed: int) -> Bench:
    """The graph at `BEFORE` holds only the entities seen by then (indices follow first
    appearance, so they are the first ones): the later graph has entities newer than M_0, as
    after a night's ingestion."""
    snapshot = build_snapshot(generate(replace(GRAPH, seed=seed)))
    users, items = (entity_count_at(snapshot, entity, BEFORE) for entity in ("user", "item"))
    earlier = replace(snapshot, users=snapshot.users.head(users), items=snapshot.items.head(items),
                      edges=edges_until(snapshot, BEFORE))
    before = build_graph(earlier, earlier.edges, BEFORE)
    after = build_graph(snapshot, edges_until(snapshot, 1.0), 1.0)
    return Bench(family, spec, snapshot, before, after, seed)


# Each check needs the ones named here to have passed (else it is skipped, saying which failed).
NEEDS = {"build": "spec", "ranks": "build", "train": "ranks", "align": "train",
         "bytes": "train", "fine-tune": "train", "warm-start": "train", "refresh": "bytes",
         "incremental": "refresh"}


def _run(name: str, check: Check, bench: Bench, done: list[CheckResult]) -> CheckResult:
    needed = NEEDS.get(name)
    earlier = next((c for c in done if c.check == needed), None)
    if needed is not None and (earlier is None or earlier.status != "passed"):
        return CheckResult(name, "skipped", f"needs {needed!r}, which did not pass", 0.0)
    started = time.perf_counter()
    try:
        detail = check(bench)
    except _Skip as skip:
        return CheckResult(name, "skipped", str(skip), _since(started))
    except Exception as error:  # noqa: BLE001 - a plug-in may raise anything: it is the finding
        return CheckResult(name, "failed", _said(error), _since(started))
    return CheckResult(name, "passed", detail, _since(started))


class _Skip(Exception):
    """A check that does not apply to this family (the reason is its message)."""


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _said(error: BaseException) -> str:
    """The error in one line, with the plug-in's own line that raised it: the innermost frame
    outside bc_ray, the standard library and the array libraries it calls."""
    text = str(error) if isinstance(error, BcRayError) else f"{type(error).__name__}: {error}"
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not any(Path(f.filename).resolve().is_relative_to(root)
                         for root in _NOT_THE_PLUGIN)]
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    return text


_NOT_THE_PLUGIN = tuple(Path(p).resolve() for p in (
    Path(__file__).parents[1], Path(torch.__file__).parent, Path(np.__file__).parent,
    sysconfig.get_paths()["stdlib"]))


# -- the checks, in order ---------------------------------------------------------------------
def check_spec(bench: Bench) -> str:
    """The spec round-trips through the version record (JSON), and so does version 1's."""
    family, spec = bench.family, bench.spec
    dim = spec.output_dim
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ContractError(f"output_dim must be a positive int, got {dim!r}")
    for label, one in (("the spec", spec), ("version 1's spec (grown)", _grown(bench))):
        record = orjson.loads(orjson.dumps(one.to_dict()))
        back = family.spec_from_dict(record)
        if back != one:
            raise ContractError(f"{label} does not survive the version record: "
                                f"spec_from_dict(to_dict()) gives {back!r}, not {one!r}")
    return f"output_dim {dim}; version 1 grows to {bench.spec1.output_dim}"


def _grown(bench: Bench) -> ModelSpec:
    spec1 = bench.family.grown(bench.spec, 1, 8)
    if getattr(spec1, "family", None) != bench.family.name:
        raise ContractError(f"grown() returned a spec of family {getattr(spec1, 'family', None)!r}")
    bench.spec1 = spec1
    return spec1


def check_build(bench: Bench) -> str:
    """A fresh model embeds every entity of the graph (shapes and dtypes checked)."""
    model = bench.family.build(bench.spec, bench.vocab(bench.before))
    if not isinstance(model, torch.nn.Module):
        raise ContractError(f"build() must return a torch.nn.Module, got {type(model).__name__}")
    if model.spec != bench.spec:
        raise ContractError("the model's .spec is not the spec it was built from")
    z_user, z_item = embedded(model, bench.before)
    _finite(z_user, z_item, "a fresh model's embed")
    try:  # a refresh after new data embeds entities the model was not built for
        _finite(*embedded(model, bench.after), "embed of a grown graph")
    except ContractError:
        raise
    except Exception as error:  # noqa: BLE001 - the plug-in's own failure, located
        raise ContractError(f"the model cannot embed a graph with entities newer than itself "
                            f"({_said(error)}); a refresh after new data does: give them a row "
                            "of their own, e.g. the padding row (FeatureEncoder, id_tables)") \
            from None
    count = sum(p.numel() for p in model.parameters())
    return (f"{count} parameters; embeds {z_user.shape[0]} users and {z_item.shape[0]} items, "
            f"and {bench.after.num_nodes - bench.before.num_nodes} entities newer than itself")


def check_ranks(bench: Bench) -> str:
    """Every rank of a data-parallel run takes the same number of steps (DDP steps together:
    a rank with fewer steps leaves the others waiting for ever)."""
    config = bench.config()
    counts = []
    for rank in (0, 1):
        model = bench.family.build(bench.spec, bench.vocab(bench.before))
        task = bench.family.task(model, bench.before, config, rank=rank, world_size=2)
        epochs = [task.epoch(epoch) for epoch in (1, 2)]
        counts.append([len(batches) for batches in epochs])
        if min(counts[-1]) < 1:
            raise ContractError(f"rank {rank}'s epoch has no batches")
        examples = task.examples(next(iter(epochs[0])))
        if not isinstance(examples, Integral) or isinstance(examples, bool) or examples < 1:
            raise ContractError(f"examples(batch) must be a positive int (edges/s counts it), "
                                f"got {examples!r}")
    if counts[0] != counts[1]:
        raise ContractError(f"with 2 ranks, rank 0 takes {counts[0]} steps in epochs 1 and 2 "
                            f"and rank 1 takes {counts[1]}: every rank must take as many (DDP)")
    return f"2 ranks take {counts[0][0]} steps each per epoch"


def check_train(bench: Bench) -> str:
    """Version 0 trains: every weight gets a gradient on a step (DDP's rule), the loss stays
    finite, and the weights move."""
    trainer = prepare_trainer(get_method("bc-aligner"), bench.spec, bench.before, bench.config(),
                              None, family=bench.family)
    before = _embeddings(trainer.model, bench.before)
    _every_weight_used(trainer, "version 0")
    result = trainer.fit()
    bench.model0 = result.model
    moved = float((_embeddings(result.model, bench.before) - before).abs().max())
    if moved == 0.0:
        raise ContractError("training left every embedding unchanged: do the task's losses "
                            "reach the model's weights?")
    losses = " → ".join(f"{h['loss']:.3g}" for h in result.history)
    return f"{trainer.steps_done} steps, loss {losses}"


def check_align(bench: Bench) -> str:
    """Version 1 (grown) trains with BC-Aligner aligned to version 0, warm-started where the
    family can: B_1 and M_1 get gradients, and B_1 maps z_1 near z_0."""
    warm = "mean" if has_warm_start(bench.family) else "off"
    dim0 = bench.spec.output_dim
    previous = PreviousVersion(0, bench.spec, [torch.eye(dim0)], model=bench.model0)
    config = bench.config(warm_start=warm)
    method = get_method("bc-aligner")
    trainer = prepare_trainer(method, bench.spec1, bench.after, config, previous,
                              family=bench.family)
    _every_weight_used(trainer, "version 1 (with B_1)")
    outcome = finish_version(method, trainer.fit(), bench.after, config, previous)
    weight, bias = outcome.transform
    z1, z0 = _embeddings(outcome.model, bench.after), _embeddings(bench.model0, bench.after)
    error = alignment_error(z1 @ torch.from_numpy(weight).T + torch.from_numpy(bias), z0)
    relative = error / max(float(z0.norm(dim=1).mean()), 1e-12)
    if not np.isfinite(relative):
        raise ContractError(f"B_1's alignment error is {relative}")
    return (f"B_1: {bench.spec1.output_dim} → {dim0}, align error (rel) {relative:.3f}; "
            f"warm start {warm}")


def check_bytes(bench: Bench) -> str:
    """The model read back from its bytes (by a trainer, and `light` by a refresh task) has
    its spec and embeds exactly as the original."""
    data = bench.family.to_bytes(bench.model0)
    if not isinstance(data, bytes):
        raise ContractError(f"to_bytes() must return bytes, got {type(data).__name__}")
    expected = _embeddings(bench.model0, bench.before)
    for light in (False, True):
        back = bench.family.from_bytes(data, light=light)
        if back.spec != bench.spec:
            raise ContractError(f"from_bytes(light={light}) gives spec {back.spec!r}")
        _same(_embeddings(back, bench.before), expected, f"from_bytes(light={light})'s model")
    return f"{len(data)} bytes; read back (light too), it embeds as the original"


def check_fine_tune(bench: Bench) -> str:
    """Finetune-M0: M_1 starts as M_0 exactly."""
    model = bench.family.build(bench.spec, bench.vocab(bench.before))
    bench.family.fine_tune_from(model, bench.model0)
    _same(_embeddings(model, bench.before), _embeddings(bench.model0, bench.before),
          "a model after fine_tune_from(M_0)")
    return "a fresh model after fine_tune_from(M_0) embeds as M_0"


def check_warm_start(bench: Bench) -> str:
    """Each `--warm-start` strategy makes a model that embeds (version 1's spec, newer graph)."""
    if not has_warm_start(bench.family):
        raise _Skip("the family has no warm start (FamilyBase's default: bumps use "
                    "--warm-start off)")
    for strategy in ("mean", "metadata"):
        model = bench.family.build(bench.spec1, bench.vocab(bench.after))
        bench.family.warm_start(model, bench.model0, bench.after, strategy, bench.seed)
        _finite(*embedded(model, bench.after), f"the model warm-started by {strategy!r}")
    return "mean and metadata warm starts embed"


def check_refresh(bench: Bench) -> str:
    """A refresh of a graph grown since M_0 was trained (entities newer than the model
    included): `embed_inputs` survives the object store (pickled), and `embed` by a light model
    over shuffled runs of nodes gives the model's own rows, in the order asked."""
    family, graph = bench.family, bench.after
    light = family.from_bytes(family.to_bytes(bench.model0), light=True)
    inputs = _shipped(family.embed_inputs(bench.spec, graph))
    expected = _embeddings(bench.model0, graph).numpy()
    order = np.random.default_rng(bench.seed).permutation(graph.num_nodes)
    for run in np.array_split(order, 3):
        _same(_embed(family, light, inputs, run, bench.spec.output_dim), expected[run],
              "embed(model, embed_inputs(...), nodes) for a shuffled run of nodes")
    return f"3 shuffled runs of {graph.num_nodes} nodes equal the model's own embed"


def check_incremental(bench: Bench) -> str:
    """After new interactions and entities, every row outside `affected` is what a full refresh
    computes (an incremental refresh copies it), and every new entity is affected."""
    family, spec, model = bench.family, bench.spec, bench.model0
    blocker = family.incremental_blocker(spec)
    if blocker:
        raise _Skip(f"this spec never refreshes incrementally: {blocker}")
    new_edges = edges_between(bench.snapshot, BEFORE, 1.0)
    changes = Changes(edge_endpoints(new_edges, bench.after.num_users),
                      appeared_nodes(bench.snapshot, BEFORE))
    inputs = _shipped(family.embed_inputs(spec, bench.after))
    affected = np.unique(np.asarray(family.affected(spec, inputs, changes), dtype=np.int64))
    missing = np.setdiff1d(changes.entities, affected)
    if missing.size:
        raise ContractError(f"affected() leaves out {missing.size} entities added since (e.g. "
                            f"{_node(int(missing[0]), bench.after)}): they have no earlier row "
                            "to copy")
    kept = np.setdiff1d(np.arange(bench.after.num_nodes), affected)
    dim = spec.output_dim
    earlier_inputs = _shipped(family.embed_inputs(spec, bench.before))
    earlier = _embed(family, model, earlier_inputs, bench.earlier_nodes(kept), dim)
    now = _embed(family, model, inputs, kept, dim)
    changed = np.flatnonzero(np.abs(earlier - now).max(axis=1) > TOLERANCE) if kept.size else kept
    if changed.size:
        raise ContractError(f"{changed.size} rows outside affected() changed with the new data "
                            f"(e.g. {_node(int(kept[changed[0]]), bench.after)}): an incremental "
                            "refresh would copy them stale; affected() must name every node "
                            "whose embedding new interactions or entities may change")
    return (f"{affected.size} of {bench.after.num_nodes} nodes affected by {new_edges.height} "
            f"new interactions; the other {kept.size} rows equal a full refresh")


CHECKS: list[tuple[str, Check]] = [
    ("spec", check_spec), ("build", check_build), ("ranks", check_ranks),
    ("train", check_train), ("align", check_align), ("bytes", check_bytes),
    ("fine-tune", check_fine_tune), ("warm-start", check_warm_start),
    ("refresh", check_refresh), ("incremental", check_incremental)]


# -- shared helpers -----------------------------------------------------------------------------
def _embeddings(model: EmbeddingModule, graph: GraphTensors) -> torch.Tensor:
    return torch.cat(embedded(model, graph))


def _embed(family: ModelFamily, model: EmbeddingModule, inputs: Any, nodes: np.ndarray,
           dim: int) -> np.ndarray:
    """`family.embed` of `nodes`, refusing anything but one float32 row of `dim` per node."""
    with torch.no_grad():
        rows = family.embed(model, inputs, nodes)
    if not isinstance(rows, np.ndarray) or rows.dtype != np.float32 \
            or rows.shape != (len(nodes), dim):
        got = (f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray)
               else type(rows).__name__)
        raise ContractError(f"embed(model, inputs, nodes) must return a float32 numpy array "
                            f"of shape ({len(nodes)}, {dim}); got a {got}")
    return rows


def _shipped(inputs: Any) -> Any:
    """`inputs` after a trip through pickle, as Ray's object store gives it to a task."""
    try:
        return pickle.loads(pickle.dumps(inputs, protocol=5))
    except Exception as error:  # noqa: BLE001 - whatever the object holds
        raise ContractError(f"embed_inputs(...) returned a {type(inputs).__name__} that cannot "
                            f"be pickled ({type(error).__name__}: {error}); refresh ships it "
                            "to its tasks through Ray's object store") from None


def _every_weight_used(trainer, label: str) -> None:
    """One step of the trainer; every trainable weight must have a gradient after it."""
    batch = next(iter(trainer.task.epoch(1)))
    trainer.step(batch)
    unused = [name for name, p in trainer.joint.named_parameters()
              if p.requires_grad and p.grad is None]
    if unused:
        raise ContractError(f"{label}: a training step leaves {len(unused)} weight(s) without a "
                            f"gradient ({', '.join(unused[:4])}); every step must use every "
                            "trainable weight (DDP on Ray Train cannot skip unused ones)")


def _node(node: int, graph: GraphTensors) -> str:
    if node < graph.num_users:
        return f"user {node} (node {node})"
    return f"item {node - graph.num_users} (node {node})"


def _finite(z_user: torch.Tensor, z_item: torch.Tensor, what: str) -> None:
    if not (torch.isfinite(z_user).all() and torch.isfinite(z_item).all()):
        raise ContractError(f"{what} holds NaN or inf")


def _same(got: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray,
          what: str) -> None:
    difference = float(np.abs(np.asarray(got) - np.asarray(expected)).max(initial=0.0))
    if not difference <= TOLERANCE:
        raise ContractError(f"{what} differs from the expected rows by up to {difference:.3g} "
                            f"(tolerance {TOLERANCE})")
