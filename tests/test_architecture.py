"""The floors of the house (README, "The pieces"): each package imports only from floors below
its own, so that a room can be read, tested and reused without the rooms above it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bc_ray"
FLOORS = {
    **dict.fromkeys(("chain", "io", "exceptions", "memory", "redaction", "render", "cluster",
                     "key_values", "placement"), 1),
    "data": 2,
    "core": 3,
    "models": 4, "store": 4,  # beside each other: neither imports the other
    "ingest": 5, "partition": 5,
    **dict.fromkeys(("train", "refresh", "serve", "publish", "scheduler", "consumer"), 6),
    "lifecycle": 7, "experiments": 7,
    "cli": 8,
}
GROUND = 1  # its modules may use each other (exceptions, redaction)


def _room(package: Path, path: Path) -> str:
    """The package (or ground-floor module) a file of bc_ray/ belongs to."""
    return path.relative_to(package).parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> list[tuple[int, str]]:
    """(line, room) of every bc_ray import in a file, those inside functions too; a relative
    import is the room "relative" (it has no floor: the house imports by absolute names)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "relative"))
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "bc_ray":
            names = [f"bc_ray.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "bc_ray" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _modules(package: Path) -> list[Path]:
    """Every file of the package but its own __init__ (which imports nothing)."""
    return sorted(path for path in package.rglob("*.py") if path != package / "__init__.py")


def upward_imports(package: Path) -> list[str]:
    """Each import of a room on the same floor or above, and each room without a floor."""
    found = []
    for path in _modules(package):
        room = _room(package, path)
        if room not in FLOORS:
            found.append(f"{path}: {room} has no floor (FLOORS here and the README)")
            continue
        floor = FLOORS[room]
        for line, other in _imported_rooms(path):
            if other == room or (floor == GROUND and FLOORS.get(other) == GROUND):
                continue
            if other not in FLOORS or FLOORS[other] >= floor:
                found.append(f"{path}:{line} ({room}, floor {floor}) imports {other} "
                             f"(floor {FLOORS.get(other)})")
    return found


def test_each_package_imports_only_from_floors_below_its_own():
    assert upward_imports(PACKAGE) == []


def test_an_upward_or_sideways_import_and_a_room_without_a_floor_are_caught(tmp_path):
    package = tmp_path / "bc_ray"
    for room, text in {"core/leaky.py": "def f():\n    from bc_ray.train.config import X\n",
                       "store/beside.py": "import bc_ray.models.registry\n",
                       "store/fine.py": "from bc_ray.core import losses\nimport bc_ray.io\n",
                       "data/by_name.py": "from bc_ray import chain, refresh\n",
                       "data/relative.py": "from .snapshot import GraphSnapshot\n",
                       "annex/new.py": "", "io.py": "from bc_ray.exceptions import E\n"}.items():
        (package / room).parent.mkdir(parents=True, exist_ok=True)
        (package / room).write_text(text)
    found = upward_imports(package)
    assert len(found) == 5, found
    assert "annex has no floor" in found[0]
    assert "leaky.py:2 (core, floor 3) imports train (floor 6)" in found[1]
    assert "by_name.py:1 (data, floor 2) imports refresh (floor 6)" in found[2]
    assert "relative.py:1 (data, floor 2) imports relative (floor None)" in found[3]
    assert "beside.py:1 (store, floor 4) imports models (floor 4)" in found[4]


def test_core_imports_no_ray_and_no_storage():
    """Every module of core/, imported in a bare process: the science stays usable alone."""
    code = ("import importlib, pkgutil, sys, bc_ray.core as core; "
            "[importlib.import_module('bc_ray.core.' + m.name) "
            " for m in pkgutil.iter_modules(core.__path__)]; "
            "loaded = [m for m in sys.modules if m == 'ray' or m.startswith(('ray.', "
            "'bc_ray.store', 'bc_ray.io', 'bc_ray.train', 'bc_ray.refresh'))]; "
            "print(loaded); sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
