"""Fixtures of the model-family tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bc_ray.core import registry
from tests.conftest import PLUGINS


def forget_tiny_release() -> None:
    """Which release the tiny family came from is looked up again, as after an install (the
    family itself stays loaded: other tests hold it)."""
    for name in [n for n in registry._loaded_from if n == "tiny" or n.startswith("bc_ray_tiny")]:
        del registry._loaded_from[name]


@pytest.fixture
def tiny_release_0_2(tmp_path, monkeypatch) -> Iterator[str]:
    """The tiny plug-in as release 0.2, found before the 0.1 on the tests' path (the cluster's
    workers still find 0.1)."""
    shutil.copytree(PLUGINS / "bc_ray_tiny_family", tmp_path / "bc_ray_tiny_family")
    info = tmp_path / "bc_ray_tiny_family-0.2.dist-info"
    shutil.copytree(PLUGINS / "bc_ray_tiny_family-0.1.dist-info", info)
    metadata = info / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 0.1", "Version: 0.2"))
    monkeypatch.syspath_prepend(str(tmp_path))
    forget_tiny_release()
    yield "bc-ray-tiny-family==0.2"
    monkeypatch.undo()
    forget_tiny_release()
