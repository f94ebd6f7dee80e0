"""A landing zone: upstream jobs drop files under a prefix; every file no batch took yet is
ingested, one batch per file or per partition folder (``dt=2026-11-22/``).

Which files were taken is read from the log (each batch records its source files with size and
ETag or mtime), so a late file in an old partition is still picked up once, and a file rewritten
after it was ingested is reported instead of being read twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, fields

import yaml

from bc_ray.data.ingest import BatchInput, ColumnMapping
from bc_ray.data.sources import SourceFile, discover
from bc_ray.exceptions import BcRayError, ConfigError
from bc_ray.store.batches import ingest
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandingConfig:
    """Where interactions land (`edges`), optional prefixes of user and item tables, and the
    column mapping shared by them."""

    edges: str
    mapping: ColumnMapping
    users: str | None = None
    items: str | None = None

    @classmethod
    def load(cls, edges: str | None, config_file: str | None, **options) -> LandingConfig:
        """Options given on the command line override the YAML file's keys."""
        values: dict = {}
        if config_file:
            try:
                with open(config_file) as handle:
                    values = yaml.safe_load(handle) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read landing config {config_file}: {exc}") from None
            if not isinstance(values, dict):
                raise ConfigError(f"landing config {config_file} must be a mapping of keys")
        allowed = {f.name for f in fields(ColumnMapping)} | {"edges", "users", "items"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ConfigError(f"landing config {config_file}: unknown key(s) {unknown}; "
                              f"expected some of {sorted(allowed)}")
        values.update({k: v for k, v in options.items() if v is not None})
        if edges:
            values["edges"] = edges
        missing = [k for k in ("edges", "user_col", "item_col", "time_col") if not values.get(k)]
        if missing:
            raise ConfigError(f"the landing zone needs {missing} (options or --landing-config)")
        mapping = ColumnMapping(**{f.name: values[f.name] for f in fields(ColumnMapping)
                                   if f.name in values})
        return cls(edges=values["edges"], mapping=mapping, users=values.get("users"),
                   items=values.get("items"))


@dataclass
class Pending:
    """New files of one landing batch."""

    key: str
    files: dict[str, list[SourceFile]]


def _taken(state: StoreState) -> dict[str, tuple[int, str]]:
    return {s["uri"]: (s["size"], s["tag"]) for batch in state.batches.values()
            for s in batch.get("sources", [])}


def _new_files(prefix: str | None, config: LandingConfig, taken: dict, changed: list[str]
               ) -> list[SourceFile]:
    if not prefix:
        return []
    try:
        found = discover(prefix, config.mapping.input_format)
    except BcRayError:  # nothing landed there yet
        return []
    fresh = []
    for source in found:
        if source.uri not in taken:
            fresh.append(source)
        elif taken[source.uri] != (source.size, source.tag):
            changed.append(source.uri)
    return fresh


def _partition(uri: str) -> str:
    """The partition folder a file belongs to (``.../dt=2026-11-22``), or the file itself."""
    parent = uri.rsplit("/", 1)[0]
    return parent if "=" in parent.rsplit("/", 1)[-1] else uri


def pending(config: LandingConfig, state: StoreState) -> tuple[list[Pending], list[str]]:
    """New landing batches in order, and the taken files that changed since (not re-read)."""
    taken, changed = _taken(state), []
    groups: dict[str, list[SourceFile]] = defaultdict(list)
    for source in _new_files(config.edges, config, taken, changed):
        groups[_partition(source.uri)].append(source)
    batches = [Pending(key, {"edges": files}) for key, files in sorted(groups.items())]
    tables = {role: _new_files(getattr(config, role), config, taken, changed)
              for role in ("users", "items")}
    if batches:  # catalogue files ride with the first new batch of interactions
        batches[0].files.update({role: files for role, files in tables.items() if files})
    return batches, changed


def ingest_landing(store: Store, config: LandingConfig) -> dict:
    """Ingest every pending landing batch; a bad batch is reported and the others still land."""
    batches, changed = pending(config, store.state())
    for uri in changed:
        logger.warning("landing file %s changed after it was ingested; not read again", uri)
    report: dict = {"ingested": [], "errors": [], "changed_files": changed}
    for batch in batches:
        try:
            outcome = ingest(store, BatchInput(edges=batch.key), config.mapping,
                             files=batch.files)
        except BcRayError as exc:
            logger.error("landing batch %s rejected: %s", batch.key, exc)
            report["errors"].append({"batch": batch.key, "error": str(exc)})
            continue
        report["ingested"].append({"batch": batch.key, "batch_id": outcome.batch_id,
                                   "status": outcome.status, "edges": outcome.stats.get("edges"),
                                   "new_users": outcome.stats.get("new_users"),
                                   "new_items": outcome.stats.get("new_items")})
    return report
