"""The rules of the model contract, one function each, in the order `check_family` runs them:
each returns what it found, or raises `ContractError` naming the rule broken (or
`NotApplicable` saying why it does not apply)."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Callable
from numbers import Integral

import numpy as np
import orjson
import torch

from bc_ray.core.embedded import embedded
from bc_ray.core.evaluation import relative_alignment_error
from bc_ray.core.family import ModelSpec, Vocabularies
from bc_ray.core.family_base import has_warm_start
from bc_ray.core.graph import GraphTensors
from bc_ray.core.methods import get_method
from bc_ray.core.trainer import VersionTrainer
from bc_ray.core.version import PreviousVersion, finish_version, prepare_trainer
from bc_ray.exceptions import TrainingError
from bc_ray.models.check_bench import (
    TRAIN,
    Bench,
    ContractError,
    NotApplicable,
    check_finite,
    check_same,
    close,
    embed_rows,
    embeddings,
    node_name,
    said,
    shipped,
)

STEPS_CHECKED = 3  # DDP needs every weight on every step, not only on the first


def check_spec(bench: Bench) -> str:
    """The spec round-trips through the version record (JSON), and so does version 1's."""
    family, spec = bench.family, bench.spec
    dim = spec.output_dim
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ContractError(f"output_dim must be a positive int, got {dim!r}")
    spec1 = family.grown(spec, 1, 8)
    if getattr(spec1, "family", None) != family.name:
        raise ContractError(f"grown() returned a spec of family {getattr(spec1, 'family', None)!r}")
    bench.spec1 = spec1
    varied = _varied(spec)
    for label, one in [("the spec", spec), ("version 1's spec (grown)", spec1), *varied]:
        try:
            back = family.spec_from_dict(orjson.loads(orjson.dumps(one.to_dict())))
        except Exception:  # noqa: BLE001 - a variant the family's own reader refuses is no spec
            if (label, one) in varied:
                continue
            raise
        if back != one:
            raise ContractError(f"{label} does not survive the version record: "
                                f"spec_from_dict(to_dict()) gives {back!r}, not {one!r}")
    return (f"output_dim {dim}; version 1 grows to {spec1.output_dim}; {len(varied)} one-field "
            "changes of the spec survive the version record too")


def _varied(spec: ModelSpec) -> list[tuple[str, ModelSpec]]:
    """The spec with one field changed at a time (a bool flipped, a number moved, another
    Literal choice), where its own checks take the change: a field the record drops shows only
    when it differs from its default."""
    if not dataclasses.is_dataclass(spec):
        return []
    try:
        hints = typing.get_type_hints(type(spec))
    except Exception:  # noqa: BLE001 - hints for type checkers only: no Literal choices then
        hints = {}
    found = []
    for field in dataclasses.fields(spec):
        value, hint = getattr(spec, field.name), hints.get(field.name)
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        if isinstance(value, bool):
            other = not value
        elif isinstance(value, (int, float)):
            other = value + 1 if isinstance(value, int) else value * 1.5 + 0.25
        elif choices:
            other = next((c for c in choices if c != value), value)
        else:
            continue
        try:
            found.append((f"the spec with {field.name}={other!r}",
                          dataclasses.replace(spec, **{field.name: other})))
        except Exception:  # noqa: BLE001 - the spec's own checks refuse the change
            continue
    return found


def check_build(bench: Bench) -> str:
    """A fresh model embeds every entity of the graph (shapes and dtypes checked), and the
    entities of a later graph it was not built for."""
    model = bench.family.build(bench.spec, Vocabularies.of(bench.before))
    if not isinstance(model, torch.nn.Module):
        raise ContractError(f"build() must return a torch.nn.Module, got {type(model).__name__}")
    if model.spec != bench.spec:
        raise ContractError("the model's .spec is not the spec it was built from")
    z_user, z_item = embedded(model, bench.before)
    check_finite(z_user, z_item, "a fresh model's embed")
    try:  # a refresh after new data embeds entities the model was not built for
        check_finite(*embedded(model, bench.after), "embed of a grown graph")
    except ContractError:
        raise
    except Exception as error:  # noqa: BLE001 - the plug-in's own failure, located
        raise ContractError(f"the model cannot embed a graph with entities newer than itself "
                            f"({said(error, bench.home)}); a refresh after new data does: give "
                            "them a row of their own, e.g. the padding row (FeatureEncoder, "
                            "id_tables)") from None
    count = sum(p.numel() for p in model.parameters())
    return (f"{count} parameters; embeds {z_user.shape[0]} users and {z_item.shape[0]} items, "
            f"and {bench.after.num_nodes - bench.before.num_nodes} entities newer than itself")


