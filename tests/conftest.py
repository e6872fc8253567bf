"""Shared test helpers: the MPI stack must be present (a missing PETSc is a failure,
not a skip), and MPI tests run ``mpiexec -n P`` in subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")
import petsc4py  # noqa: E402  (ImportError here fails the suite, as it must)

petsc4py.init([])

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def mpi_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    env["OMPI_MCA_mpi_yield_when_idle"] = "1"
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    env["H5PY_ALWAYS_USE_MPI"] = "1"
    return env


def run_mpi(nranks: int, args: list[str], timeout: float = 600, check: bool = True,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n nranks python args...``; with ``check`` a non-zero exit fails
    the test and shows the output."""
    cmd = ["mpiexec", "-n", str(nranks), PYTHON] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(),
                       cwd=cwd or REPO)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n"
                    f"--- stderr\n{p.stderr[-4000:]}")
    return p


def run_cli(nranks: int, args: list[str], **kw) -> subprocess.CompletedProcess:
    """``mfc-hpc args...`` on ``nranks`` ranks (``python -m mfc_hpc``)."""
    return run_mpi(nranks, ["-m", "mfc_hpc"] + list(args), **kw)


@pytest.fixture
def mpirun():
    return run_mpi


@pytest.fixture
def cli():
    return run_cli
