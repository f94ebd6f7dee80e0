"""Options shared by every command, and the two ways a command shares what it declares:
`default_of` (an option's default is its typed configuration's) and `option_group` (options
that several commands take are declared once, as one dataclass)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from bc_ray.core.family import ModelFamily
from bc_ray.core.registry import get_family
from bc_ray.exceptions import ConfigError

StoreOption = Annotated[str, typer.Option(
    "--store", envvar="BC_RAY_STORE",
    help="Store URI: file:///path or s3://bucket/prefix (S3 settings and credentials from "
         "AWS_* variables, never in the URI).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DATASET_HELP = ("synthetic (synthetic:seed=1 for another draw; any of the generator's settings "
                "as KEY=VALUE,...), or FORMAT:PATH with FORMAT movielens-100k, movielens-latest "
                "or amazon (e.g. movielens-100k:../shared/data/ml-100k).")
ModelOption = Annotated[str, typer.Option(
    "--model", help="Model family: graphsage, sequence, the name of a bc_ray.models entry point, "
                    "or package.module:Class.")]
SpecOption = Annotated[typing.Optional[str], typer.Option(
    help="The family's version spec as key=value pairs, e.g. 'layers=3,hidden=320,out=128' "
         "for graphsage or 'dim=64,layers=2,heads=2,max_len=50' for sequence; keys not named "
         "keep the spec trained without --spec: the current version's when it is of the same "
         "family, else the family's default.")]


def model_family(name: str | None) -> ModelFamily:
    """The family `--model` names, or a usage error naming the choices."""
    if name is not None and not name.strip():
        raise typer.BadParameter("is empty: name a model family", param_hint="--model")
    try:
        return get_family(name)
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="--model") from None


def open_store(uri: str):
    from bc_ray.store.store import Store

    return Store(uri)


def open_written_store(uri: str):
    """The store at `uri`, which something has written (`Store.written_state`): for the
    commands that act on what a store holds."""
    store = open_store(uri)
    store.written_state()
    return store


def default_of(config: type, name: str) -> Any:
    """The default of field `name` of the dataclass `config`: a command-line default is read
    from the configuration it fills, so changing it there changes `--help` and behaviour."""
    field = config.__dataclass_fields__[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"{config.__name__}.{name} has no default")


def option_group(command: Callable[..., Any]) -> Callable[..., Any]:
    """Expand each parameter of `command` annotated with a dataclass into that dataclass's fields
    (each an `Annotated` typer option with its default), in its place, and hand `command` the
    dataclass built from them: commands that take the same options declare them once.

    Typer reads a command's options from its signature; the one given here is `command`'s with
    the groups expanded (keyword-only, so a group without defaults may follow an option with
    one)."""
    own = inspect.signature(command, eval_str=True)
    groups = {name: p.annotation for name, p in own.parameters.items()
              if dataclasses.is_dataclass(p.annotation)}
    parameters = []
    for name, parameter in own.parameters.items():
        if name not in groups:
            parameters.append(parameter)
            continue
        hints = typing.get_type_hints(groups[name], include_extras=True)
        parameters += [inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(groups[name])]

    @functools.wraps(command)
    def expanded(**options: Any) -> Any:
        for name, group in groups.items():
            options[name] = group(**{f.name: options.pop(f.name)
                                     for f in dataclasses.fields(group)})
        return command(**options)

    expanded.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    expanded.__annotations__ = {p.name: p.annotation for p in parameters}
    return expanded