def check_ranks(bench: Bench) -> str:
    """Every rank of a data-parallel run takes the same number of steps (DDP steps together:
    a rank with fewer steps leaves the others waiting for ever), with 2 and 3 ranks, and at
    batch sizes where a share of the examples just fills one batch."""
    family, graph = bench.family, bench.before
    model = family.build(bench.spec, Vocabularies.of(graph))
    whole = family.task(model, graph, bench.config(), rank=0, world_size=1)
    batches = whole.epoch(1)
    if not hasattr(batches, "__len__"):
        raise ContractError(f"epoch() must return a sequence of batches (the trainer counts "
                            f"them with len()), got a {type(batches).__name__}")
    if len(batches) < 1:
        raise ContractError("an epoch of one rank has no batches")
    examples = sum(_examples(whole, batch) for batch in batches)
    trials = [(2, TRAIN.batch_size)] + [(world, max(1, examples // world)) for world in (2, 3)]
    for world, batch_size in trials:
        config = bench.config(batch_size=batch_size)
        counts = [[len(family.task(model, graph, config, rank=rank, world_size=world).epoch(e))
                   for e in (1, 2)] for rank in range(world)]
        if any(count != counts[0] for count in counts) or min(counts[0]) < 1:
            raise ContractError(f"with {world} ranks and batch size {batch_size}, ranks 0.. take "
                                f"{counts} steps in epochs 1 and 2: every rank must take as many, "
                                "and at least one (DDP waits for ever on a rank with fewer)")
    return (f"{examples} examples; 2 and 3 ranks take as many steps each, at batch sizes "
            f"{sorted({size for _, size in trials})}")


def _examples(task, batch) -> int:
    count = task.examples(batch)
    if not isinstance(count, Integral) or isinstance(count, bool) or count < 1:
        raise ContractError(f"examples(batch) must be a positive int (edges/s counts it), got "
                            f"{count!r}")
    return int(count)


def check_train(bench: Bench) -> str:
    """Version 0 trains: every weight gets a gradient on each of its first steps (DDP's rule),
    the loss stays finite, and the weights move."""
    trainer = prepare_trainer(get_method("bc-aligner"), bench.spec, bench.before, bench.config(),
                              None, family=bench.family)
    before = embeddings(trainer.model, bench.before)
    _every_weight_used(trainer, "version 0")
    result = trainer.fit()
    bench.model0 = result.model
    if float((embeddings(result.model, bench.before) - before).abs().max()) == 0.0:
        raise ContractError("training left every embedding unchanged: do the task's losses "
                            "reach the model's weights?")
    losses = " → ".join(f"{h['loss']:.3g}" for h in result.history)
    return f"{trainer.steps_done} steps, loss {losses}"


def check_align(bench: Bench) -> str:
    """Version 1 (grown) trains with BC-Aligner aligned to version 0 on the later graph,
    warm-started where the family can: B_1 and M_1 get gradients, and B_1's alignment error
    is finite (how small is the gate's business, on real data)."""
    warm = "mean" if has_warm_start(bench.family) else "off"
    dim0 = bench.spec.output_dim
    previous = PreviousVersion(0, bench.spec, [torch.eye(dim0)], model=bench.model0)
    config = bench.config(warm_start=warm)
    method = get_method("bc-aligner")
    trainer = prepare_trainer(method, bench.spec1, bench.after, config, previous,
                              family=bench.family)
    _every_weight_used(trainer, "version 1 (with B_1)")
    outcome = finish_version(method, trainer.fit(), bench.after, config, previous)
    bench.model1 = outcome.model
    weight, bias = outcome.transform
    z1, z0 = embeddings(outcome.model, bench.after), embeddings(bench.model0, bench.after)
    _, relative = relative_alignment_error(
        z1 @ torch.from_numpy(weight).T + torch.from_numpy(bias), z0)
    if not np.isfinite(relative):
        raise ContractError(f"B_1's alignment error is {relative}")
    return (f"B_1: {bench.spec1.output_dim} → {dim0}, align error (rel) {relative:.3f}; "
            f"warm start {warm}")


def check_bytes(bench: Bench) -> str:
    """Versions 0 and 1 read back from their bytes (by a trainer, and `light` by a refresh
    task) have their specs and embed exactly as the originals."""
    sizes = []
    for label, model, graph in (("version 0", bench.model0, bench.before),
                                ("version 1", bench.model1, bench.after)):
        if model is None:  # version 1 did not train (`align` says why)
            continue
        data = bench.family.to_bytes(model)
        if not isinstance(data, bytes):
            raise ContractError(f"to_bytes() must return bytes, got {type(data).__name__}")
        expected = embeddings(model, graph)
        for light in (False, True):
            try:
                back = bench.family.from_bytes(data, light=light)
            except Exception as error:  # noqa: BLE001 - the plug-in's own failure, located
                raise ContractError(f"{label}: from_bytes(light={light}) cannot read what "
                                    f"to_bytes wrote: {said(error, bench.home)}") from None
            if back.spec != model.spec:
                raise ContractError(f"{label}: from_bytes(light={light}) gives spec "
                                    f"{back.spec!r}, not {model.spec!r}")
            check_same(embeddings(back, graph), expected,
                       f"{label}: from_bytes(light={light})'s model")
        sizes.append(f"{label} {len(data)} bytes")
    return f"{', '.join(sizes)}; read back (light too), each embeds as the original"


def check_fine_tune(bench: Bench) -> str:
    """Finetune-M0 on a grown snapshot: M_1, built for the later graph's entities, starts as
    M_0 on every entity M_0 knew."""
    model = bench.family.build(bench.spec, Vocabularies.of(bench.after))
    bench.family.fine_tune_from(model, bench.model0)
    check_same(embeddings(model, bench.before), embeddings(bench.model0, bench.before),
               "a model built for the grown graph after fine_tune_from(M_0)")
    return "a model built for the grown graph embeds M_0's entities as M_0 after fine_tune_from"


def check_warm_start(bench: Bench) -> str:
    """Each `--warm-start` strategy makes a model that embeds (version 1's spec, newer graph)."""
    if not has_warm_start(bench.family):
        raise NotApplicable("the family has no warm start (FamilyBase's default: bumps use "
                            "--warm-start off)")
    for strategy in ("mean", "metadata"):
        model = bench.family.build(bench.spec1, Vocabularies.of(bench.after))
        bench.family.warm_start(model, bench.model0, bench.after, strategy, bench.seed)
        check_finite(*embedded(model, bench.after), f"the model warm-started by {strategy!r}")
    return "mean and metadata warm starts embed"


def check_refresh(bench: Bench) -> str:
    """A refresh of a graph grown since M_0 was trained (entities newer than the model
    included): `embed_inputs` survives the object store (pickled), and `embed` by a light model
    over shuffled runs of nodes gives the model's own rows, in the order asked."""
    family, graph = bench.family, bench.after
    light = family.from_bytes(family.to_bytes(bench.model0), light=True)
    inputs = shipped(family.embed_inputs(bench.spec, graph))
    expected = embeddings(bench.model0, graph).numpy()
    order = np.random.default_rng(bench.seed).permutation(graph.num_nodes)
    for run in np.array_split(order, 3):
        check_same(embed_rows(family, light, inputs, run, bench.spec.output_dim), expected[run],
                   "embed(model, embed_inputs(...), nodes) for a shuffled run of nodes", run,
                   graph)
    return f"3 shuffled runs of {graph.num_nodes} nodes equal the model's own embed"


def check_incremental(bench: Bench) -> str:
    """After new interactions, new entities and an existing item's changed features, every
    row outside `affected` is what a full refresh computes (an incremental refresh copies it),
    and every added or changed entity is affected."""
    family, spec, model, after = bench.family, bench.spec, bench.model0, bench.after
    blocker = family.incremental_blocker(spec)
    if blocker:
        raise NotApplicable(f"this spec never refreshes incrementally: {blocker}")
    inputs = shipped(family.embed_inputs(spec, after))
    affected = _affected(family.affected(spec, inputs, bench.changes), after)
    missing = np.setdiff1d(bench.changes.entities, affected)
    if missing.size:
        raise ContractError(f"affected() leaves out {missing.size} entities added or changed "
                            f"since (e.g. {node_name(int(missing[0]), after)}): an added one has "
                            "no earlier row to copy, a changed one's row is stale")
    kept = np.setdiff1d(np.arange(after.num_nodes), affected)
    if kept.size == 0:  # a refresh then embeds every node: nothing is copied
        return (f"every node affected by {bench.new_edges} new interactions and "
                f"{bench.changes.entities.size} added or changed entities: an incremental "
                "refresh embeds them all, as a full one")
    dim = spec.output_dim
    earlier_inputs = shipped(family.embed_inputs(spec, bench.before))
    earlier = embed_rows(family, model, earlier_inputs, bench.earlier_nodes(kept), dim)
    now = embed_rows(family, model, inputs, kept, dim)
    changed = np.flatnonzero(~close(now, earlier).all(axis=1))
    if changed.size:
        raise ContractError(f"{changed.size} row(s) outside affected() changed with the new data "
                            f"(e.g. {node_name(int(kept[changed[0]]), after)}): an incremental "
                            "refresh would copy them stale; affected() must name every node "
                            "whose embedding new interactions or changed entities may change")
    return (f"{affected.size} of {after.num_nodes} nodes affected by {bench.new_edges} new "
            f"interactions and {bench.changes.entities.size} added or changed entities; the "
            f"other {kept.size} rows equal a full refresh")


def _affected(found: object, graph: GraphTensors) -> np.ndarray:
    """`affected()`'s answer as sorted unique node ids, refused unless it is integers within
    the graph's nodes (a refresh indexes a mask of every node by them)."""
    nodes = np.asarray(found)
    if nodes.size and not np.issubdtype(nodes.dtype, np.integer):
        raise ContractError(f"affected() must return integer node ids, got {nodes.dtype}")
    nodes = nodes.astype(np.int64).ravel()
    outside = nodes[(nodes < 0) | (nodes >= graph.num_nodes)]
    if outside.size:
        raise ContractError(f"affected() returns {outside.size} node ids outside 0.."
                            f"{graph.num_nodes - 1} (e.g. {int(outside[0])})")
    return np.unique(nodes)


def _every_weight_used(trainer: VersionTrainer, label: str) -> None:
    """The trainer's first steps; every trainable weight must have a gradient after each."""
    for number, batch in enumerate(itertools.islice(trainer.task.epoch(1), STEPS_CHECKED), 1):
        try:
            trainer.step(batch)
        except TrainingError as error:
            if number > 1 or "diverged" not in str(error):
                raise
            raise ContractError(f"{label}: the task's loss is not finite on its first batch, "
                                f"before any update ({error})") from None
        sparse = set(trainer.sparse_parameter_names())  # averaged by bc_ray, not by DDP
        unused = [name for name, p in trainer.joint.named_parameters()
                  if p.requires_grad and p.grad is None and name not in sparse]
        if unused:
            raise ContractError(f"{label}: training step {number} leaves {len(unused)} "
                                f"weight(s) without a gradient ({', '.join(unused[:4])}); "
                                "every step must use every trainable weight (DDP on Ray Train "
                                "cannot skip unused ones)")


Rule = Callable[[Bench], str]
RULES: list[tuple[str, Rule]] = [
    ("spec", check_spec), ("build", check_build), ("ranks", check_ranks),
    ("train", check_train), ("align", check_align), ("bytes", check_bytes),
    ("fine-tune", check_fine_tune), ("warm-start", check_warm_start),
    ("refresh", check_refresh), ("incremental", check_incremental)]
# Each rule needs the one named here to have passed (else it is skipped, saying which failed).
NEEDS = {"build": "spec", "ranks": "build", "train": "ranks", "align": "train",
         "bytes": "train", "fine-tune": "train", "warm-start": "train", "refresh": "bytes",
         "incremental": "refresh"}
