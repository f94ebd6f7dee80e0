"""Finding a model family by name: the built-ins, a `bc_ray.models` entry point of any installed
package, or `package.module:Class` given directly.

Only the family asked for is imported (`EntryPoint.load`), so a user of one family never pays
for another's dependencies, and a plug-in that fails to import fails only when selected. Two
packages registering one name is refused, naming both (`importlib.metadata` would silently take
the first); the built-in names are reserved.
"""

from __future__ import annotations

import importlib
import logging
import sys
from functools import lru_cache
from importlib.metadata import (
    EntryPoint,
    PackageNotFoundError,
    entry_points,
    packages_distributions,
)
from importlib.metadata import version as distribution_version
from typing import Protocol

from bc_ray.core.family import API_VERSION, ModelFamily, ModelSpec
from bc_ray.exceptions import ConfigError, FamilyNotFoundError

logger = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "bc_ray.models"
DEFAULT_FAMILY = "graphsage"
BUILT_IN = {"graphsage": "bc_ray.models.graphsage.family:GraphSAGE",
            "sequence": "bc_ray.models.sequence.family:SequenceTransformer"}
# Every member bc_ray calls (FamilyBase supplies all but name, build, task and the spec's).
REQUIRED = ("name", "refresh_strategy", "default_spec", "parse_spec", "spec_from_dict", "grown",
            "build", "task", "prepare", "warm_start", "fine_tune_from", "to_bytes", "from_bytes",
            "embed_inputs", "embed", "affected", "incremental_blocker", "cached_layers")


def family_names() -> list[str]:
    """Every family this installation can use by name."""
    return sorted(set(BUILT_IN) | {ep.name for ep in _plugins()})


def get_family(name: str | None = None) -> ModelFamily:
    """The family called `name` (default GraphSAGE): built-in, entry point, or module:Class.

    The registry sits with the protocol on the core floor and names the built-ins by import
    path, so the model-agnostic training loop can find a spec's family without importing any."""
    return _load(name or DEFAULT_FAMILY)


def family_of(spec: ModelSpec) -> ModelFamily:
    """The family a spec belongs to (every spec class names it: `ModelSpec.family`; a family
    loaded as package.module:Class is known by its own name from then on)."""
    name = getattr(spec, "family", None)
    return _by_name.get(name) or get_family(name)


class TrainedVersion(Protocol):
    """What a version record says of the model that trained it (`store.state.VersionRecord`)."""

    version: int
    family: str
    requires: str | None  # `family_requirement` where it was trained


def version_family(record: TrainedVersion) -> ModelFamily:
    """The family that trained a version, or why it does not load here and what to install: a
    version trained by a plug-in is refreshed, warm-started from and aligned to by processes
    that may not have the plug-in installed (or a newer bc_ray API, which the error says).
    Loaded from another release of its package than the one that trained it, it is said once:
    that code now computes the version's embeddings."""
    name, version = record.family, record.version
    try:
        family = get_family(name)
    except FamilyNotFoundError as error:
        install = (f"install it (pip install '{record.requires}')" if record.requires
                   else "install the package that provides it")
        raise FamilyNotFoundError(f"version {version} was trained by model family {name!r}, "
                                  f"which does not load here ({error}); {install}, here and "
                                  "in the cluster's image") from None
    except ConfigError as error:
        raise ConfigError(f"version {version} was trained by model family {name!r}, which "
                          f"does not load here: {error}") from None
    if record.requires and family.name not in BUILT_IN:  # bc_ray reads its own old weights
        _warn_other_release(name, version, record.requires, family_requirement(name))
    return family


def family_requirement(name: str) -> str | None:
    """The pip requirement installing the family called `name` as this process has it
    ("acme-models==1.2.0"; bc_ray's own for the built-ins), which every version it trains
    records; None where no installed package provides it (a module on PYTHONPATH). Once the
    family is loaded, the release it was loaded from: a later upgrade does not change the code
    this process runs."""
    if name in _loaded_from:
        return _loaded_from[name]
    if name in BUILT_IN:
        return _requirement("bc-ray") or "bc-ray"  # "bc-ray": a source tree on the path
    if ":" in name:
        return _module_requirement(name.split(":")[0])
    found = _registered(name)
    dist = getattr(found[0], "dist", None) if len(found) == 1 else None
    return f"{dist.name}=={dist.version}" if dist is not None else None


