"""Versions in the store: candidates with their model, B_k and composed chain; publish or reject.

A candidate is registered with the parent it was trained against. Publishing is allowed only while
that parent is still the current version, so the lineage stays a chain and every published
version's composed transforms reach every older published version. Embeddings computed outside
bc_ray (`bc-ray publish`) become a version without a model, published with its tables in one
commit (`publish_with_tables`); its chain is composed by the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from bc_ray import chain as chain_math
from bc_ray.core.registry import family_requirement
from bc_ray.exceptions import NotFoundError, StaleInputError, StoreError
from bc_ray.store.actions import (
    Action,
    VersionCandidate,
    VersionPublished,
    VersionRejected,
    VersionRolledBack,
)
from bc_ray.store.state import (
    DEFAULT_FAMILY,
    EXTERNAL_FAMILY,
    FileRecord,
    StoreState,
    VersionRecord,
)
from bc_ray.store.store import Store, utc_now
from bc_ray.store.tables import ENTITIES, TableFiles, refresh_actions


@dataclass
class Candidate:
    parent: int | None
    dim: int
    method: str
    spec: dict
    snapshot_id: str
    cutoff: float
    # M_k's weights; None for embeddings computed outside bc_ray (`bc-ray publish`), which
    # come with their tables instead (`publish_with_tables`).
    model: bytes | memoryview | None  # a memoryview: a mapped file, written as it is
    transform: chain_math.Affine | None
    metrics: dict = field(default_factory=dict)
    family: str = DEFAULT_FAMILY


@dataclass(frozen=True)
class StagedCandidate:
    """A candidate's artefacts written under their own fresh prefix, not yet named by the log."""

    candidate: Candidate
    prefix: str
    files: dict[str, FileRecord]
    metrics: dict

    def action(self, version: int) -> VersionCandidate:
        candidate = self.candidate
        return VersionCandidate(version=version, parent=candidate.parent, dim=candidate.dim,
                                method=candidate.method, spec=candidate.spec,
                                snapshot_id=candidate.snapshot_id, cutoff=candidate.cutoff,
                                created_at=utc_now().isoformat(), metrics=self.metrics,
                                files=self.files, family=candidate.family)


def next_version(state: StoreState) -> int:
    return max(state.versions, default=-1) + 1


def stage_candidate(store: Store, state: StoreState, candidate: Candidate) -> StagedCandidate:
    """Check B_k against the parent, compose the chain (the parent's composed transforms to
    every older version, then B_k), and write model, chain, metrics and transform under a
    fresh prefix. Trained and published candidates share this, so every version's chain is
    composed the same way."""
    if candidate.parent is not None:
        parent = state.version(candidate.parent)
        if candidate.transform is None:
            raise StoreError(f"a version with parent {candidate.parent} needs a transform B_k")
        weight = candidate.transform[0]
        if weight.shape != (parent.dim, candidate.dim):
            raise StoreError(f"B_k has shape {weight.shape}, expected ({parent.dim}, "
                             f"{candidate.dim}) from dimension {candidate.dim} to {parent.dim}")
        chain = chain_math.compose(_stored_chain(store, state, candidate.parent),
                                   candidate.parent, candidate.transform)
    else:
        chain = {}
    metrics = _measured(candidate.metrics)
    if candidate.family != EXTERNAL_FAMILY:  # what installs the family as it trained M_k
        metrics["family_requires"] = family_requirement(candidate.family)
    prefix = store.new_prefix("versions")
    files = {}
    if candidate.model is not None:
        files["model"] = store.put(f"{prefix}/model.pt", candidate.model)
    files["chain"] = store.put(f"{prefix}/chain.npz", chain_math.to_bytes(chain))
    files["metrics"] = store.put(f"{prefix}/metrics.json", orjson.dumps(metrics))
    if candidate.transform is not None:
        files["transform"] = store.put(f"{prefix}/transform.npz",
                                       chain_math.transform_to_bytes(candidate.transform))
    return StagedCandidate(candidate, prefix, files, metrics)


def register_candidate(store: Store, candidate: Candidate) -> VersionRecord:
    """Write the artefacts under a fresh prefix and commit a `version.candidate` entry."""
    staged = stage_candidate(store, store.state(), candidate)
    chosen: list[int] = []

    def build(current: StoreState) -> list[VersionCandidate]:
        chosen[:] = [next_version(current)]
        return [staged.action(chosen[0])]

    return store.commit(build).version(chosen[0])


def publish_with_tables(store: Store, candidate: Candidate, version: int, refresh_id: str,
                        tables: list[TableFiles], refreshed_at: datetime, mode: str
                        ) -> VersionRecord:
    """Register `candidate` as version `version`, make it current and its user and item
    `tables` current, in one log entry: readers see the version with its tables or neither
    (embeddings computed outside bc_ray, `bc-ray publish`). The tables were written for
    `version` (the number is in their rows and paths) and B_k was fitted against the parent,
    so the commit is refused when another writer took that number or moved the current
    version meanwhile. The Delta mirror and retention follow (post-commit hooks)."""
    staged = stage_candidate(store, store.state(), candidate)

    def build(current: StoreState) -> list[Action]:
        if next_version(current) != version:
            raise StaleInputError(f"version {version} was registered by another writer "
                                  "while these embeddings were written; publish them again")
        if current.current_version != candidate.parent:
            raise StaleInputError(f"the current version moved from {candidate.parent} to "
                                  f"{current.current_version} while these embeddings were "
                                  "aligned to it; publish them again")
        return [staged.action(version),
                VersionPublished(version=version, at=utc_now().isoformat()),
                *refresh_actions(version, refresh_id, tables, candidate.snapshot_id,
                                 candidate.cutoff, mode, refreshed_at)]

    return store.commit(build, staged=staged.prefix).version(version)


