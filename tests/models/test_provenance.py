"""Every version records the release of the package its family came from
(`registry.family_requirement`): a process without the plug-in is told what to pip install, and
one with another release is told, once, that other code now computes the version's embeddings."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, fields

import numpy as np
import pytest

from bc_ray import __version__
from bc_ray.core.registry import (
    _warn_other_release,
    family_requirement,
    get_family,
    version_family,
)
from bc_ray.exceptions import FamilyNotFoundError
from bc_ray.store.state import EXTERNAL_FAMILY, StoreState, VersionRecord
from bc_ray.store.store import Store
from bc_ray.store.versions import Candidate, register_candidate
from tests.conftest import PLUGINS

TINY = "bc-ray-tiny-family==0.1"  # tests/models/plugin's dist-info


@dataclass
class Record:
    version: int
    family: str
    requires: str | None


def test_the_requirement_names_the_release_installed(tiny_release_0_2, tmp_path):
    assert family_requirement("graphsage") == f"bc-ray=={__version__}"
    assert family_requirement("bc_ray.models.graphsage.family:GraphSAGE") == \
        f"bc-ray=={__version__}"
    assert family_requirement("tiny") == tiny_release_0_2
    assert family_requirement("bc_ray_tiny_family:TinyFamily") == tiny_release_0_2  # top_level
    shutil.copy(PLUGINS / "bc_ray_tiny_family" / "__init__.py", tmp_path / "loose_family.py")
    assert get_family("loose_family:TinyFamily").name == "tiny"
    assert family_requirement("loose_family:TinyFamily") is None  # a module of no package


def test_the_requirement_is_the_release_loaded(tmp_path, monkeypatch):
    """A process that loaded release 1.0 runs its code after 2.0 is installed in its place."""
    package = tmp_path / "provenance_pkg"
    package.mkdir()
    shutil.copy(PLUGINS / "bc_ray_tiny_family" / "__init__.py", package / "__init__.py")
    info = tmp_path / "provenance_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: provenance-pkg\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("provenance_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_family("provenance_pkg:TinyFamily").name == "tiny"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: provenance-pkg\nVersion: 2.0\n")
    assert family_requirement("provenance_pkg:TinyFamily") == "provenance-pkg==1.0"


def test_each_trained_version_records_its_family_release(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    rng = np.random.default_rng(0)
    for family in ("tiny", EXTERNAL_FAMILY):
        register_candidate(store, Candidate(
            parent=None, dim=8, method="bc-aligner", spec={}, snapshot_id="s", cutoff=1.0,
            model=rng.bytes(64), transform=None, family=family))
    state = Store(f"file://{tmp_path}/store").state()  # read back from the log
    assert [state.version(v).requires for v in (0, 1)] == [TINY, None]
    checkpoint = state.to_dict()
    assert StoreState.from_dict(checkpoint).version(0).requires == TINY
    # Kept with the run's other provenance, in `metrics`, which every older bc_ray reads: a
    # record field of its own would be a key older readers of the checkpoint do not know.
    assert set(checkpoint["versions"]["0"]) == {f.name for f in fields(VersionRecord)}


def test_a_version_whose_family_is_gone_says_what_to_install():
    with pytest.raises(FamilyNotFoundError, match=(
            r"version 3 was trained by model family 'gone', which does not load here \(unknown "
            r"model family .*\); install it \(pip install 'acme-models==1\.2\.0'\), here and in "
            r"the cluster's image")):
        version_family(Record(3, "gone", "acme-models==1.2.0"))
    with pytest.raises(FamilyNotFoundError, match="install the package that provides it"):
        version_family(Record(3, "gone", None))  # recorded before releases were


def test_another_release_than_trained_is_said_once(caplog):
    _warn_other_release.cache_clear()  # said once per process: this test may run again
    with caplog.at_level(logging.WARNING, logger="bc_ray.core.registry"):
        assert version_family(Record(7, "tiny", "bc-ray-tiny-family==0.0.9")).name == "tiny"
        version_family(Record(7, "tiny", "bc-ray-tiny-family==0.0.9"))
        version_family(Record(8, "tiny", TINY))  # the release installed
        version_family(Record(9, "graphsage", "bc-ray==0.0.1"))  # bc_ray reads its own
    said = [r.getMessage() for r in caplog.records]
    assert said == ["version 7 was trained by model family 'tiny' from "
                    f"bc-ray-tiny-family==0.0.9; this process has {TINY}, whose code now "
                    "computes its embeddings (install bc-ray-tiny-family==0.0.9 to compute "
                    "them as trained)"]
