"""The discrete training problem (METHOD.md 4): exact gradient by the adjoint of the
midpoint walk, the KKT state of a network, and the minimiser as a Newton seed."""
import json

import numpy as np
import pytest

from cases import two_class_config
from conftest import REPO, run_cli
from mfc_hpc.config import load_config
from mfc_hpc.drivers.optimisation import zero_network_walk
from mfc_hpc.drivers.run import zero_network_cost, zero_network_cost_mesh
from mfc_hpc.numerics.depth import serial_residual
from mfc_hpc.numerics.grid import StateGrid, axis_weights
from mfc_hpc.numerics.model import Discretisation, RunningCost
from mfc_hpc.numerics.reference import reference_newton
from mfc_hpc.numerics.terminal import BoundaryData
from mfc_hpc.numerics.training import (cost_and_gradient, forward_walk, kkt_state, minimise, symmetric_partner,
                                       tilts_from_solution, training_cost)
from mfc_hpc.problem.build import build_problem


def discretisation(cfg):
    return build_problem(cfg).d


def boundary_data(cfg):
    return build_problem(cfg).bd


def serial_newton(Z, d, bd):
    """The reference Newton as the earlier ``serial_newton`` ran it: no backtracking,
    ``|F| <= max(1e-10 |F(Z0)|, 1e-13)``."""
    r = reference_newton(d, bd, Z, rtol=1e-10, atol=1e-13 / (np.linalg.norm(serial_residual(np.zeros_like(Z), d, bd))
                                                           or 1.0), max_it=50, backtrack=False)
    return {"Z": r.Z, "converged": r.converged, "iterations": r.iterations, "history": r.history}


def optimisation_guess(cfg, gtol=1e-6, maxiter=3000):
    p = build_problem(cfg)
    r = minimise(p.d, p.bd, gtol=gtol, maxiter=maxiter)
    return kkt_state(r["theta"], p.d, p.bd)


def two_class(M=33, N=8, gamma=2.0, nu=0.1, kappa=0.5):
    """The two-class problem of test_solver, small and with congestion (F != 0)."""
    return two_class_config(M=M, N=N, gamma=gamma, nu=nu, kappa=kappa)


@pytest.fixture(scope="module")
def small():
    """A small two-class problem with congestion (F != 0) and its Newton solution."""
    cfg = two_class()
    d, bd = discretisation(cfg), boundary_data(cfg)
    r = serial_newton(kkt_state(np.zeros((2, d.N, d.grid.nodes[0] - 1)), d, bd), d, bd)
    assert r["converged"]
    return cfg, d, bd, r["Z"]


def test_gradient_equals_finite_differences():
    rng = np.random.default_rng(1)
    K = 3
    d = Discretisation(grid=StateGrid.line(-2.0, 2.0, 12), K=K, N=5, T=1.0, nu=0.1, eta=0.05,
                       running=RunningCost("congestion", 0.7))
    M = 12
    w = axis_weights(d.grid.h[0], M)
    rho0 = rng.uniform(0.1, 1.0, (K, M))
    rho0 /= K * (w * rho0).sum(axis=1, keepdims=True)
    bd = BoundaryData(rho0, rng.normal(size=(K, M)), scale=1.3)
    th = 0.5 * rng.normal(size=(2, d.N, M - 1))
    J, g = cost_and_gradient(th, d, bd)
    assert J == pytest.approx(training_cost(forward_walk(rho0, th, d), th, d, bd)["total"], rel=1e-14)
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
    th = tilts_from_solution(Z, d)
    Z2 = kkt_state(th, d, bd)
    assert np.abs(Z2 - Z).max() <= 1e-12 * np.abs(Z).max()
    # the solution is a stationary point of J_h: the gradient vanishes
    J, g = cost_and_gradient(th, d, bd)
    assert np.abs(g).max() <= 1e-12 * d.dt * d.nu / d.grid.h[0]


def test_kkt_state_of_any_network_solves_the_adjoint_rows_and_mass():
    """For any network, ``phi`` of :func:`kkt_state` satisfies ``phi^N = -s G`` and the
    densities conserve mass; the residual of the scheme is zero only at a stationary point."""
    cfg = two_class(M=17, N=4)
    d, bd = discretisation(cfg), boundary_data(cfg)
    th = 0.3 * np.random.default_rng(3).normal(size=(2, d.N, d.grid.nodes[0] - 1))
    Z = kkt_state(th, d, bd)
    assert np.allclose(Z[-1, :, 2:], -bd.G.T, rtol=0, atol=1e-14)
    w = axis_weights(d.grid.h[0], d.grid.nodes[0])
    mass = np.einsum("i,nic->nc", w, Z[..., :2])
    assert np.abs(mass - 0.5).max() < 1e-13
    assert np.linalg.norm(serial_residual(Z, d, bd)) > 1e-6


