"""The landing zone's settings and configuration: where files land, how their columns map, and
when a landed file counts as complete.

`LandingSettings` is the one definition of the landing keys and their types, whichever way they
come (a `--landing-config` file, bc_ray.yaml's `scheduler.landing`, command-line options; the
config layer reads them). Each source is checked as one layer, later layers win key by key, and
`LandingConfig.of` turns the merged settings into the typed zone the landing pass uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bc_ray.data.mapping import ColumnMapping
from bc_ray.exceptions import ConfigError

DEFAULT_SETTLE_SECONDS = 60.0
ROLES = ("edges", "users", "items")
MAPPING_KEYS = frozenset(f.name for f in fields(ColumnMapping))
REQUIRED_KEYS = ("edges", "user_col", "item_col", "time_col")


class _ZoneOptions(BaseModel):
    """The landing keys of the zone itself: where interactions land and when a file is complete."""

    model_config = ConfigDict(extra="forbid", strict=True)

    edges: str | None = None
    require_success: bool | None = None
    settle_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)


def _optional_mapping_fields() -> dict[str, Any]:
    """`ColumnMapping`'s fields, each optional: the mapping is described once, by its dataclass."""
    hints = get_type_hints(ColumnMapping)
    return {f.name: (Optional[hints[f.name]], None) for f in fields(ColumnMapping)}


# The landing keys a command-line option also carries (`--landing` is `edges`,
# `--require-success-marker` is `require_success`), so the ones bc_ray.yaml can default. A key
# left out (None) takes `ColumnMapping`'s or `LandingConfig`'s default.
LandingOptions = create_model("LandingOptions", __base__=_ZoneOptions,
                              **_optional_mapping_fields())


class LandingSettings(LandingOptions):
    """Every landing key, each with its type (a list where a path belongs is one clear error,
    not a TypeError later): the options' keys and the roots of user and item tables, which only
    a `--landing-config` file names."""

    users: str | None = None
    items: str | None = None

    @classmethod
    def checked(cls, values: Mapping[str, Any], where: str) -> LandingSettings:
        """One layer of settings, or a `ConfigError` naming `where` and every bad key."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            unknown = sorted(str(e["loc"][0]) for e in exc.errors()
                             if e["type"] == "extra_forbidden")
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                        if e["type"] != "extra_forbidden"]
            if unknown:
                problems.insert(0, f"unknown key(s) {unknown}; expected some of "
                                   f"{sorted(cls.model_fields)}")
            raise ConfigError(f"{where}: {'; '.join(problems)}") from None

    def under(self, over: LandingSettings) -> LandingSettings:
        """These settings with the keys `over` gives in their place."""
        return self.model_copy(update=over.model_dump(exclude_none=True))

    def given(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of `keys` that were given (the others keep their dataclass's default)."""
        return self.model_dump(include=set(keys), exclude_none=True)


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
        LandingSettings.checked({"require_success": self.require_success,
                                 "settle_seconds": self.settle_seconds}, "landing zone")

    def roots(self) -> dict[str, str]:
        return {role: root for role in ROLES if (root := getattr(self, role))}

    @classmethod
    def of(cls, settings: LandingSettings) -> LandingConfig:
        """The zone the merged settings describe, or a `ConfigError` naming the missing keys."""
        missing = [key for key in REQUIRED_KEYS if not getattr(settings, key)]
        if missing:
            raise ConfigError(f"the landing zone needs {missing} (options or --landing-config)")
        zone_keys = [f.name for f in fields(cls) if f.name != "mapping"]
        return cls(mapping=ColumnMapping(**settings.given(MAPPING_KEYS)),
                   **settings.given(zone_keys))


# A users or items table rewritten after it was taken: the landing zone never reads it again.
CHANGED_TABLE_HINT = ("land its new content under a new name in the same folder: it rides with "
                      "the next batch of interactions that lands")
