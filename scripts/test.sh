#!/usr/bin/env bash
# Set up (idempotent) and run specklab's whole test suite headless: lint, then pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${SPECKLAB_VENV:-$root/.venv}"
cd "$root"
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
"$venv/bin/ruff" check .
"$venv/bin/python" -m pytest "$@"
