"""The linear solver of the Newton steps: the size-based choice (solver.linear = "auto"),
multigrid against the direct solver, the fall-back to LU, and the stall guard."""
import json

import numpy as np
import pytest

from cases import closed_form_config, solve_case, two_class_config
from mfc_hpc.config import ConfigError
from mfc_hpc.drivers.run import build_solver
from mfc_hpc.parallel.linear import MULTIGRID_FROM, choose_linear, multigrid_levels
from mfc_hpc.problem.build import build_problem


def discretisation(cfg):
    return build_problem(cfg).d


def test_multigrid_levels_of_a_mesh():
    assert multigrid_levels(129, 32) == 4  # 128/8 = 16 nodes, 32/8 = 4 layers
    assert multigrid_levels(1409, 352) == 4
    assert multigrid_levels(65, 12) == 3  # 12 = 4 x 3: two halvings only
    assert multigrid_levels(47, 14) == 2
    assert multigrid_levels(9, 8) == 2  # the coarsest mesh keeps >= 5 nodes
    assert multigrid_levels(129, 32, most=2) == 2
    assert multigrid_levels((129, 65), 32) == 4 and multigrid_levels((129, 17), 32) == 3


def test_auto_choice_by_size_classes_and_mesh():
    def choice(M, N, K=1, linear="auto"):
        cfg = closed_form_config(M, N) if K == 1 else two_class_config(M, N)
        return choose_linear(discretisation(cfg), linear)

    assert choice(129, 32) == "direct"  # 8.5e3 unknowns
    big = (705, 176)  # 2.5e5 unknowns >= MULTIGRID_FROM[(1, 1)]
    assert 2 * big[0] * (big[1] + 1) >= MULTIGRID_FROM[(1, 1)]
    assert choice(*big) == "multigrid"
    assert choice(*big, K=2) == "multigrid"  # several classes in 1-D: the same threshold
    assert choice(257, 64, K=2) == "direct"  # 6.7e4 unknowns
    assert choice(707, 176) == "direct"  # 706 = 2 x 353: the mesh does not coarsen 3 times
    assert choice(129, 32, linear="multigrid") == "multigrid"
    assert choice(*big, linear="direct") == "direct"
    # 2-D (a 3-D depth-time mesh): multigrid from 1e4 unknowns, one class or several
    assert choice((17, 17), 8, K=2) == "multigrid"  # 10404 unknowns, 3 levels
    assert choice((9, 9), 4, K=2) == "direct"  # 1620 unknowns
    assert choice((33, 33), 16) == "multigrid" and choice((33, 33), 14) == "direct"  # 14: 2 levels only
    with pytest.raises(ValueError, match="solver.linear"):
        choice(129, 32, linear="lu")
    with pytest.raises(ConfigError, match="solver.linear"):
        closed_form_config(129, 32, linear="lu")


def test_multigrid_solution_equals_direct_solution():
    cfg_mg = closed_form_config(129, 32, linear="multigrid")
    ms, s, Z_mg = solve_case(cfg_mg)
    assert s["converged"] and s["linear_solver"] == "multigrid"
    ms.destroy()
    ms, s, Z_lu = solve_case(closed_form_config(129, 32, linear="direct"))
    assert s["converged"] and s["linear_solver"] == "direct"
    ms.destroy()
    assert np.abs(Z_mg - Z_lu).max() <= 1e-8 * np.abs(Z_lu).max()


