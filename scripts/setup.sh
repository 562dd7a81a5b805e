#!/usr/bin/env bash
# Idempotent set-up of specklab's virtual environment (.venv, or $SPECKLAB_VENV).
#
# Why a script and not just `pip install -e .`: torch must be a CPU build on machines
# without an NVIDIA GPU (a plain `pip install torch` pulls several GB of CUDA packages),
# and the simulated DMD is a C library built with the system compiler.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SPECKLAB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

"$python" - <<'PY' || { echo "specklab needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || {
    echo "specklab needs a C compiler (cc/gcc) to build the simulated DMD library: apt-get install gcc" >&2
    exit 1
}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip setuptools wheel

# --- torch: CUDA build only where an NVIDIA GPU exists -------------------------------
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" install --quiet torch
    else
        # A CPU wheel from a wheelhouse pip is already configured with (air-gapped bench PCs
        # keep one), else PyTorch's own CPU-only index.
        local_cpu_wheel=""
        for dir in $("${pip[@]}" config get global.find-links 2>/dev/null || true); do
            for whl in "$dir"/torch-*+cpu-cp3*.whl; do
                [ -e "$whl" ] && local_cpu_wheel="$whl"
            done
        done
        if [ -n "$local_cpu_wheel" ]; then
            version="$(basename "$local_cpu_wheel" | cut -d- -f2)"
            "${pip[@]}" install --quiet "torch==${version%%+*}"
        else
            "${pip[@]}" install --quiet torch --index-url "${SPECKLAB_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
        fi
    fi
fi

"${pip[@]}" install --quiet -e "$root[test]"

# Build the simulated Vialux ALP library now rather than inside the first test.
"$venv/bin/python" -c "from devices.alp_sim.build import build_library; print('simulated ALP library:', build_library())"
