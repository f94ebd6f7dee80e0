"""Everything a version bump reads from the store, loaded the same way by driver and workers."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from bc_ray.core.family import ModelFamily, ModelSpec
from bc_ray.core.family_base import has_warm_start
from bc_ray.core.methods import METHODS, Method, get_method
from bc_ray.core.registry import DEFAULT_FAMILY, get_family, version_family
from bc_ray.core.splits import PeriodSplit, period_split
from bc_ray.core.version import PreviousVersion, StoredTargets, TablesOnly
from bc_ray.data.snapshot import GraphSnapshot
from bc_ray.data.timeline import calendar_window, days_before
from bc_ray.exceptions import ConfigError, TrainingError
from bc_ray.store.snapshots import load_snapshot
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.versions import load_model_bytes
from bc_ray.train.config import TrainJobConfig
from bc_ray.train.held_out_caveats import say_if_no_validation, say_if_seen, stored_targets_see
from bc_ray.train.stored_targets import stored_target_rows

logger = logging.getLogger(__name__)

TRAINABLE = ("fresh", "finetune")


@dataclass
class JobInputs:
    store: Store
    state: StoreState
    snapshot: GraphSnapshot
    split: PeriodSplit
    method: Method
    model: str  # the family's name as the version record keeps it
    family: ModelFamily
    spec: ModelSpec
    parent: VersionRecord | None
    previous: PreviousVersion | None
    # Whether stored ver-(k-1) targets were refreshed on the held-out edges (`held_out_caveats`);
    # None: no stored targets (M_{k-1} runs on the training graph, or there is no parent).
    targets_see_held_out: bool | None = None


def trainable(method: Method) -> bool:
    """A way to train a new version, not a benchmark's baseline."""
    return method.model in TRAINABLE and method.name != "keep-all"


def resolve_method(name: str) -> Method:
    try:
        method = get_method(name)
    except ConfigError:
        choices = sorted(m.name for m in METHODS.values() if trainable(m))
        raise ConfigError(f"unknown method {name!r}; choose one of {choices}") from None
    if not trainable(method):
        raise ConfigError(f"{method.title} is a benchmark baseline, not a way to train a new "
                          "version; use bc-aligner (or another variant)")
    return method


def resolve_model(model: str | None, parent: VersionRecord | None) -> str:
    """`--model`, else the current version's family (a scheduled bump keeps it; it must still
    load), else GraphSAGE (version 0; after published embeddings the command line chooses
    first: `trained_before_published`)."""
    if model is not None:
        return model
    if parent is None or parent.external:
        return DEFAULT_FAMILY
    try:
        version_family(parent)
    except ConfigError as error:
        raise ConfigError(f"{error}, or choose a family with --model") from None
    return parent.family


def trained_before_published(job: TrainJobConfig, state: StoreState) -> TrainJobConfig:
    """A bump without --model on top of published embeddings trains the newest trained
    version's family and spec on the lineage (a team that published one version from
    elsewhere goes on with its own model, not a silent switch), else GraphSAGE (and always
    for --sharded, which trains nothing else); said."""
    if job.sharded:  # what a sharded bump trains: GraphSAGE, whatever came before
        return job
    trained = [state.version(v) for v in state.lineage() if not state.version(v).external]
    if not trained:
        logger.info("version %d was published from embeddings made elsewhere and no version "
                    "of this store was trained here: training %s (--model chooses another)",
                    state.current_version, DEFAULT_FAMILY)
        return job
    source = trained[-1]
    try:
        model = resolve_model(None, source)
    except ConfigError as error:
        raise ConfigError(f"version {state.current_version} was published from embeddings made "
                          f"elsewhere, so a bump without --model trains the family of version "
                          f"{source.version}, the newest trained here: {error}") from None
    logger.info("version %d was published from embeddings made elsewhere: training %s as "
                "version %d, the newest trained one, was (--model chooses another)",
                state.current_version, model, source.version)
    spec = job.spec or get_family(model).spec_from_dict(source.spec)
    return dataclasses.replace(job, model=model, spec=spec)