def load_report(name: str) -> tuple[str | None, str | None]:
    """(why the family called `name` does not load in this process, None where it does; its
    `family_requirement` here): asked of each node of a cluster before a job loads it there."""
    try:
        get_family(name)
    except ConfigError as error:
        return str(error), None
    return None, family_requirement(name)


def family_source(name: str) -> str:
    """Where the family called `name` comes from: "built-in", the distribution that registers
    it ("package version"), or the module:Class it was named by."""
    if name in BUILT_IN:
        return "built-in"
    found = _registered(name)
    return ", ".join(sorted(_owner(ep) for ep in found)) if found else name


@lru_cache(maxsize=None)
def _warn_other_release(name: str, version: int, trained: str, here: str | None) -> None:
    if here != trained:
        logger.warning("version %d was trained by model family %r from %s; this process has "
                       "%s, whose code now computes its embeddings (install %s to compute them "
                       "as trained)", version, name, trained, here or "it from no installed "
                       "package", trained)


def _module_requirement(module: str) -> str | None:
    """The requirement of the one installed distribution that holds `module`'s top package."""
    owners = set(_distributions_of_modules(tuple(sys.path)).get(module.split(".")[0], []))
    return _requirement(owners.pop()) if len(owners) == 1 else None


def _requirement(distribution: str) -> str | None:
    try:
        return f"{distribution}=={distribution_version(distribution)}"
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=4)
def _distributions_of_modules(path: tuple[str, ...]) -> dict[str, list[str]]:
    """`packages_distributions()` for this `sys.path` (it reads every installed distribution's
    file list: a tenth of a second in a small environment)."""
    return packages_distributions()


_by_name: dict[str, ModelFamily] = {}
_loaded_from: dict[str, str | None] = {}  # name -> its `family_requirement` when loaded


@lru_cache(maxsize=None)
def _load(name: str) -> ModelFamily:
    family = _find(name)
    _loaded_from[name] = family_requirement(name)
    if ":" in name:  # known by its own name, unless that name's registered family loads too
        _by_name.setdefault(family.name, family)
    else:
        _by_name[name] = family
    return family


def _find(name: str) -> ModelFamily:
    if name in BUILT_IN:
        return _checked(_import(BUILT_IN[name], name), name)
    if ":" in name:
        return _checked(_import(name, name), name)
    found = _registered(name)
    if not found:
        raise FamilyNotFoundError(f"unknown model family {name!r}: choose one of "
                                  f"{family_names()}, or give package.module:Class")
    if len(found) > 1:
        owners = ", ".join(sorted(_owner(ep) for ep in found))
        raise ConfigError(f"model family {name!r} is registered by more than one package "
                          f"({owners}); uninstall one, or name the class as package.module:Class")
    try:
        loaded = found[0].load()
    except Exception as error:  # a broken plug-in fails only when it is chosen
        raise FamilyNotFoundError(f"model family {name!r} from {_owner(found[0])} failed to "
                                  f"import: {type(error).__name__}: {error}") from error
    return _checked(loaded, name)


def _registered(name: str) -> list[EntryPoint]:
    """The entry points registering a family called `name` (two packages may)."""
    return [ep for ep in _plugins() if ep.name == name]


