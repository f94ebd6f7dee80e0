import pytest

from bc_ray.core.methods import METHODS, PAPER_METHODS, get_method
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.exceptions import ConfigError


def test_all_variants_and_baselines_are_selectable_by_name():
    titles = {m.title for m in METHODS.values()}
    assert {"Non-BC", "Post-Lin-SLoss", "Post-Lin-MLoss", "Joint-NoTrans", "Joint-Lin-SLoss",
            "BC-Aligner", "Fix-M0", "Finetune-M0", "Keep-All"} <= titles
    assert get_method("Joint_Lin_MLoss") is get_method("bc-aligner")
    assert len(PAPER_METHODS) == 6
    bc = get_method("bc-aligner")
    assert (bc.transform, bc.alignment, bc.schedule) == ("linear", "multi", "joint")


def test_version_spec_parsing_and_growth():
    spec = VersionSpec.parse("layers=2,hidden=256,agg=mean")
    assert spec.grown(1) == VersionSpec(num_layers=2, hidden_dim=320)
    assert spec.grown(2) == VersionSpec(num_layers=3, hidden_dim=384)
    assert VersionSpec.from_dict(spec.to_dict()) == spec
    for bad in ("layers=0", "hidden=x", "agg=median", "depth=3", "layers"):
        with pytest.raises(ConfigError):
            VersionSpec.parse(bad)
