"""Finding model families by name (core/registry.py): the test-only `tiny` family through its
real `bc_ray.models` entry point (driver and Ray workers), `package.module:Class`, and one clear
ConfigError for each way a choice can be wrong. The broken plug-ins below are real installed
distributions (dist-info with entry_points.txt) in a temporary folder on sys.path."""

from __future__ import annotations

import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bc_ray.cli.main import app
from bc_ray.exceptions import ConfigError
from bc_ray.models import ENTRY_POINT_GROUP, family_names, family_of, get_family

runner = CliRunner()


def _install(root: Path, dist: str, version: str, entries: dict[str, str],
             modules: dict[str, str]) -> None:
    """A distribution as pip would leave it: its modules, and a dist-info naming its entry
    points in the bc_ray.models group."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path that tests install plug-ins into."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_entry_point_family_loads_by_name():
    (point,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "tiny"]
    assert point.dist.name == "bc-ray-tiny-family"
    assert point.value == "bc_ray_tiny_family:TinyFamily"
    assert "tiny" in family_names()
    family = get_family("tiny")
    assert type(family).__module__ == "bc_ray_tiny_family" and family.name == "tiny"
    spec = family.parse_spec("dim=4")
    assert spec.output_dim == 4 and family.spec_from_dict(spec.to_dict()) == spec
    assert family_of(spec) is family


def test_a_ray_worker_finds_the_entry_point_family(ray_cluster):
    """Refresh tasks and Ray Train workers rebuild a version's model by its family's name."""
    @ray_cluster.remote
    def name_in_worker() -> tuple[str, str]:
        from bc_ray.models import get_family

        family = get_family("tiny")
        return family.name, type(family).__module__

    assert ray_cluster.get(name_in_worker.remote()) == ("tiny", "bc_ray_tiny_family")


def test_package_module_class_loads_without_an_entry_point():
    family = get_family("bc_ray_tiny_family:TinyFamily")
    assert family.name == "tiny" and family.default_spec().output_dim == 8
    with pytest.raises(ConfigError, match="cannot import no_such_package"):
        get_family("no_such_package.family:Family")
    with pytest.raises(ConfigError, match="bc_ray_tiny_family has no Missing"):
        get_family("bc_ray_tiny_family:Missing")


def test_an_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model family 'nosuch': choose one of "
                                          r"\[.*'graphsage'.*'tiny'.*\]"):
        get_family("nosuch")


def test_two_packages_registering_one_name_are_both_named(site):
    for dist, version in (("twin-a", "1.0"), ("twin-b", "2.0")):
        module = f"bc_ray_{dist.replace('-', '_')}"
        _install(site, dist, version, {"twin": f"{module}:Family"},
                 {module: "raise AssertionError('a duplicate name must not import anything')"})
    with pytest.raises(ConfigError, match=r"'twin' is registered by more than one package "
                                          r"\(twin-a 1.0, twin-b 2.0\)"):
        get_family("twin")


def test_a_plugin_that_fails_to_import_fails_only_when_chosen(site):
    _install(site, "broken-family", "0.3", {"broken": "bc_ray_broken_family:Family"},
             {"bc_ray_broken_family": "import torch_geometric_nightly_xyz\n"})
    assert "broken" in family_names()  # listed, never imported
    assert get_family("tiny").name == "tiny"  # every other family still works
    with pytest.raises(ConfigError, match=r"'broken' from broken-family 0.3 failed to import: "
                                          r"ModuleNotFoundError: .*torch_geometric_nightly_xyz"):
        get_family("broken")


def test_a_class_missing_required_members_is_named(site):
    _install(site, "half-family", "0.1", {"half": "bc_ray_half_family:Half"}, {
        "bc_ray_half_family": """
            from bc_ray.models import FamilyBase

            class Half(FamilyBase):  # no build, no task
                name = "half"
        """})
    with pytest.raises(ConfigError, match=r"'half' \(Half\) lacks build, task: see "
                                          r"bc_ray.models.ModelFamily"):
        get_family("half")


def test_a_family_needing_a_newer_api_is_refused(site):
    _install(site, "future-family", "9.0", {"future": "bc_ray_future_family:Future"}, {
        "bc_ray_future_family": """
            from bc_ray_tiny_family import TinyFamily

            class Future(TinyFamily):
                api_version = 99
        """})
    with pytest.raises(ConfigError, match="needs bc_ray model API 99.*upgrade bc_ray"):
        get_family("future")


def test_a_plugin_cannot_take_a_built_in_name(site, caplog):
    _install(site, "impostor", "0.1", {"graphsage": "bc_ray_tiny_family:TinyFamily"}, {})
    assert type(get_family("graphsage")).__name__ == "GraphSAGE"
    assert "graphsage" in family_names()
    assert "entry point 'graphsage' of impostor 0.1 is ignored" in caplog.text
    (site / "bc_ray_impostor.py").write_text(textwrap.dedent("""
        from bc_ray_tiny_family import TinyFamily

        class Impostor(TinyFamily):
            name = "graphsage"
    """))
    with pytest.raises(ConfigError, match="calls itself 'graphsage', a built-in family's name"):
        get_family("bc_ray_impostor:Impostor")


PLUGIN_HEADER = """
    from dataclasses import dataclass
    from typing import ClassVar

    from bc_ray_tiny_family import TinyFamily, TinySpec
