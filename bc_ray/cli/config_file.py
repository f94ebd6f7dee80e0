"""`bc_ray.yaml`: one optional file for the settings a team repeats on every command.

Found by `--config PATH` or `BC_RAY_CONFIG`. It becomes the default of the matching command-line
options (click's default map), so an option given on the command line, or its environment
variable, still wins. S3 and retention settings go into the environment the way a shell would
set them (never over a variable that is already set), so Ray jobs the scheduler submits get them
too. `bc-ray config show` prints the merged result with the source of each value.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bc_ray.exceptions import ConfigError
from bc_ray.ingest.landing_config import LandingOptions, LandingSettings
from bc_ray.redaction import has_user_info, redact

CONFIG_ENV = "BC_RAY_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _no_user_info(value: str | None) -> str | None:
    """A URI with credentials in it is refused without repeating it (pydantic's message would)."""
    if isinstance(value, str) and has_user_info(value):
        raise ValueError("carries credentials (user info before '@'); give them the way the "
                         "AWS SDKs find them (AWS_* variables, AWS_PROFILE, web identity or an "
                         "instance role), never in a URI")
    return value


class S3Settings(_Section):
    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _no_user_info(value)


class RetentionSettings(_Section):
    """Recorded into a store's log: refused here unless every reader can apply it (a non-finite
    grace would be written as null; `true` is not a count)."""

    keep_versions: int | None = Field(None, ge=1)
    grace_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)

    @field_validator("keep_versions", "grace_seconds", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"a number is needed, not the boolean {value}")
        return value


class LandingSection(LandingOptions):
    """`scheduler.landing`: the defaults of the landing options (so no `users` or `items`, which
    only a `--landing-config` file takes), the zone required."""

    edges: str

    @field_validator("edges")
    @classmethod
    def _edges(cls, value: str) -> str:
        return _no_user_info(value)


class SchedulerSettings(_Section):
    ray_address: str | None = None
    refresh_cron: str | None = None
    bump_cron: str | None = None
    python: str | None = None
    working_dir: str | None = None
    train_args: str | list[str] | None = None
    refresh_args: str | list[str] | None = None
    max_attempts: int | None = Field(None, ge=1)
    backoff: float | None = Field(None, ge=0)
    landing: LandingSection | None = None
    publish_from: str | None = None
    publish_args: str | list[str] | None = None

    @field_validator("publish_from")
    @classmethod
    def _publish_from(cls, value: str | None) -> str | None:
        return _no_user_info(value)

    @field_validator("train_args", "refresh_args", "publish_args")
    @classmethod
    def _as_words(cls, value: str | list[str] | None) -> str | None:
        return _no_user_info(shlex.join(value) if isinstance(value, list) else value)


class ProjectConfig(_Section):
    store: str | None = None
    s3: S3Settings = S3Settings()
    retention: RetentionSettings = RetentionSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    # Defaults of any command's options, by command path: {"train": {"method": "bc-aligner"}}
    commands: dict[str, dict[str, Any]] = {}

    @field_validator("store")
    @classmethod
    def _store(cls, value: str | None) -> str | None:
        return _no_user_info(value)


ENV_OF = {("s3", "endpoint_url"): "BC_RAY_S3_ENDPOINT", ("s3", "region"): "AWS_REGION",
          ("retention", "keep_versions"): "BC_RAY_KEEP_VERSIONS",
          ("retention", "grace_seconds"): "BC_RAY_GRACE_SECONDS"}


@dataclass
class LoadedConfig:
    path: str
    config: ProjectConfig
    defaults: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)
    env_set: dict[str, str] = field(default_factory=dict)  # variables this file set


def load(path: str) -> ProjectConfig:
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"the config file {path} must be a mapping of settings")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"the config file {path}: {problems}") from None


def read_landing_file(path: str) -> LandingSettings:
    """A `--landing-config` file: a mapping of landing keys, each checked for its type."""
    try:
        with open(path) as handle:
            values = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read landing config {path}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"landing config {path} must be a mapping of keys")
    return LandingSettings.checked(values, f"landing config {path}")


def apply(path: str, root: Any, environ: MutableMapping[str, str] | None = None
          ) -> LoadedConfig:
    """Load `path`, set the environment variables it implies where unset (in `environ`,
    default the process's) and compute every command's option defaults (`root`: the CLI's
    click group)."""
    environ = os.environ if environ is None else environ
    config = load(path)
    loaded = LoadedConfig(path, config)
    for (section, key), variable in ENV_OF.items():
        value = getattr(getattr(config, section), key)
        if value is not None and variable not in environ:
            environ[variable] = loaded.env_set[variable] = str(value)
    commands = dict(_commands(root))
    for name in config.commands:
        if tuple(name.split()) not in commands:
            raise ConfigError(f"the config file {path}: commands: no command {name!r}; known: "
                              f"{sorted(' '.join(c) for c in commands)}")
    for command_path, command in commands.items():
        params = {p.name: p for p in command.params}
        defaults = _section_defaults(config, command_path, set(params))
        where = f"the config file {path}: commands.{' '.join(command_path)}"
        for key, value in config.commands.get(" ".join(command_path), {}).items():
            param = params.get(key.replace("-", "_"))
            if param is None:
                raise ConfigError(f"{where}: no option {key!r}; options: {sorted(params)}")
            _check_type(command, param, value, f"{where}.{key}")
            defaults[param.name] = value
        if defaults:
            loaded.defaults[command_path] = defaults
    return loaded