def resolve_spec(job: TrainJobConfig, model: str, family: ModelFamily, method: Method,
                 parent: VersionRecord | None) -> ModelSpec:
    """The job's spec, else the parent's when it is of the same family, else the family's
    default."""
    same_family = parent is not None and parent.family == model
    parent_spec = family.spec_from_dict(parent.spec) if same_family else None
    spec = job.spec or parent_spec or family.default_spec()
    if method.model == "finetune" and parent is not None and parent.external:
        raise ConfigError(f"finetune-m0 needs version {parent.version}'s model, but it was "
                          "published from embeddings made elsewhere and has none")
    if method.model == "finetune" and parent is not None and spec != parent_spec:
        raise ConfigError(f"finetune-m0 cannot change the architecture: the {model} spec "
                          f"{spec} differs from version {parent.version}'s "
                          f"{parent.family} {parent.spec}")
    if method.transform == "identity" and parent and spec.output_dim < parent.dim:
        raise ConfigError(f"joint-notrans cannot shrink the output from {parent.dim} to "
                          f"{spec.output_dim} dimensions")
    return spec


def check_job(job: TrainJobConfig, parent: VersionRecord | None) -> None:
    """What a bump is refused for that needs no cluster (its method, its family's spec against
    the current version, a sharded bump's rules), said before one starts."""
    method = resolve_method(job.method)
    model = resolve_model(job.model, parent)
    family = get_family(model)
    resolve_spec(job, model, family, method, parent)
    warm = (job.train.warm_start != "off" and parent is not None and not parent.external
            and not parent.model_removed)
    same = warm and version_family(parent).name == family.name
    if same and not has_warm_start(family):
        raise ConfigError(f"the {family.name} model family has no warm start (its M_k cannot "
                          f"start from version {parent.version}'s model): use --warm-start off")
    if job.sharded:
        check_sharded(job, method, parent)


def check_sharded(job: TrainJobConfig, method: Method, parent: VersionRecord | None) -> None:
    """What a sharded bump trains: GraphSAGE, jointly aligned."""
    model = resolve_model(job.model, parent)
    if model != DEFAULT_FAMILY:
        raise ConfigError(f"--sharded trains GraphSAGE (its ID tables are what is sharded), not "
                          f"{model}: train other families without it")
    if method.posthoc or method.refits or method.model != "fresh":
        raise ConfigError(f"{method.title} needs the whole of M_k or M_{{k-1}} in one process; "
                          "a sharded bump trains a jointly aligned method (bc-aligner, "
                          "joint-lin-sloss, joint-notrans) or non-bc")


def previous_model_used(job: TrainJobConfig) -> bool:
    """Whether a worker's training reads M_{k-1} itself (its targets, a warm start, Fix-M0 or
    Finetune-M0); the driver loads it anyway, for the relative gate."""
    return (job.targets == "model" or job.train.warm_start != "off"
            or resolve_method(job.method).model in ("finetune", "fixed"))


def load_inputs(job: TrainJobConfig, with_previous_model: bool = True,
                say: bool = True) -> JobInputs:
    """Reads and validates; every error here is raised before any worker starts. `say`: log
    the held-out period's caveats (the driver does; its workers read the same inputs)."""
    method = resolve_method(job.method)
    store = Store(job.store)
    state = store.state()
    snapshot = load_snapshot(store, state=state)
    start, end, window = holdout_window(snapshot, job)
    split = period_split(snapshot, start, end, seed=job.train.seed,
                         max_eval_users=job.max_eval_users)
    if split.eval_edges.height == 0 or split.test_users.numel() == 0:
        raise TrainingError(f"no held-out edges of known users in {window}: "
                            + ("raise --holdout-days or ingest more data" if snapshot.grows
                               else "raise --holdout or advance the snapshot"))
    if say:
        say_if_no_validation(split.val_users.numel(), window)
    parent = state.version() if state.current_version is not None else None
    model = resolve_model(job.model, parent)
    family = get_family(model)
    spec = resolve_spec(job, model, family, method, parent)
    previous, seen = None, None
    if parent is not None:
        previous = previous_version(store, state, parent, snapshot, job.targets,
                                    with_previous_model)
        if previous.stored is not None:
            at = start if not snapshot.grows else days_before(
                int(snapshot.edges["timestamp"].max()), job.holdout_days)
            seen = stored_targets_see(state, parent.version, at, snapshot.grows)
            if say:
                say_if_seen(seen, parent.version, window, instead_of_stored(parent))
    return JobInputs(store, state, snapshot, split, method, model, family, spec, parent,
                     previous, seen)


