#!/usr/bin/env bash
# Set up everything mfc_hpc needs on Debian 12 (idempotent; fast when already done):
# the distribution's consistent MPI stack (OpenMPI, PETSc + petsc4py, mpi4py, h5py-mpi),
# a virtual environment from the *system* Python with system site packages, and the
# package installed into it in editable mode.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/env.sh

PKGS=(python3 python3-venv python3-pip python3-numpy python3-scipy python3-matplotlib
      python3-pytest python3-mpi4py python3-petsc4py python3-h5py-mpi openmpi-bin
      petsc-dev python3-setuptools)
stamp="$MFC_VENV/.mfc-setup"
want="$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"

check() {
  "$MFC_PYTHON" - <<'PY' >/dev/null 2>&1
import petsc4py; petsc4py.init([])
from petsc4py import PETSc
import mpi4py, h5py, numpy, scipy, matplotlib, pytest, mfc_hpc
import onnx, onnxruntime
assert h5py.get_config().mpi
assert (onnx.__version__, onnxruntime.__version__) == ("1.17.0", "1.20.1")
PY
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# the system interpreter, not the first python3 on PATH (which may be another one)
if [ ! -x "$MFC_VENV/bin/python" ]; then
  echo "setup: creating $MFC_VENV from /usr/bin/python3 (with system site packages)"
  /usr/bin/python3 -m venv --system-site-packages "$MFC_VENV"
fi
"$MFC_PYTHON" -m pip install -q --no-deps --no-build-isolation -e "$repo"
# ONNX export of the trained network and its runtime (mfc-hpc predict model.onnx), pinned to
# wheels that install next to Debian 12's numpy 1.24.2 (whose ABI petsc4py and h5py need):
# the constraint keeps pip from replacing the system numpy
cons="$(mktemp)"
"$MFC_PYTHON" -c 'import numpy; print("numpy==" + numpy.__version__)' > "$cons"
"$MFC_PYTHON" -m pip install -q -c "$cons" onnx==1.17.0 onnxruntime==1.20.1 protobuf==7.36.2 \
  flatbuffers==25.12.19 coloredlogs==15.0.1 humanfriendly==10.0
rm -f "$cons"
if ! check; then
  echo "setup: the MPI stack does not import; see README 'Installing'" >&2
  "$MFC_PYTHON" -c "import petsc4py; petsc4py.init([]); from petsc4py import PETSc; import h5py, mfc_hpc; assert h5py.get_config().mpi, 'h5py is not built for MPI'" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "setup: ready ($("$MFC_PYTHON" -c 'from petsc4py import PETSc; print("PETSc", ".".join(map(str, PETSc.Sys.getVersion())))'))"
