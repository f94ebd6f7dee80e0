"""Fixtures of the model-family tests."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import PLUGINS


@pytest.fixture
def tiny_release_0_2(tmp_path, monkeypatch) -> str:
    """The tiny plug-in as release 0.2, found before the 0.1 on the tests' path."""
    shutil.copytree(PLUGINS / "bc_ray_tiny_family", tmp_path / "bc_ray_tiny_family")
    info = tmp_path / "bc_ray_tiny_family-0.2.dist-info"
    shutil.copytree(PLUGINS / "bc_ray_tiny_family-0.1.dist-info", info)
    metadata = info / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 0.1", "Version: 0.2"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bc-ray-tiny-family==0.2"