"""


@pytest.mark.parametrize("name, body, message", [
    ("renamed", "class Renamed(TinyFamily):\n    name = 'acme_v2'",
     r"'renamed' loads a family named 'acme_v2': register it under its own name"),
    ("needsargs", "class Needsargs(TinyFamily):\n    name = 'needsargs'\n"
                  "    def __init__(self, path):\n        self.path = path",
     r"Needsargs\(\) failed \(TypeError: .*path.*\); a family class is created without "
     r"arguments"),
    ("wrongspec", "class Wrongspec(TinyFamily):\n    name = 'wrongspec'",
     r"its spec names family 'tiny', not 'wrongspec': set the spec class's `family"),
    ("nodefault", "@dataclass(frozen=True)\nclass Spec:\n"
                  "    family: ClassVar[str] = 'nodefault'\n    width: int\n"
                  "class Nodefault(TinyFamily):\n    name = 'nodefault'\n    spec_type = Spec",
     r"default_spec\(\) failed \(TypeError: .*width.*\); every field of a spec needs a default"),
    ("typo", "@dataclass(frozen=True)\nclass Spec(TinySpec):\n"
             "    family: ClassVar[str] = 'typo'\n"
             "class Typo(TinyFamily):\n    name = 'typo'\n    spec_type = Spec\n"
             "    refresh_strategy = 'entity'",
     r"refresh_strategy must be 'entities', got 'entity'"),
    ("strapi", "class Strapi(TinyFamily):\n    name = 'strapi'\n    api_version = '1'",
     r"api_version must be an integer, got '1'"),
])
def test_a_family_bc_ray_cannot_use_is_one_line_naming_why(site, name, body, message):
    """What a plug-in's author gets wrong is said when the family is chosen, in one line, never
    as a traceback from inside the plug-in or a silent switch to another family."""
    module = f"bc_ray_{name}_family"
    _install(site, f"{name}-family", "0.1", {name: f"{module}:{name.capitalize()}"},
             {module: PLUGIN_HEADER + textwrap.indent(body, "    ")})
    with pytest.raises(ConfigError, match=message):
        get_family(name)


@pytest.mark.parametrize("command", [["train", "--store", "file:///nowhere"],
                                     ["benchmark", "paper", "--out", "nowhere"], ["demo"]])
def test_model_nosuch_is_a_usage_error(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, here or anywhere
    result = runner.invoke(app, [*command, "--model", "nosuch"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.replace("│", " ").split())  # the error box, unwrapped
    assert "Invalid value for --model: unknown model family 'nosuch'" in said
    assert not any(tmp_path.iterdir())


def test_an_empty_model_name_is_a_usage_error_not_graphsage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--store", "file:///nowhere", "--model", " "])
    assert result.exit_code == 2 and "is empty: name a model family" in result.output
