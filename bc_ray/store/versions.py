"""Versions in the store: candidates with their model, B_k and composed chain; publish or reject.

A candidate is registered with the parent it was trained against. Publishing is allowed only while
that parent is still the current version, so the lineage stays a chain and every published
version's composed transforms reach every older published version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson

from bc_ray import chain as chain_math
from bc_ray.exceptions import NotFoundError, StoreError
from bc_ray.store.actions import (
    VersionCandidate,
    VersionPublished,
    VersionRejected,
    VersionRolledBack,
)
from bc_ray.store.state import DEFAULT_FAMILY, StoreState, VersionRecord
from bc_ray.store.store import Store, utc_now
from bc_ray.store.tables import ENTITIES


@dataclass
class Candidate:
    parent: int | None
    dim: int
    method: str
    spec: dict
    snapshot_id: str
    cutoff: float
    model: bytes
    transform: chain_math.Affine | None
    metrics: dict = field(default_factory=dict)
    family: str = DEFAULT_FAMILY


def next_version(state: StoreState) -> int:
    return max(state.versions, default=-1) + 1


def register_candidate(store: Store, candidate: Candidate) -> VersionRecord:
    """Write the artefacts under a fresh prefix and commit a `version.candidate` entry."""
    state = store.state()
    if candidate.parent is not None:
        parent = state.version(candidate.parent)
        if candidate.transform is None:
            raise StoreError(f"a version with parent {candidate.parent} needs a transform B_k")
        weight = candidate.transform[0]
        if weight.shape != (parent.dim, candidate.dim):
            raise StoreError(f"B_k has shape {weight.shape}, expected ({parent.dim}, "
                             f"{candidate.dim}) from dimension {candidate.dim} to {parent.dim}")
        chain = chain_math.compose(_stored_chain(store, state, candidate.parent), candidate.parent,
                               candidate.transform)
    else:
        chain = {}
    metrics = _measured(candidate.metrics)
    prefix = store.new_prefix("versions")
    files = {"model": store.put(f"{prefix}/model.pt", candidate.model),
             "chain": store.put(f"{prefix}/chain.npz", chain_math.to_bytes(chain)),
             "metrics": store.put(f"{prefix}/metrics.json", orjson.dumps(metrics))}
    if candidate.transform is not None:
        files["transform"] = store.put(f"{prefix}/transform.npz",
                                       chain_math.transform_to_bytes(candidate.transform))
    chosen: list[int] = []

    def build(current: StoreState) -> list[VersionCandidate]:
        chosen[:] = [next_version(current)]
        return [VersionCandidate(version=chosen[0], parent=candidate.parent, dim=candidate.dim,
                                 method=candidate.method, spec=candidate.spec,
                                 snapshot_id=candidate.snapshot_id, cutoff=candidate.cutoff,
                                 created_at=utc_now().isoformat(), metrics=metrics, files=files,
                                 family=candidate.family)]

    return store.commit(build).version(chosen[0])


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
    version's parent). Its model and both embedding tables must still be kept: Serve, readers
    and the next refresh use them as they are, so nothing is recomputed. The versions after it
    become `rolled_back` (never served again; retention removes their files), and the next
    version is trained against it. The Delta mirror and retention follow (post-commit hooks)."""
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
        missing = (["its model"] if record.model_removed or "model" not in record.files else [])
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
    record = (state or store.state()).version(version)
    if record.model_removed or "model" not in record.files:
        raise NotFoundError(f"the model of version {record.version} was removed by retention "
                            "(keep-latest keeps only the current model)")
    return store.get(record.files["model"])
