#!/usr/bin/env bash
# Set up (first use; idempotent and fast afterwards) and run the default job: a residual
# network on a plane trained as mean-field control on the two half-moons (2 MPI ranks),
# compared with the same architecture trained by gradient descent (Adam) and with logistic
# regression; then the exported ONNX model classifies the data without the solver.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: demo_out)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
source "$here/env.sh"
out="${1:-demo_out}"
cd "$here/.."
start=$(date +%s.%N)
mpiexec -n 2 "$MFC_PYTHON" -m mfc_hpc train mfc_hpc/examples/moons.toml --out "$out" --gd-steps 500
"$MFC_PYTHON" -m mfc_hpc data moons --out "$out/moons.csv"
"$MFC_PYTHON" -m mfc_hpc predict "$out/model.onnx" "$out/moons.csv" --json "$out/predict.json"
end=$(date +%s.%N)
echo
echo "results in $(cd "$out" && pwd)/:"
echo "  summary.json (solver diagnostics, key 'network'), evaluation.json, model.npz, model.onnx, predict.json"
echo "  untangle.png densities.png trajectories.png grid_deformation.png decision_regions.png velocity.png"
"$MFC_PYTHON" - "$out" "$start" "$end" <<'PY'
import json, sys
out, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = json.load(open(f"{out}/summary.json"))
r = s["network"]
mf, gd, gd0 = r["mean_field"], r["gradient_descent"], r.get("gradient_descent_no_noise", {})
lg = r["logistic"]["same_features"]
z = s.get("zero_network_cost") or {}
p = json.load(open(f"{out}/predict.json"))
print(f"headline: test accuracy mean-field {mf['test']['accuracy']:.3f} | Adam {gd['test']['accuracy']:.3f} "
      f"(noise nu), {gd0.get('test', {}).get('accuracy', float('nan')):.3f} (no noise) | logistic regression "
      f"{lg['test']['accuracy']:.3f} ({r['data']['test']} test samples)")
print(f"          J_h {s['diagnostics']['cost']['total']:.4g} (zero network {z.get('total', float('nan')):.4g}); "
      f"J_S mean-field {mf['J_S']:.4f}, Adam {gd['J_S']:.4f} / {gd0.get('J_S', float('nan')):.4f}")
print(f"          mesh {'x'.join(map(str, s['mesh']['nodes']))} x {s['mesh']['layers']} layers on {s['ranks']} ranks: "
      f"solve {s['timings']['total']:.1f} s, Adam {gd['wall']:.1f} s + {gd0.get('wall', 0.0):.1f} s, "
      f"demo {t1 - t0:.1f} s in all; ONNX model on all {p['samples']} samples: accuracy {p['accuracy']:.3f}")
PY