def _measured(value: object) -> object:
    """Metrics as the log records them: a measurement that is not a number (a recall with no
    evaluated user is nan) is recorded as null, explicitly, since the log refuses non-finite
    floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _measured(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_measured(item) for item in value]
    return value


def _stored_chain(store: Store, state: StoreState, version: int) -> dict[int, chain_math.Affine]:
    """The parent's composed transforms to every older version (recomposed from the kept
    transforms if retention removed its chain file)."""
    chain = store.chain(version, state)
    chain.pop(version)
    return chain


def publish_version(store: Store, version: int) -> VersionRecord:
    """Make a candidate current; retention follows (a post-commit hook)."""
    def build(state: StoreState) -> list[VersionPublished]:
        record = state.version(version)
        if record.status != "candidate":
            raise StoreError(f"version {version} is {record.status}, not a candidate")
        if record.parent != state.current_version:
            raise StoreError(f"version {version} was trained against version {record.parent}, but "
                             f"the current version is now {state.current_version}: retrain it")
        if record.model_removed:  # retention's, while its parent was not current
            raise StoreError(f"version {version}'s model was removed by retention: retrain it")
        return [VersionPublished(version=version, at=utc_now().isoformat())]

    return store.commit(build).version(version)


def reject_version(store: Store, version: int, reasons: list[str]) -> VersionRecord:
    """Record why a candidate is never published; retention follows (a post-commit hook)."""
    def build(state: StoreState) -> list[VersionRejected]:
        if state.version(version).status != "candidate":
            raise StoreError(f"version {version} is not a candidate")
        return [VersionRejected(version=version, reasons=reasons)]

    return store.commit(build).version(version)


def rollback_version(store: Store, to: int | None = None, reason: str = "") -> VersionRecord:
    """Make an earlier published version on the lineage current again (default: the current
    version's parent). Its model (one made by `bc-ray publish` has none) and both embedding
    tables must still be kept: Serve, readers and the next refresh use them as they are, so
    nothing is recomputed. The versions after it become `rolled_back` (never served again;
    retention removes their files), and the next version is trained against it. The Delta
    mirror and retention follow (post-commit hooks)."""
    def build(state: StoreState) -> list[VersionRolledBack]:
        lineage = state.lineage()
        if not lineage:
            raise StoreError("the store has no published version to roll back")
        if to is None and len(lineage) < 2:
            raise StoreError(f"version {lineage[-1]} is the first published version: there is "
                             "nothing earlier to roll back to")
        target = lineage[-2] if to is None else to
        if target == lineage[-1]:
            raise StoreError(f"version {target} is already the current version")
        if target not in lineage:
            raise StoreError(f"version {target} is not an earlier published version on the "
                             f"current lineage {lineage}")
        record = state.version(target)
        # A version published from embeddings made elsewhere never had a model: its tables
        # are all a rollback needs.
        no_model = "model" not in record.files and record.family != EXTERNAL_FAMILY
        missing = ["its model"] if record.model_removed or no_model else []
        missing += [f"its {entity} table" for entity in ENTITIES
                    if state.table(target, entity) is None]
        if missing:
            keep = state.retention.keep_versions if state.retention else "the default"
            raise StoreError(f"cannot roll back to version {target}: retention removed "
                             f"{' and '.join(missing)} (keep_versions {keep}). Raise it with "
                             "`bc-ray store config --keep-versions N` so later bumps can be "
                             "rolled back, or train and publish a new version instead")
        undone = lineage[lineage.index(target) + 1:][::-1]
        return [VersionRolledBack(to=target, versions=undone, at=utc_now().isoformat(),
                                  reason=reason)]

    state = store.commit(build)
    return state.version(state.current_version)


def load_model_bytes(store: Store, version: int | None = None,
                     state: StoreState | None = None) -> bytes:
    return store.get(model_record((state or store.state()).version(version)))


def model_record(record: VersionRecord) -> FileRecord:
    """The version's model file, or why it has none."""
    if record.family == EXTERNAL_FAMILY:
        raise NotFoundError(f"version {record.version} was published from embeddings made "
                            "elsewhere (`bc-ray publish`): it has no model; its embeddings "
                            "come only through `bc-ray publish`")
    if record.model_removed or "model" not in record.files:
        raise NotFoundError(f"the model of version {record.version} was removed by retention "
                            "(keep-latest keeps only the current model)")
    return record.files["model"]


def check_refreshable(state: StoreState) -> None:
    """Refuse, before any cluster work, a refresh of a store with no current version, or of
    one that `bc-ray publish` made: it has no model, so its next embeddings come through
    `publish`."""
    if not state.version().external:
        return
    raise StoreError(f"version {state.current_version} was published from embeddings made "
                     "elsewhere (`bc-ray publish`): it has no model to refresh with; publish "
                     "its next embeddings with `bc-ray publish`")