def _check_type(command: Any, param: Any, value: Any, where: str) -> None:
    """A default of the option's type, or refused here: by every command, `config show` too,
    not only by the command it is for when it next runs (`command`, `param`: typer's click)."""
    try:
        param.process_value(command.context_class(command), value)
    except typer.BadParameter as exc:
        raise ConfigError(f"{where}: {value!r}: {exc.message}") from None


def default_map(loaded: LoadedConfig) -> dict:
    """The nested mapping click reads option defaults from."""
    nested: dict = {}
    for command_path, defaults in loaded.defaults.items():
        cell = nested
        for name in command_path:
            cell = cell.setdefault(name, {})
        cell.update(defaults)
    return nested


def _section_defaults(config: ProjectConfig, command_path: tuple[str, ...],
                      options: set[str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if config.store and "store" in options:
        defaults["store"] = config.store
    if command_path[:1] == ("scheduler",):
        scheduler = config.scheduler.model_dump(exclude={"landing"}, exclude_none=True)
        defaults.update({k: v for k, v in scheduler.items() if k in options})
    if command_path[:1] == ("scheduler",) or command_path == ("data", "land"):
        if config.scheduler.landing is not None:  # `data land` is one pass of the same zone
            landing = config.scheduler.landing.model_dump(exclude_none=True)
            landing["landing"] = landing.pop("edges")
            if "require_success" in landing:
                landing["require_success_marker"] = landing.pop("require_success")
            defaults.update({k: v for k, v in landing.items() if k in options})
    return defaults


def _commands(command: Any, path: tuple[str, ...] = ()):
    """(path, command) of every leaf command (typer's own click: a group has `commands`)."""
    if hasattr(command, "commands"):
        for name, child in command.commands.items():
            yield from _commands(child, (*path, name))
    elif path:
        yield path, command


def merged(loaded: LoadedConfig | None) -> list[dict]:
    """Every setting the file can hold, its value now and where that value comes from (URI
    credentials, e.g. in BC_RAY_STORE, hidden)."""
    return [{**row, "value": _redacted(row["value"])} for row in _settings(loaded)]


def _recorded_retention(uri: str | None) -> list[dict]:
    """The retention the store's log records, which wins over the file's and the environment's
    (they are recorded only into a store that has none): shown beside them, so the rows above
    are not read as in effect. Nothing when there is no store, or it records no policy."""
    if not uri:
        return []
    from bc_ray.exceptions import BcRayError
    from bc_ray.store.store import Store

    try:
        recorded = Store(uri).state().retention
    except (BcRayError, OSError) as exc:
        return [{"setting": "store retention", "value": None,
                 "source": f"unreadable: {exc}"}]
    if recorded is None:
        return []
    return [{"setting": f"store retention.{key}", "value": value,
             "source": "the store's log (in effect; `bc-ray store config` changes it)"}
            for key, value in (("keep_versions", recorded.keep_versions),
                               ("grace_seconds", recorded.staging_grace_seconds))]


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def _settings(loaded: LoadedConfig | None) -> list[dict]:
    config = loaded.config if loaded else ProjectConfig()
    source = f"file {loaded.path}" if loaded else None
    rows = []
    store_env = os.environ.get("BC_RAY_STORE")
    rows.append({"setting": "store", "value": store_env or config.store,
                 "source": "env BC_RAY_STORE" if store_env else (source if config.store
                                                                  else "unset")})
    for (section, key), variable in ENV_OF.items():
        value = os.environ.get(variable)
        from_file = loaded is not None and variable in loaded.env_set
        rows.append({"setting": f"{section}.{key}", "value": value,
                     "source": source if from_file else (f"env {variable}" if value
                                                         else "unset")})
    rows.extend(_recorded_retention(store_env or config.store))
    scheduler = config.scheduler.model_dump(exclude_none=True)
    for key, value in scheduler.items():
        rows.append({"setting": f"scheduler.{key}", "value": value, "source": source})
    for name, options in config.commands.items():
        for key, value in options.items():
            rows.append({"setting": f"commands.{name}.{key}", "value": value,
                         "source": source})
    return rows
