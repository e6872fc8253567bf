"""The same answer on 1, 2 and 3 ranks, uneven decompositions and process grids
included, through the command line; and the parallel Jacobian assembly."""
import json

import h5py
import numpy as np
import pytest

from conftest import run_cli, run_mpi

CONFIG = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = 47
layers = 13
depth = 1.0
[model]
nu = 0.1
eta = 0.1
running = "congestion"
kappa = 0.3
[[classes]]
prior = 0.4
mean = -0.5
var = 0.09
[[classes]]
prior = 0.6
mean = 0.5
var = 0.09
[loss]
kind = "softmax"
weights = [-1.0, 1.0]
biases = [0.0, 0.2]
gamma = 2.0
[solver]
process_grid = [{px}, {py}]
"""


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    out = {}
    # 47 nodes and 14 levels do not divide evenly by 2 or 3: uneven blocks
    for n, (px, py) in [(1, (1, 1)), (2, (2, 1)), (2, (1, 2)), (3, (3, 1)), (3, (1, 3))]:
        d = tmp_path_factory.mktemp(f"r{n}_{px}x{py}")
        cfg = d / "c.toml"
        cfg.write_text(CONFIG.format(px=px, py=py))
        run_cli(n, ["solve", cfg, "--out", d / "out", "--no-checkpoint"])
        with h5py.File(d / "out" / "solution.h5", "r") as f:
            sol = {k: f[k][()] for k in ("rho", "phi")}
        s = json.loads((d / "out" / "summary.json").read_text())
        assert s["converged"] and s["ranks"] == n and s["process_grid"] == [px, py]
        out[(n, px, py)] = (sol, s)
    return out


def test_same_answer_on_1_2_3_ranks_and_process_grids(solutions):
    ref, s_ref = solutions[(1, 1, 1)]
    assert ref["rho"].shape == (14, 2, 47)
    for key, (sol, s) in solutions.items():
        for k in ("rho", "phi"):
            rel = np.abs(sol[k] - ref[k]).max() / np.abs(ref[k]).max()
            assert rel <= 1e-9, (key, k, rel)
        assert s["diagnostics"]["cost"]["total"] == pytest.approx(s_ref["diagnostics"]["cost"]["total"], rel=1e-9)
        assert s["newton_iterations_fine"] == s_ref["newton_iterations_fine"]


SCRIPT = r"""
import sys, numpy as np
import petsc4py; petsc4py.init([])
from petsc4py import PETSc
sys.path.insert(0, "tests")
from cases import two_class_config
from mfc_hpc.drivers.run import build_solver
from mfc_hpc.jobs.solve import shared_problem
from mfc_hpc.numerics.depth import serial_jacobian
grid = tuple(int(a) for a in sys.argv[1:])
cfg = two_class_config(M=11 if len(grid) == 2 else [7, 6], N=5, gamma=1.5, kappa=0.4)
cfg = cfg.replace(solver={"process_grid": grid})
ms = build_solver(shared_problem(cfg), verbose=False)
ms.uncontrolled_guess(); ms.solve()
ms.assemble_jacobian(ms.X, ms.J)
Z = ms.mesh.gather(ms.X, root=None)
ref = serial_jacobian(Z, ms.d, ms.bd).toarray()
# PETSc ordering -> natural ordering of the unknowns
nat = ms.mesh.natural_owned_indices()
perm = np.concatenate(PETSc.COMM_WORLD.tompi4py().allgather(nat))
A = ms.J.convert("dense")
from mpi4py import MPI
full = np.zeros(ref.shape)
rs, re = ms.J.getOwnershipRange()
rows = MPI.COMM_WORLD.allgather((perm[rs:re], A.getDenseArray().copy()))
for r, block in rows:  # natural row/column of every PETSc-ordered entry
    full[r[:, None], perm[None, :]] = block
err = np.abs(full - ref).max() / np.abs(ref).max()
if PETSc.COMM_WORLD.rank == 0:
    print("JACOBIAN_ERR", err)
assert err < 1e-13, err
"""


@pytest.mark.parametrize("n,grid", [(2, (2, 1)), (2, (1, 2)), (3, (3, 1)), (2, (2, 1, 1)), (3, (1, 1, 3)),
                                    (3, (1, 3, 1))])
def test_parallel_assembly_equals_serial_jacobian(tmp_path, n, grid):
    """The Jacobian assembled on 2 and 3 ranks (1-D and 2-D states, process grids that
    split each axis) equals the serial reference."""
    script = tmp_path / "jac.py"
    script.write_text(SCRIPT)
    p = run_mpi(n, [script, *grid])
    assert "JACOBIAN_ERR" in p.stdout


def test_finite_difference_colouring_option_reaches_the_same_solution(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(px=0, py=0).replace("nodes = 47", "nodes = 25").replace("layers = 13", "layers = 6"))
    sols = {}
    for name, extra in (("analytic", []), ("fd", ["-mfc_snes_fd_color"])):
        p = run_cli(2, ["solve", cfg, "--out", tmp_path / name, "--no-checkpoint"] + extra)
        if extra:  # the option was consumed (PETSc lists unused ones)
            assert "There are no unused options" in p.stdout + p.stderr
        with h5py.File(tmp_path / name / "solution.h5", "r") as f:
            sols[name] = f["rho"][()], f["phi"][()]
        assert json.loads((tmp_path / name / "summary.json").read_text())["converged"]
    for a, b in zip(sols["analytic"], sols["fd"]):
        assert np.abs(a - b).max() <= 1e-7 * np.abs(a).max()


def test_unused_petsc_option_is_reported(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(px=0, py=0).replace("nodes = 47", "nodes = 17").replace("layers = 13", "layers = 4"))
    p = run_cli(1, ["solve", cfg, "--out", tmp_path / "o", "--no-checkpoint", "-mfc_ksp_typ", "gmres"])
    assert "Option left: name:-mfc_ksp_typ value: gmres" in p.stdout + p.stderr