def test_multigrid_two_ranks_split_along_depth_and_fall_back(cli, tmp_path):
    """On 2 ranks multigrid splits the ranks along depth and matches the direct solution;
    a multigrid that cannot converge (-mfc_ksp_max_it 1) falls back to LU and still
    converges to the same solution."""
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[mesh]\nx_min = -3.0\nx_max = 3.0\nnodes = 129\nlayers = 32\n'
        '[model]\nnu = 0.1\neta = 0.0\n[[classes]]\nprior = 1.0\nmean = -0.5\nvar = 0.25\n'
        '[loss]\nkind = "quadratic"\nalpha = 1.0\ntarget = 0.5\n[solver]\nlinear = "multigrid"\n')
    cli(2, ["solve", toml, "--out", tmp_path / "mg", "--no-checkpoint"])
    s = json.loads((tmp_path / "mg" / "summary.json").read_text())
    assert s["converged"] and s["linear_solver"] == "multigrid" and s["process_grid"] == [1, 2]
    p = cli(2, ["solve", toml, "--out", tmp_path / "fb", "--no-checkpoint", "-mfc_ksp_max_it", "1"])
    assert "switching to the direct solver" in p.stdout + p.stderr
    f = json.loads((tmp_path / "fb" / "summary.json").read_text())
    assert f["converged"] and f["linear_solver"] == "direct"
    assert f["diagnostics"]["cost"]["total"] == pytest.approx(s["diagnostics"]["cost"]["total"], rel=1e-9)


def test_newton_that_stops_reducing_the_residual_is_cut_short():
    """Direct Newton from the uncontrolled flow on a hard case (two classes, gamma 5,
    nu 0.02) makes no progress; the stall guard ends it long before max_it."""
    cfg = two_class_config(M=65, N=16, gamma=5.0, nu=0.02, continuation="never", max_it=30)
    ms = build_solver(build_problem(cfg), verbose=False)
    ms.uncontrolled_guess()
    r = ms.solve()
    ms.destroy()
    if r.converged:  # pragma: no cover - the case is chosen so that it does not
        pytest.fail("the stall case converged: choose a harder one")
    assert r.reason == "stalled", r.reason
    assert r.iterations < 30
    h = r.residuals
    w = ms.settings.stall_window
    assert h[-1] >= 0.999 * h[-1 - w]


@pytest.mark.parametrize("M,N", [(65, 16), ((17, 17), 8)])
def test_multigrid_for_two_classes_equals_direct_solution(M, N):
    """Two classes (the shared control couples them) in 1-D and 2-D: the multigrid linear
    solver (GMRES(4)/ILU(0) smoothing of all 2K fields together, Galerkin coarse operators)
    reaches the direct solver's solution with as many Newton steps."""
    sols, its = {}, {}
    for linear in ("multigrid", "direct"):
        ms, s, Z = solve_case(two_class_config(M, N, linear=linear))
        assert s["converged"] and s["linear_solver"] == linear
        sols[linear], its[linear] = Z, s["newton_iterations_fine"]
        ms.destroy()
    assert its["multigrid"] == its["direct"]
    assert np.abs(sols["multigrid"] - sols["direct"]).max() <= 1e-8 * np.abs(sols["direct"]).max()


def test_rediscretised_coarse_operators_reach_the_same_solution():
    """``-mfc_mg_coarse_operators rediscretised``: the coarse levels are the scheme's own
    Jacobian on the coarser meshes at the injected iterate (no Galerkin products); the
    multigrid then converges to the same solution as the direct solver, with the same
    Newton steps; an unknown value is a one-line error."""
    from petsc4py import PETSc

    from mfc_hpc.errors import BadInput

    ms, s, Z_lu = solve_case(two_class_config((17, 17), 8, linear="direct"))
    ms.destroy()
    opts = PETSc.Options()
    opts.setValue("mfc_mg_coarse_operators", "rediscretised")
    try:
        problem = build_problem(two_class_config((17, 17), 8, linear="multigrid"))
        ms = build_solver(problem, verbose=False)
        ms.uncontrolled_guess()
        r = ms.solve()
        assert r.converged and r.iterations == s["newton_iterations_fine"]
        assert sorted(k[:2] for k in ms._coarse.levels) == [((5, 5), 2), ((9, 9), 4)]  # 3 levels
        Z = ms.mesh.gather(ms.X, root=None)
        ms.destroy()
        assert np.abs(Z - Z_lu).max() <= 1e-8 * np.abs(Z_lu).max()
        opts.setValue("mfc_mg_coarse_operators", "petrov")
        with pytest.raises(BadInput, match="mg_coarse_operators: expected galerkin or rediscretised"):
            build_solver(problem, verbose=False)
    finally:
        opts.delValue("mfc_mg_coarse_operators")