def _plugins() -> list[EntryPoint]:
    """Entry points of the group; a plug-in may not take a built-in name (it is left out, and
    said so once)."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILT_IN and ep.value != BUILT_IN[ep.name]:
            _warn_reserved(ep.name, _owner(ep))
        else:
            found.append(ep)
    return found


@lru_cache(maxsize=None)
def _warn_reserved(name: str, owner: str) -> None:
    logger.warning("model family entry point %r of %s is ignored: %r is a built-in family's "
                   "name; register it under a name of its own", name, owner, name)


def _owner(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else ep.value


def _import(target: str, name: str) -> object:
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ConfigError(f"model family {name!r}: expected package.module:Class")
    if "/" in module_name or "\\" in module_name or module_name.endswith(".py"):
        stem = module_name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
        raise ConfigError(f"model family {name!r}: {module_name} is a file, not a module: put "
                          f"its folder on PYTHONPATH and name it as {stem}:{attribute}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise FamilyNotFoundError(f"model family {name!r}: cannot import {module_name}: "
                                  f"{type(error).__name__}: {error}") from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise FamilyNotFoundError(f"model family {name!r}: {module_name} has no "
                                  f"{attribute}") from None


def _checked(loaded: object, name: str) -> ModelFamily:
    """An instance (a class is instantiated without arguments) with the required members, of an
    API version this bc_ray speaks, known by one name: the one it is registered under, its
    spec's `family`, and never a built-in's unless it is that built-in. Every failure is one
    `ConfigError` naming the family, never a traceback from inside the plug-in."""
    family = _instance(loaded, name)
    missing = [member for member in REQUIRED if not hasattr(family, member)]
    if missing:
        raise ConfigError(f"model family {name!r} ({type(family).__qualname__}) lacks "
                          f"{', '.join(missing)}: see bc_ray.models.ModelFamily")
    version = getattr(family, "api_version", API_VERSION)
    if not isinstance(version, int):
        raise ConfigError(f"model family {name!r}: api_version must be an integer, got "
                          f"{version!r}")
    if version > API_VERSION:
        raise ConfigError(f"model family {name!r} needs bc_ray model API {version}; this bc_ray "
                          f"speaks {API_VERSION}: upgrade bc_ray")
    own = family.name
    built_in = own in BUILT_IN and BUILT_IN[own].split(":")[0] == type(family).__module__
    if own in BUILT_IN and not built_in:
        raise ConfigError(f"model family {name!r} calls itself {own!r}, a built-in family's "
                          "name: give it a name of its own")
    if ":" not in name and own != name:
        raise ConfigError(f"model family {name!r} loads a family named {own!r}: register it "
                          "under its own name (the version record and its spec use that name)")
    spec_family = getattr(_default_spec(family, name), "family", None)
    if spec_family != own:
        raise ConfigError(f"model family {name!r}: its spec names family {spec_family!r}, not "
                          f"{own!r}: set the spec class's `family: ClassVar[str] = {own!r}` (a "
                          "spec names the family that reads it)")
    _check_strategy(family, name, built_in)
    return family


def _instance(loaded: object, name: str) -> ModelFamily:
    if not isinstance(loaded, type):
        return loaded
    try:
        return loaded()
    except Exception as error:  # noqa: BLE001 - a plug-in's constructor may raise anything
        raise ConfigError(f"model family {name!r}: {loaded.__qualname__}() failed "
                          f"({type(error).__name__}: {error}); a family class is created "
                          "without arguments") from None


def _default_spec(family: ModelFamily, name: str) -> ModelSpec:
    try:
        return family.default_spec()
    except Exception as error:  # noqa: BLE001 - a plug-in's spec may raise anything
        raise ConfigError(f"model family {name!r}: default_spec() failed "
                          f"({type(error).__name__}: {error}); every field of a spec needs a "
                          "default") from None


def _check_strategy(family: ModelFamily, name: str, built_in: bool) -> None:
    strategy = family.refresh_strategy
    if strategy == "layerwise" and not built_in:
        raise ConfigError(f"model family {name!r}: refresh_strategy 'layerwise' is GraphSAGE's "
                          "own; a plug-in refreshes through 'entities' (its embed_inputs, embed "
                          "and affected)")
    if strategy not in ("entities", "layerwise"):
        raise ConfigError(f"model family {name!r}: refresh_strategy must be 'entities', got "
                          f"{strategy!r}")
