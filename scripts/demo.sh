#!/usr/bin/env bash
# Classification demo on the shipped iris data: 2 MPI ranks, a few minutes on 2 cores.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: demo_out)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
out="${1:-demo_out}"
cd "$here/.."
mpiexec -n 2 "$MFC_PYTHON" -m mfc_hpc train mfc_hpc/examples/iris.toml --out "$out"
"$MFC_PYTHON" -m mfc_hpc predict "$out/model.npz" mfc_hpc/data/iris.csv --json "$out/predict.json"
echo
echo "results in $out/: summary.json (key 'network'), evaluation.json, model.npz, predict.json,"
echo "  densities.png trajectories.png velocity.png histograms.png"
