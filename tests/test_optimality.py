"""The discrete training problem (METHOD.md 4): exact gradient by the adjoint of the
midpoint walk, the KKT state of a network, and the minimiser as a Newton seed."""
import numpy as np
import pytest

from mfc_hpc.optimality import (cost_and_gradient, forward_walk, kkt_state, minimise,
                                optimisation_guess, serial_newton, symmetric_partner,
                                tilts_from_solution, training_cost)
from mfc_hpc.problem import boundary_data, discretisation
from mfc_hpc.scheme import BoundaryData, Discretisation, RunningCost, node_weights, serial_residual
from test_solver import two_class_config


def two_class(M=33, N=8, gamma=2.0, nu=0.1, kappa=0.5):
    """The two-class problem of test_solver, small and with congestion (F != 0)."""
    return two_class_config(M=M, N=N, gamma=gamma, nu=nu, kappa=kappa)


@pytest.fixture(scope="module")
def small():
    """A small two-class problem with congestion (F != 0) and its Newton solution."""
    cfg = two_class()
    d, bd = discretisation(cfg), boundary_data(cfg)
    r = serial_newton(kkt_state(np.zeros((2, d.N, d.M - 1)), d, bd), d, bd)
    assert r["converged"]
    return cfg, d, bd, r["Z"]


def test_gradient_equals_finite_differences():
    rng = np.random.default_rng(1)
    K = 3
    d = Discretisation(K=K, M=12, N=5, x_min=-2.0, x_max=2.0, T=1.0, nu=0.1, eta=0.05,
                       running=RunningCost("congestion", 0.7))
    w = node_weights(d.h, d.M)
    rho0 = rng.uniform(0.1, 1.0, (K, d.M))
    rho0 /= K * (w * rho0).sum(axis=1, keepdims=True)
    bd = BoundaryData(rho0, rng.normal(size=(K, d.M)), scale=1.3)
    th = 0.5 * rng.normal(size=(2, d.N, d.M - 1))
    J, g = cost_and_gradient(th, d, bd)
    tr, tl = th
    assert J == pytest.approx(training_cost(forward_walk(rho0, tr, tl, d), tr, tl, d, bd)["total"], rel=1e-14)
    # every component by central differences
    e = 1e-5
    fd = np.empty_like(th)
    for idx in np.ndindex(th.shape):
        tp, tm = th.copy(), th.copy()
        tp[idx] += e
        tm[idx] -= e
        fd[idx] = (cost_and_gradient(tp, d, bd)[0] - cost_and_gradient(tm, d, bd)[0]) / (2 * e)
    assert np.abs(fd - g).max() <= 1e-6 * np.abs(g).max()
    # and along a random direction (flat input, flat gradient)
    v = rng.normal(size=th.shape)
    e = 1e-4
    dd = (cost_and_gradient((th + e * v).ravel(), d, bd)[0]
          - cost_and_gradient((th - e * v).ravel(), d, bd)[0]) / (2 * e)
    Jf, gf = cost_and_gradient(th.ravel(), d, bd)
    assert gf.shape == (th.size,)
    assert dd == pytest.approx(float(gf @ v.ravel()), rel=1e-6)


def test_kkt_state_of_newton_solution_is_the_solution(small):
    cfg, d, bd, Z = small
    th = np.stack(tilts_from_solution(Z, d))
    Z2 = kkt_state(th, d, bd)
    assert np.abs(Z2 - Z).max() <= 1e-12 * np.abs(Z).max()
    # the solution is a stationary point of J_h: the gradient vanishes
    J, g = cost_and_gradient(th, d, bd)
    assert np.abs(g).max() <= 1e-12 * d.dt * d.nu / d.h


def test_kkt_state_of_any_network_solves_the_adjoint_rows_and_mass():
    """For any network, ``phi`` of :func:`kkt_state` satisfies ``phi^N = -s G`` and the
    densities conserve mass; the residual of the scheme is zero only at a stationary point."""
    cfg = two_class(M=17, N=4)
    d, bd = discretisation(cfg), boundary_data(cfg)
    th = 0.3 * np.random.default_rng(3).normal(size=(2, d.N, d.M - 1))
    Z = kkt_state(th, d, bd)
    assert np.allclose(Z[-1, :, 2:], -bd.G.T, rtol=0, atol=1e-14)
    w = node_weights(d.h, d.M)
    mass = np.einsum("i,nic->nc", w, Z[..., :2])
    assert np.abs(mass - 0.5).max() < 1e-13
    assert np.linalg.norm(serial_residual(Z, d, bd)) > 1e-6


def test_minimiser_seeds_newton_with_the_same_cost(small):
    cfg, d, bd, Zn = small
    zero = cost_and_gradient(np.zeros((2, d.N, d.M - 1)), d, bd)[0]
    m = minimise(d, bd, gtol=1e-9)
    assert m["cost"]["total"] < zero - 0.1
    assert m["history"][0] == pytest.approx(zero) and m["history"][-1] <= m["history"][0]
    assert np.all(np.diff(m["history"]) <= 1e-14)
    Z = kkt_state(m["theta"], d, bd)
    r = serial_newton(Z, d, bd)
    assert r["converged"] and r["iterations"] <= 3
    tr, tl = tilts_from_solution(r["Z"], d)
    Jn = training_cost(forward_walk(bd.rho0, tr, tl, d), tr, tl, d, bd)["total"]
    assert Jn == pytest.approx(m["cost"]["total"], rel=1e-9)
    assert Jn < zero
    # this small problem has a single solution: the continuation's one
    assert np.abs(r["Z"] - Zn).max() < 1e-8 * np.abs(Zn).max()


def test_optimisation_guess_from_config_and_mirror_symmetry():
    cfg = two_class(M=33, N=8, gamma=3.0, nu=0.05, kappa=0.0)
    d, bd = discretisation(cfg), boundary_data(cfg)
    Z = optimisation_guess(cfg)
    assert Z.shape == (d.N + 1, d.M, 4)
    r = serial_newton(Z, d, bd)
    assert r["converged"] and r["iterations"] <= 4
    # the problem is symmetric under x -> -x with the classes swapped: the mirrored
    # network costs the same
    th = np.stack(tilts_from_solution(r["Z"], d))
    assert cost_and_gradient(symmetric_partner(th, d), d, bd)[0] == \
        pytest.approx(cost_and_gradient(th, d, bd)[0], rel=1e-12)
