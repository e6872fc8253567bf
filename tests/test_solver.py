"""The PETSc solver on one rank (in process): closed form, refinement orders, mass,
Hamiltonian, local optimality, assembled Jacobian, continuation."""
import numpy as np
import pytest

from cases import closed_form_config, solve_case, two_class_config
from mfc_hpc.drivers.run import build_solver
from mfc_hpc.numerics.closed_form import ClosedForm, closed_form_errors
from mfc_hpc.numerics.depth import serial_jacobian
from mfc_hpc.numerics.grid import BoxGeometry
from mfc_hpc.numerics.quantities import hamiltonian
from mfc_hpc.numerics.training import TiltLayout, forward_walk, tilts_from_solution, training_cost
from mfc_hpc.problem.build import build_problem
from cases import ALPHA, MU0, NU, S0, T, TARGET


def errors(M, N):
    cfg = closed_form_config(M, N)
    ms, summary, Z = solve_case(cfg)
    assert summary["converged"]
    e = closed_form_errors(Z, ms.d, ClosedForm(NU, ALPHA, T, (TARGET,), (MU0,), (S0,)))
    ms.destroy()
    return e["density_L1"], e["velocity_L2_rho"], summary


def test_closed_form_second_order_in_density_and_velocity():
    meshes = [(65, 16), (129, 32), (257, 64)]
    res = [errors(M, N) for M, N in meshes]
    e_rho = np.array([r[0] for r in res])
    e_u = np.array([r[1] for r in res])
    order_rho = np.log2(e_rho[:-1] / e_rho[1:])
    order_u = np.log2(e_u[:-1] / e_u[1:])
    assert e_rho[-1] < 5e-4
    assert np.all(order_rho >= 1.8), order_rho
    assert np.all(order_u >= 1.8), order_u
    for _, _, s in res:
        assert s["diagnostics"]["mass_error_max"] < 1e-12


def test_mass_exact_and_hamiltonian_drift_second_order_in_dt():
    devs = []
    for N in (8, 16, 32):
        ms, s, Z = solve_case(closed_form_config(129, N))
        mass = np.array(s["diagnostics"]["mass"])
        assert np.abs(mass - 1.0).max() < 1e-12
        devs.append(s["diagnostics"]["hamiltonian_dev_first"])
        # cross-check the distributed Hamiltonian with the serial kernel
        geom = BoxGeometry(ms.d.grid, (0,), ms.d.grid.nodes)
        H = hamiltonian(Z[:, None, :, 0], Z[:, None, :, 1], geom, ms.d)
        assert np.allclose(H, s["diagnostics"]["hamiltonian"], rtol=1e-12, atol=1e-14)
        ms.destroy()
    devs = np.array(devs)
    order = np.log2(devs[:-1] / devs[1:])
    assert np.all(order > 1.8), (devs, order)


def test_two_class_mass_exact_at_every_level_and_positive():
    ms, s, _ = solve_case(two_class_config(gamma=2.0, kappa=0.5))
    assert s["converged"]
    mass = np.array(s["diagnostics"]["mass"])
    assert mass.shape == (17, 2)
    assert np.abs(mass - 0.5).max() / 1.0 < 1e-12
    assert s["diagnostics"]["min_density"] > 0
    ms.destroy()


def test_assembled_jacobian_equals_serial_reference():
    cfg = two_class_config(M=17, N=4, gamma=1.5, kappa=0.3)
    ms = build_solver(build_problem(cfg), verbose=False)
    ms.uncontrolled_guess()
    ms.solve()
    ms.assemble_jacobian(ms.X, ms.J)
    info = ms.matrix_info()
    assert info["allocated_per_row"] == pytest.approx(info["set_per_row"])  # exactly the pattern
    Z = ms.mesh.gather(ms.X, root=None)
    ref = serial_jacobian(Z, ms.d, ms.bd).toarray()
    # PETSc's DMDA ordering equals the natural one on a single rank
    A = ms.J.convert("dense").getDenseArray()  # (in place)
    assert np.abs(A - ref).max() <= 1e-13 * np.abs(ref).max()
    ms.destroy()


def test_converged_solution_is_local_optimum_of_discrete_training_problem():
    cfg = two_class_config(M=41, N=10, gamma=2.0, kappa=0.5)
    ms, s, Z = solve_case(cfg)
    assert s["converged"]
    d, bd = ms.d, ms.bd
    th = tilts_from_solution(Z, d)
    rho = forward_walk(bd.rho0, th, d)
    # the optimal layers move the density exactly as the solver's density
    assert np.abs(rho - np.moveaxis(Z[..., :2], -1, 1)).max() < 1e-10
    J0 = training_cost(rho, th, d, bd)
    assert J0["total"] == pytest.approx(s["diagnostics"]["cost"]["total"], rel=1e-10)
    rng = np.random.default_rng(7)
    dth = rng.normal(size=th.shape)
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    rise = []
    for e in eps:
        r = forward_walk(bd.rho0, th + e * dth, d)
        rise.append(training_cost(r, th + e * dth, d, bd)["total"] - J0["total"])
    rise = np.array(rise)
    assert np.all(rise > 0)  # a minimum, not a saddle, along this direction
    slopes = np.log(rise[:-1] / rise[1:]) / np.log(eps[:-1] / eps[1:])
    assert np.all(np.abs(slopes - 2.0) < 0.15), slopes
    assert TiltLayout(d).natural == th.shape
    ms.destroy()


def test_cost_below_zero_network():
    ms, s, _ = solve_case(two_class_config(gamma=2.0))
    assert s["converged"]
    c = s["diagnostics"]["cost"]
    assert c["kinetic"] > 0 and c["terminal"] < s["zero_network_cost"]["terminal"]
    assert c["total"] < s["zero_network_cost"]["total"]
    ms.destroy()


def test_destroy_frees_the_assembly_plan():
    """A destroyed solver that is still referenced (the benchmark's loop variable while the
    next solver is built, a driver's closure) must not keep the plan's index arrays, or a
    second solve in the same process peaks with both plans."""
    import weakref

    ms = build_solver(build_problem(closed_form_config(33, 8)), verbose=False)
    ms.iteration_hook = lambda its, f, h, first: ms.snes.getLinearSolveIterations()
    ms.uncontrolled_guess()
    assert ms.solve().converged
    plan = weakref.ref(ms.pattern)
    ms.destroy()
    assert plan() is None and ms.iteration_hook is None
