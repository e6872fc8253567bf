"""The PETSc solver on one rank (in process): closed form, refinement orders, mass,
Hamiltonian, local optimality, assembled Jacobian, continuation."""
import numpy as np
import pytest

from mfc_hpc.config import config_from_dict
from mfc_hpc.problem import boundary_data, discretisation
from mfc_hpc.run import build_solver, solve_config
from mfc_hpc.closed_form import ClosedForm, closed_form_errors
from mfc_hpc.scheme import hamiltonian, node_weights, serial_jacobian
from mfc_hpc.optimality import forward_walk, tilts_from_solution, training_cost

NU, ALPHA, TARGET, MU0, S0, T = 0.1, 1.0, 0.5, -0.5, 0.25, 1.0


def closed_form_config(M, N, **solver):
    return config_from_dict({
        "mesh": {"x_min": -3.0, "x_max": 3.0, "nodes": M, "layers": N, "depth": T},
        "model": {"nu": NU, "eta": 0.0},
        "classes": [{"prior": 1.0, "mean": MU0, "var": S0}],
        "loss": {"kind": "quadratic", "alpha": ALPHA, "target": TARGET},
        "solver": solver,
    })


def two_class_config(M=65, N=16, gamma=1.0, nu=0.1, kappa=0.0, **solver):
    model = {"nu": nu, "eta": 0.1}
    if kappa:
        model.update(running="congestion", kappa=kappa)
    return config_from_dict({
        "mesh": {"x_min": -4.0, "x_max": 4.0, "nodes": M, "layers": N, "depth": 1.0},
        "model": model,
        "classes": [{"prior": 0.5, "mean": -0.5, "var": 0.09}, {"prior": 0.5, "mean": 0.5, "var": 0.09}],
        "loss": {"kind": "softmax", "weights": [-1.0, 1.0], "biases": [0.0, 0.0], "gamma": gamma},
        "solver": solver,
    })


def errors(M, N):
    cfg = closed_form_config(M, N)
    ms, summary = solve_config(cfg)
    assert summary["converged"]
    e = closed_form_errors(ms.state(), ms.d, ClosedForm(cfg))
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
        ms, s = solve_config(closed_form_config(129, N))
        mass = np.array(s["diagnostics"]["mass"])
        assert np.abs(mass - 1.0).max() < 1e-12
        devs.append(s["diagnostics"]["hamiltonian_dev_first"])
        # cross-check the distributed Hamiltonian with the serial kernel
        Z = ms.state()
        H = hamiltonian(Z[:, None, :, 0], Z[:, None, :, 1], node_weights(ms.d.h, ms.d.M), ms.d)
        assert np.allclose(H, s["diagnostics"]["hamiltonian"], rtol=1e-12, atol=1e-14)
        ms.destroy()
    devs = np.array(devs)
    order = np.log2(devs[:-1] / devs[1:])
    assert np.all(order > 1.8), (devs, order)


def test_two_class_mass_exact_at_every_level_and_positive():
    ms, s = solve_config(two_class_config(gamma=2.0, kappa=0.5))
    assert s["converged"]
    mass = np.array(s["diagnostics"]["mass"])
    assert mass.shape == (17, 2)
    assert np.abs(mass - 0.5).max() / 1.0 < 1e-12
    assert s["diagnostics"]["min_density"] > 0
    ms.destroy()


def test_assembled_jacobian_equals_serial_reference():
    cfg = two_class_config(M=17, N=4, gamma=1.5, kappa=0.3)
    ms = build_solver(cfg)
    ms.uncontrolled_guess()
    ms.solve()
    ms.assemble_jacobian(ms.X, ms.J)
    Z = ms.state()
    ref = serial_jacobian(Z, ms.d, ms.bd).toarray()
    # PETSc's DMDA ordering equals the natural one on a single rank
    A = ms.J.convert("dense").getDenseArray()
    assert np.abs(A - ref).max() <= 1e-13 * np.abs(ref).max()
    ms.destroy()


def test_converged_solution_is_local_optimum_of_discrete_training_problem():
    cfg = two_class_config(M=41, N=10, gamma=2.0, kappa=0.5)
    ms, s = solve_config(cfg)
    assert s["converged"]
    d, bd, Z = ms.d, ms.bd, ms.state()
    tr, tl = tilts_from_solution(Z, d)
    rho = forward_walk(bd.rho0, tr, tl, d)
    # the optimal layers move the density exactly as the solver's density
    assert np.abs(rho - np.moveaxis(Z[..., :2], 2, 1)).max() < 1e-10
    J0 = training_cost(rho, tr, tl, d, bd)
    assert J0["total"] == pytest.approx(s["diagnostics"]["cost"]["total"], rel=1e-10)
    rng = np.random.default_rng(7)
    dr, dl = rng.normal(size=tr.shape), rng.normal(size=tl.shape)
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    rise = []
    for e in eps:
        r = forward_walk(bd.rho0, tr + e * dr, tl + e * dl, d)
        rise.append(training_cost(r, tr + e * dr, tl + e * dl, d, bd)["total"] - J0["total"])
    rise = np.array(rise)
    assert np.all(rise > 0)  # a minimum, not a saddle, along this direction
    slopes = np.log(rise[:-1] / rise[1:]) / np.log(eps[:-1] / eps[1:])
    assert np.all(np.abs(slopes - 2.0) < 0.15), slopes
    ms.destroy()


def test_cost_below_zero_network():
    ms, s = solve_config(two_class_config(gamma=2.0))
    assert s["converged"]
    c = s["diagnostics"]["cost"]
    assert c["kinetic"] > 0 and c["terminal"] < s["zero_network_cost"]["terminal"]
    assert c["total"] < s["zero_network_cost"]["total"]
    ms.destroy()


def test_sweep_accuracy_of_extracted_network_beats_head_alone():
    from mfc_hpc.network import classification_report
    from mfc_hpc.training import head_of, sample_density, sweep_accuracy

    # a biased head puts its threshold off the Bayes point 0 of the equal-prior classes;
    # the (monotone) network can only help by moving the threshold's preimage back
    cfg = two_class_config(M=65, N=16, gamma=3.0).replace(loss={"biases": (0.0, 0.6)})
    ms, s = solve_config(cfg)
    Z = ms.state()
    acc = sweep_accuracy(cfg, Z, samples=4000, seed=3)
    rng = np.random.default_rng(3)  # the same samples, read by the head without a network
    x = np.concatenate([sample_density(ms.d.x, Z[0, :, c], 4000, rng) for c in range(2)])
    y = np.repeat([0, 1], 4000)
    head_only = classification_report(head_of(cfg), x, y)["accuracy"]
    assert 0.5 < head_only < acc <= 1.0
    assert sweep_accuracy(closed_form_config(33, 8), np.zeros((9, 33, 2))) is None
    ms.destroy()
