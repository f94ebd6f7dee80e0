"""A result names the code that made it (RESULTS' numbers trace to a commit)."""

import subprocess
from pathlib import Path

import pytest

import bc_ray
from bc_ray.experiments.provenance import code_version

ROOT = Path(bc_ray.__file__).resolve().parents[1]


def test_a_result_names_the_commit_it_ran_at():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: the commit cannot be named here")
    found = code_version()
    assert found["commit"] == head.stdout.strip() and isinstance(found["dirty"], bool)
    assert found["bc_ray"] == bc_ray.__version__


def test_outside_a_checkout_the_commit_is_unknown(tmp_path, monkeypatch):
    (tmp_path / "bc_ray").mkdir()
    monkeypatch.setattr(bc_ray, "__file__", str(tmp_path / "bc_ray" / "__init__.py"))
    assert code_version() == {"bc_ray": bc_ray.__version__, "commit": None, "dirty": None}


def test_a_copy_inside_another_repository_does_not_take_its_commit(tmp_path, monkeypatch):
    """bc_ray installed in a venv inside a team's own repository is not that repository."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)
    package = tmp_path / ".venv" / "site-packages" / "bc_ray"
    package.mkdir(parents=True)
    monkeypatch.setattr(bc_ray, "__file__", str(package / "__init__.py"))
    assert code_version()["commit"] is None
