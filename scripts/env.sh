# Environment shared by scripts/*.sh: source it, do not run it.
# Uses the virtual environment made by scripts/setup.sh (system Python + Debian MPI stack).
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MFC_VENV="${MFC_VENV:-$_repo/.venv}"
export PATH="$MFC_VENV/bin:$PATH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"      # one thread per MPI rank
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export H5PY_ALWAYS_USE_MPI=1                        # Debian's h5py: load the MPI build
if [ -z "${PETSC_DIR:-}" ] && [ -e /usr/lib/petsc ]; then export PETSC_DIR=/usr/lib/petsc; fi
if [ "$(id -u)" = "0" ]; then                       # OpenMPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# more ranks than cores (3-rank tests on 2 cores) and no busy-polling while oversubscribed
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
export MFC_PYTHON="$MFC_VENV/bin/python"
