"""The README's "Your own model" example is the test-only family itself: every fenced block the
README marks with `<!-- file: PATH -->` equals that file, so the documented family is the one the
conformance test runs and the docs cannot drift from it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKED = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", flags=re.S)


def test_the_readme_example_family_is_the_tested_plugin():
    blocks = MARKED.findall((REPO / "README.md").read_text())
    named = {path for path, _ in blocks}
    assert {"tests/models/plugin/bc_ray_tiny_family/__init__.py",
            "tests/models/plugin/pyproject.toml"} <= named
    for path, body in blocks:
        assert body == (REPO / path).read_text(), f"README's copy of {path} differs from the file"