def test_minimiser_seeds_newton_with_the_same_cost(small):
    cfg, d, bd, Zn = small
    zero = cost_and_gradient(np.zeros((2, d.N, d.grid.nodes[0] - 1)), d, bd)[0]
    m = minimise(d, bd, gtol=1e-9)
    assert m["cost"]["total"] < zero - 0.1
    assert m["history"][0] == pytest.approx(zero) and m["history"][-1] <= m["history"][0]
    assert np.all(np.diff(m["history"]) <= 1e-14)
    Z = kkt_state(m["theta"], d, bd)
    r = serial_newton(Z, d, bd)
    assert r["converged"] and r["iterations"] <= 3
    th = tilts_from_solution(r["Z"], d)
    Jn = training_cost(forward_walk(bd.rho0, th, d), th, d, bd)["total"]
    assert Jn == pytest.approx(m["cost"]["total"], rel=1e-9)
    assert Jn < zero
    # this small problem has a single solution: the continuation's one
    assert np.abs(r["Z"] - Zn).max() < 1e-8 * np.abs(Zn).max()


def test_optimisation_guess_from_config_and_mirror_symmetry():
    cfg = two_class(M=33, N=8, gamma=3.0, nu=0.05, kappa=0.0)
    d, bd = discretisation(cfg), boundary_data(cfg)
    Z = optimisation_guess(cfg)
    assert Z.shape == (d.N + 1, d.grid.nodes[0], 4)
    r = serial_newton(Z, d, bd)
    assert r["converged"] and r["iterations"] <= 4
    # the problem is symmetric under x -> -x with the classes swapped: the mirrored
    # network costs the same
    th = tilts_from_solution(r["Z"], d)
    assert cost_and_gradient(symmetric_partner(th, d), d, bd)[0] == \
        pytest.approx(cost_and_gradient(th, d, bd)[0], rel=1e-12)


def _same_cost(new: dict, old: dict, rtol: float = 1e-10) -> None:
    assert set(new) == set(old) == {"kinetic", "running", "terminal", "total"}
    for k in old:
        assert new[k] == pytest.approx(old[k], rel=rtol, abs=rtol * abs(old["total"])), k
    assert new["total"] == new["kinetic"] + new["running"] + new["terminal"]


@pytest.mark.parametrize("case", ["two_class", "closed_form"])
def test_zero_network_cost_by_the_walk_equals_the_mesh_path(case):
    """``J_h`` of the zero network (theta = 0) by the serial midpoint walk equals the
    uncontrolled flow on the mesh evaluated by ``diagnostics`` (one rank): two classes
    with congestion and ``eta > 0``; one class, quadratic loss, ``eta = 0``."""
    if case == "two_class":
        cfg = two_class()
    else:
        cfg = load_config(REPO / "mfc_hpc" / "examples" / "closed_form.toml").replace(
            mesh={"nodes": 65, "layers": 16})
    p = build_problem(cfg)
    old = zero_network_cost_mesh(p)
    new = zero_network_cost(p)
    _same_cost(new, old)
    assert old["kinetic"] == 0.0 and old["terminal"] != 0.0
    if case == "two_class":
        assert old["running"] > 0.0  # the congestion cost is compared too
    # layer blocks of the walk (3 layers at a time here) give the same sums
    _same_cost(zero_network_walk(p.d, p.bd, block=3 * p.K * p.grid.size), old, rtol=1e-13)


# two classes with congestion, as two_class() above (TOML inline tables)
TWO_CLASS_CONGESTION = (
    'mesh = {x_min = -4.0, x_max = 4.0, nodes = 33, layers = 8}\n'
    'model = {nu = 0.1, eta = 0.1, running = "congestion", kappa = 0.5}\n'
    'classes = [{prior = 0.5, mean = -0.5, var = 0.09}, {prior = 0.5, mean = 0.5, var = 0.09}]\n'
    'loss = {kind = "softmax", weights = [-1.0, 1.0], gamma = 2.0}\n')


@pytest.mark.mpi
def test_zero_network_cost_in_summary_on_two_ranks(tmp_path):
    """``mfc-hpc solve`` on 2 ranks writes the same zero-network cost as the mesh path."""
    cfg = tmp_path / "two_class.toml"
    cfg.write_text(TWO_CLASS_CONGESTION)
    run_cli(2, ["solve", cfg, "--out", tmp_path / "out", "--no-checkpoint"])
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["converged"] and s["ranks"] == 2
    _same_cost(s["zero_network_cost"], zero_network_cost_mesh(build_problem(load_config(cfg))))
