"""Options several commands take are declared once, and their defaults are the configuration's."""

from dataclasses import dataclass, field
from typing import Annotated

import typer
from typer.testing import CliRunner

from bc_ray.cli.common import JsonOption, default_of, option_group
from bc_ray.cli.main import app


def _options(*path: str) -> dict:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: (p.opts, p.default, p.help) for p in command.params}


def test_scheduler_run_and_once_take_the_same_options():
    run, once = _options("scheduler", "run"), _options("scheduler", "once")
    assert set(once) - set(run) == {"kind", "as_json"}
    assert {name: once[name] for name in run} == run


def test_an_option_group_is_expanded_in_place_and_handed_over_as_one_object():
    @dataclass(frozen=True)
    class Config:
        retries: int = 3
        names: list = field(default_factory=lambda: ["a"])

    @dataclass(frozen=True)
    class Group:
        retries: Annotated[int, typer.Option(help="Retries.")] = default_of(Config, "retries")
        label: Annotated[str, typer.Option(help="Label.")] = "x"

    seen = []
    toy = typer.Typer()

    @toy.command()
    @option_group
    def go(first: Annotated[str, typer.Option()], *, group: Group,
           as_json: JsonOption = False) -> None:
        seen.append((first, group, as_json))

    assert default_of(Config, "names") == ["a"]
    result = CliRunner().invoke(toy, ["--first", "f", "--label", "y", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [("f", Group(retries=3, label="y"), True)]
    help_text = CliRunner().invoke(toy, ["--help"], terminal_width=200).output
    assert help_text.index("--first") < help_text.index("--retries") < \
        help_text.index("--label") < help_text.index("--json")
    assert "[default: 3]" in help_text
