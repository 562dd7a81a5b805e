#!/usr/bin/env bash
# Set up (idempotent) and run the main job headless on the simulated bench: a short B/S/B/D
# acquisition (seed 000's protocol) into runs/demo-bsbd.h5, then print what the file holds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${SPECKLAB_VENV:-$root/.venv}"
cd "$root"
mkdir -p runs
"$venv/bin/specklab" acquire --config configs/sim-bench.toml --protocol bsbd \
    --set frames="${FRAMES:-2000}" --out runs/demo-bsbd.h5
"$venv/bin/specklab" info runs/demo-bsbd.h5 --json
