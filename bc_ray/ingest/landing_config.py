"""The landing zone's configuration: where files land, how their columns map, and when a landed
file counts as complete. Loaded once at the edge (options, `--landing-config` YAML,
`scheduler.landing` in bc_ray.yaml), each key checked for its type."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bc_ray.data.ingest import ColumnMapping
from bc_ray.exceptions import ConfigError

DEFAULT_SETTLE_SECONDS = 60.0
ROLES = ("edges", "users", "items")


class _LandingKeys(BaseModel):
    """The keys a landing config may hold, each with its type (a list where a path belongs is
    one clear error, not a TypeError later)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    edges: str | None = None
    users: str | None = None
    items: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    time_unit: str | None = None
    input_format: str | None = None
    allow_old_times: bool | None = None
    require_success: bool | None = None
    settle_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)


def _validated(values: dict, where: str) -> dict:
    try:
        return _LandingKeys.model_validate(values).model_dump(exclude_none=True)
    except ValidationError as exc:
        unknown = sorted(str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden")
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                    if e["type"] != "extra_forbidden"]
        if unknown:
            problems.insert(0, f"unknown key(s) {unknown}; expected some of "
                               f"{sorted(_LandingKeys.model_fields)}")
        raise ConfigError(f"{where}: {'; '.join(problems)}") from None


def _read_yaml(config_file: str) -> dict:
    try:
        with open(config_file) as handle:
            values = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read landing config {config_file}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"landing config {config_file} must be a mapping of keys")
    return values


@dataclass(frozen=True)
class LandingConfig:
    """Where interactions land (`edges`), optional prefixes of user and item tables, the column
    mapping shared by them, and when a landed file counts as complete: its folder has a
    `_SUCCESS` marker, or (unless `require_success`) it was not modified for `settle_seconds`."""

    edges: str
    mapping: ColumnMapping
    users: str | None = None
    items: str | None = None
    require_success: bool = False
    settle_seconds: float = DEFAULT_SETTLE_SECONDS

    def __post_init__(self) -> None:
        _validated({"require_success": self.require_success,
                    "settle_seconds": self.settle_seconds}, "landing zone")

    def roots(self) -> dict[str, str]:
        return {role: root for role in ROLES if (root := getattr(self, role))}

    @classmethod
    def load(cls, edges: str | None, config_file: str | None, **options: Any) -> LandingConfig:
        """Options given on the command line override the YAML file's keys."""
        values = _validated(_read_yaml(config_file), f"landing config {config_file}") \
            if config_file else {}
        values.update(_validated({k: v for k, v in options.items() if v is not None},
                                 "landing options"))
        if edges:
            values["edges"] = edges
        missing = [k for k in ("edges", "user_col", "item_col", "time_col") if not values.get(k)]
        if missing:
            raise ConfigError(f"the landing zone needs {missing} (options or --landing-config)")
        mapping = ColumnMapping(**{f.name: values[f.name] for f in fields(ColumnMapping)
                                   if f.name in values})
        return cls(edges=values["edges"], mapping=mapping, users=values.get("users"),
                   items=values.get("items"),
                   require_success=values.get("require_success", False),
                   settle_seconds=values.get("settle_seconds", DEFAULT_SETTLE_SECONDS))
