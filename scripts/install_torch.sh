#!/usr/bin/env bash
# Installs torch 2.13.0 into the Python environment given as $1 (the venv's python), with no
# extra variable on any machine: public PyPI hosts no `+cpu` local versions, so the CPU build is
# looked for first where pip already looks (a wheel cache, find-links, a mirror), then on
# PyTorch's CPU index (a short timeout: an unreachable index must not cost pip's minutes of
# retries), and only then PyPI's plain torch==2.13.0 (the CUDA build on Linux x86_64).
# Overrides, used as given and without fallback:
#   TORCH=<requirement>        e.g. TORCH=torch==2.13.0 (the GPU build) or a local wheel path
#   TORCH_INDEX=<index URL>    an extra index for TORCH, e.g. https://download.pytorch.org/whl/cu128
#   TORCH_CPU_INDEX=<index URL> where the second attempt looks (default PyTorch's CPU index)
set -euo pipefail

PYTHON=${1:?usage: install_torch.sh PATH/TO/VENV/bin/python}
VERSION=2.13.0
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
QUICK=(--timeout 10 --retries 0)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

pip_install() {  # pip install, its output kept in $LOG (shown only when every attempt failed)
    "$PYTHON" -m pip install --disable-pip-version-check "$@" >"$LOG" 2>&1
}

report() {  # the build that was installed, as torch's own version.py records it (importing
    # torch here would warn: numpy is installed after it)
    local source=$1
    "$PYTHON" - "$source" <<'PY'
import runpy
import sys
from importlib.metadata import distribution

info = runpy.run_path(str(distribution("torch").locate_file("torch/version.py")))
gpu = (f"CUDA {info['cuda']}" if info.get("cuda")
       else f"ROCm {info['hip']}" if info.get("hip") else None)
build = f"{gpu} build" if gpu else "CPU build"
print(f"install_torch: torch {info['__version__']} installed ({build}) from {sys.argv[1]}")
PY
}

failed() {
    echo "install_torch: $1" >&2
    tail -n 5 "$LOG" >&2
    exit 1
}

if [[ -n "${TORCH:-}" || -n "${TORCH_INDEX:-}" ]]; then
    requirement=${TORCH:-torch==$VERSION+cpu}
    extra=()
    [[ -n "${TORCH_INDEX:-}" ]] && extra=(--extra-index-url "$TORCH_INDEX")
    pip_install ${extra[@]+"${extra[@]}"} "$requirement" \
        || failed "pip could not install $requirement${TORCH_INDEX:+ (extra index $TORCH_INDEX)}"
    report "$requirement${TORCH_INDEX:+ with extra index $TORCH_INDEX}"
    exit 0
fi

echo "install_torch: looking for torch==$VERSION+cpu where pip already looks"
if pip_install "torch==$VERSION+cpu"; then
    report "pip's configured sources"
    exit 0
fi
echo "install_torch: not there; trying PyTorch's CPU index $CPU_INDEX (10 s timeout, no retries)"
if pip_install "${QUICK[@]}" --extra-index-url "$CPU_INDEX" "torch==$VERSION+cpu"; then
    report "$CPU_INDEX"
    exit 0
fi
echo "install_torch: no CPU build reachable; installing PyPI's torch==$VERSION" \
     "(on Linux x86_64 the CUDA build, several GB; it also runs on CPU)"
pip_install "torch==$VERSION" || failed "pip could not install torch==$VERSION either"
report "PyPI (torch==$VERSION)"
