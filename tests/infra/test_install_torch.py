"""`make` sets up a fresh machine with no extra variable (issue 25, item 21): torch 2.13.0's CPU
build where pip already looks, else from PyTorch's CPU index, else PyPI's plain torch==2.13.0, and
it says which build it installed.

Real pip installs into a real venv; what pip "already sees", the CPU index and "PyPI" are local
folders holding stand-in torch wheels of a few hundred bytes (no test downloads torch), and the
machine's own pip configuration is hidden (PIP_CONFIG_FILE=/dev/null)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "install_torch.sh"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def stand_in_wheel(folder: Path, version: str, cuda: str | None) -> Path:
    """A pure-Python wheel named torch that reports `version` and `torch.version.cuda`, as the
    real builds do."""
    dist = f"torch-{version}.dist-info"
    files = {
        "torch/__init__.py": b"from torch import version\nfrom torch.version import __version__\n",
        "torch/version.py": f"__version__ = {version!r}\ncuda = {cuda!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def simple_index(root: Path, *wheels: tuple[str, str | None]) -> str:
    """A PEP 503 index (what `--index-url` / `--extra-index-url` take) holding the given builds."""
    project = root / "torch"
    links = []
    for version, cuda in wheels:
        wheel = stand_in_wheel(project, version, cuda)
        href = wheel.name.replace("+", "%2B")
        links.append(f'<a href="{href}">{wheel.name}</a>')
    project.mkdir(parents=True, exist_ok=True)
    (project / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    return root.as_uri()


def closed_port_url() -> str:
    """An index nobody answers on (connection refused at once, as for an unreachable host)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


@pytest.fixture
def fresh_venv(venv) -> Path:
    """The module's venv without torch (each test installs it from scratch)."""
    subprocess.run([str(venv), "-m", "pip", "uninstall", "--yes", "--quiet", "torch"],
                   check=True, capture_output=True)
    return venv


def run_script(python: Path, tmp_path: Path, pypi: str, **env: str) -> subprocess.CompletedProcess:
    """The script with only the given places visible to pip: `pypi` is pip's index, `env` adds
    PIP_FIND_LINKS, TORCH_CPU_INDEX, TORCH, TORCH_INDEX."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PIP_", "TORCH")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    clean.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=pypi, PIP_NO_CACHE_DIR="1",
                 PIP_DISABLE_PIP_VERSION_CHECK="1", HOME=str(tmp_path), **env)
    return subprocess.run(["bash", str(SCRIPT), str(python)], capture_output=True, text=True,
                          env=clean, timeout=300)


def installed(python: Path) -> tuple[str, str | None]:
    done = subprocess.run([str(python), "-c", "import torch; print(torch.__version__); "
                           "print(torch.version.cuda)"], capture_output=True, text=True, check=True)
    version, cuda = done.stdout.split()
    return version, None if cuda == "None" else cuda


@pytest.fixture
def pypi(tmp_path) -> str:
    """Public PyPI as it is: torch 2.13.0 (the CUDA build), no `+cpu` local version."""
    return simple_index(tmp_path / "pypi", ("2.13.0", "12.8"))


def test_the_cpu_build_where_pip_already_looks_is_taken_first(fresh_venv, tmp_path, pypi):
    links = tmp_path / "wheels"
    stand_in_wheel(links, "2.13.0+cpu", None)
    done = run_script(fresh_venv, tmp_path, pypi, PIP_FIND_LINKS=str(links),
                      TORCH_CPU_INDEX=closed_port_url())
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed(fresh_venv) == ("2.13.0+cpu", None)
    assert "torch 2.13.0+cpu installed (CPU build) from pip's configured sources" in done.stdout
    assert "CPU index" not in done.stdout


def test_pytorchs_cpu_index_is_next(fresh_venv, tmp_path, pypi):
    cpu_index = simple_index(tmp_path / "cpu", ("2.13.0+cpu", None))
    done = run_script(fresh_venv, tmp_path, pypi, TORCH_CPU_INDEX=cpu_index)
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed(fresh_venv) == ("2.13.0+cpu", None)
    assert f"torch 2.13.0+cpu installed (CPU build) from {cpu_index}" in done.stdout


def test_an_unreachable_cpu_index_falls_back_to_pypi_and_says_so(fresh_venv, tmp_path, pypi):
    done = run_script(fresh_venv, tmp_path, pypi, TORCH_CPU_INDEX=closed_port_url())
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed(fresh_venv) == ("2.13.0", "12.8")
    lines = done.stdout.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["looking", "not", "no", "torch"]
    assert "no retries" in lines[1]
    assert "installing PyPI's torch==2.13.0" in lines[2]
    assert lines[3] == "install_torch: torch 2.13.0 installed (CUDA 12.8 build) from PyPI " \
                       "(torch==2.13.0)"


def test_nothing_installable_is_one_clear_failure(fresh_venv, tmp_path):
    empty = simple_index(tmp_path / "empty")
    done = run_script(fresh_venv, tmp_path, empty, TORCH_CPU_INDEX=closed_port_url())
    assert done.returncode == 1
    assert "install_torch: pip could not install torch==2.13.0 either" in done.stderr
    assert "Traceback" not in done.stderr


def test_explicit_torch_and_index_are_used_as_given(fresh_venv, tmp_path, pypi):
    """The GPU recipe in the README: TORCH and TORCH_INDEX win over the CPU build pip sees."""
    links = tmp_path / "wheels"
    stand_in_wheel(links, "2.13.0+cpu", None)
    cuda_index = simple_index(tmp_path / "cu128", ("2.13.0+cu128", "12.8"))
    done = run_script(fresh_venv, tmp_path, pypi, PIP_FIND_LINKS=str(links),
                      TORCH="torch==2.13.0+cu128", TORCH_INDEX=cuda_index)
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed(fresh_venv) == ("2.13.0+cu128", "12.8")
    assert "(CUDA 12.8 build) from torch==2.13.0+cu128 with extra index" in done.stdout


def test_make_installs_torch_through_the_script(tmp_path):
    """`make install` on a fresh venv runs the script (no pinned `+cpu` requirement of its own)."""
    done = subprocess.run(["make", "-n", "-C", str(REPO), "install", f"VENV={tmp_path}/venv"],
                          capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TORCH")})
    assert f"bash scripts/install_torch.sh {tmp_path}/venv/bin/python" in done.stdout
    assert "+cpu" not in done.stdout