def instead_of_stored(parent: VersionRecord) -> str:
    """What avoids the stored targets' look-ahead, or why nothing does."""
    if parent.external:
        return (f"version {parent.version} was published from elsewhere and has no model to "
                "run on the training graph, so read the gate with that in mind")
    return (f"--targets model aligns to M_{parent.version} run on the training graph instead")


def holdout_window(snapshot: GraphSnapshot, job: TrainJobConfig) -> tuple[float, float, str]:
    """The held-out period as (start, end] in edge-fraction time, and how to say it.

    A grown snapshot holds out its last `holdout_days` calendar days (edge fractions change
    meaning as data grows); a replayed timeline holds out the last `holdout` of its visible part.
    """
    if snapshot.grows:
        end_ts = int(snapshot.edges["timestamp"].max())
        start, end = calendar_window(snapshot, end_ts, job.holdout_days)
        if start <= 0.0:
            raise TrainingError(f"--holdout-days {job.holdout_days:g} covers every interaction "
                                "ingested so far: nothing is left to train on; lower it")
        return start, end, f"the last {job.holdout_days:g} days"
    cutoff = snapshot.meta.cutoff
    start = max(cutoff - job.holdout, 1e-9)
    return start, cutoff, f"({start:.3f}, {cutoff}]"


def chain_amplifiers(store: Store, state: StoreState, parent: VersionRecord) -> list[torch.Tensor]:
    """W_{k-1}^j of the multi-step alignment loss: the chain's weights from the parent back."""
    chain = store.chain(parent.version, state)
    return [torch.from_numpy(chain[j][0]) for j in state.lineage(parent.version)]


def previous_version(store: Store, state: StoreState, parent: VersionRecord,
                     snapshot: GraphSnapshot, targets: str, with_model: bool) -> PreviousVersion:
    """M_{k-1} as the bump aligns to it: its targets (`targets`: model or stored) and amplifiers,
    and its model wherever one is kept (`with_model`), whichever the targets: the relative gate
    scores it, and a warm start or Finetune-M0 starts from it."""
    amplifiers = chain_amplifiers(store, state, parent)
    if parent.family == EXTERNAL_FAMILY:  # no model to run: its tables are the targets
        stored = _stored_targets(store, state, parent, snapshot)
        return PreviousVersion(parent.version, TablesOnly(parent.dim), amplifiers, stored=stored)
    family = version_family(parent)  # M_{k-1}: by its own family
    model = None
    if with_model and not parent.model_removed:  # with stored targets too: the relative gate
        model = family.from_bytes(load_model_bytes(store, parent.version, state))  # and warm start
    stored = _stored_targets(store, state, parent, snapshot) if targets == "stored" else None
    return PreviousVersion(parent.version, family.spec_from_dict(parent.spec), amplifiers,
                           model=model, stored=stored)


def _stored_targets(store: Store, state: StoreState, parent: VersionRecord,
                    snapshot: GraphSnapshot) -> StoredTargets:
    """Ver-(k-1) rows of every entity, joined by external id; entities without one are masked."""
    rows = {entity: stored_target_rows(store, state, parent, entity, snapshot.entities(entity))
            for entity in ("user", "item")}
    return StoredTargets(*(torch.from_numpy(rows[e].values) for e in ("user", "item")),
                         *(torch.from_numpy(rows[e].mask) for e in ("user", "item")))
