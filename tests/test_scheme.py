"""Pure kernels of the scheme: exact Jacobian, conservation, limits (no PETSc)."""
import numpy as np
import pytest

from mfc_hpc.scheme import (BoundaryData, Discretisation, RunningCost, drift, edge_terms,
                            hamiltonian, node_weights, serial_jacobian, serial_residual,
                            vector_field)


def random_problem(K, eta, kappa, scheme="midpoint", M=7, N=4, seed=0):
    rng = np.random.default_rng(seed)
    d = Discretisation(K=K, M=M, N=N, x_min=-1.0, x_max=1.5, T=0.7, nu=0.3, eta=eta,
                       running=RunningCost("congestion" if kappa else "none", kappa), scheme=scheme)
    Z = np.empty((N + 1, M, 2 * K))
    Z[..., :K] = rng.uniform(0.05, 1.0, (N + 1, M, K))
    Z[..., K:] = 0.5 * rng.normal(size=(N + 1, M, K))
    bd = BoundaryData(rng.uniform(0.1, 1.0, (K, M)), rng.normal(size=(K, M)))
    return d, Z, bd


def fd_jacobian(Z, d, bd, eps=1e-6):
    z = Z.ravel()
    cols = []
    for j in range(z.size):
        zp, zm = z.copy(), z.copy()
        zp[j] += eps
        zm[j] -= eps
        cols.append((serial_residual(zp.reshape(Z.shape), d, bd).ravel()
                     - serial_residual(zm.reshape(Z.shape), d, bd).ravel()) / (2 * eps))
    return np.array(cols).T


@pytest.mark.parametrize("K,eta,kappa,scheme", [
    (1, 0.0, 0.0, "midpoint"),   # one class, eta = 0 (no division by R)
    (2, 0.1, 0.7, "midpoint"),   # multi-class with running cost F != 0
    (3, 0.05, 0.3, "midpoint"),
    (3, 0.05, 0.3, "euler"),
    (1, 0.2, 0.5, "midpoint"),
])
def test_analytic_jacobian_equals_finite_differences(K, eta, kappa, scheme):
    d, Z, bd = random_problem(K, eta, kappa, scheme, seed=K)
    J = serial_jacobian(Z, d, bd).toarray()
    Jfd = fd_jacobian(Z, d, bd)
    rel = np.abs(J - Jfd).max() / np.abs(J).max()
    assert rel <= 1e-6, rel
    # the pattern is the box stencil: no coupling beyond one level and one node
    assert J.shape == ((d.N + 1) * d.M * 2 * K,) * 2


def test_walk_conserves_mass_per_class_and_is_diffusion_without_control():
    d, Z, bd = random_problem(3, 0.1, 0.4)
    rho = np.moveaxis(Z[..., :3], 2, 1)
    phi = np.moveaxis(Z[..., 3:], 2, 1)
    w = node_weights(d.h, d.M)
    g_phi, _ = vector_field(rho, phi, w, d)
    assert np.abs(g_phi.sum(axis=-1)).max() < 1e-13  # inflow - outflow sums to zero
    # flat adjoint: E = 1, plain walk (nu/h)(rho_{i+1} - 2 rho_i + rho_{i-1}) inside
    g0, grho0 = vector_field(rho, np.zeros_like(phi), w, d.__class__(**{**d.__dict__, "running": RunningCost()}))
    lap = d.nu / d.h * (rho[..., 2:] - 2 * rho[..., 1:-1] + rho[..., :-2])
    assert np.allclose(g0[..., 1:-1], lap, atol=1e-14)
    assert np.abs(grho0).max() == 0.0
    assert np.abs(drift(rho, np.zeros_like(phi), d)).max() == 0.0


def test_tilts_bounded_in_vacuum_and_one_class_uses_adjoint_differences():
    d = Discretisation(K=1, M=9, N=2, x_min=0, x_max=1, T=1, nu=0.1, eta=0.0)
    rho = np.full((1, 1, 9), 1e-300)
    phi = np.linspace(0, 1, 9)[None, None, :] ** 2
    e = edge_terms(rho, phi, d)
    # one class, eta = 0: A/R = phi_j - phi_i exactly, whatever the density
    assert np.array_equal(e.Pr, np.diff(phi[0], axis=-1))
    assert np.all(np.isfinite(e.Er)) and np.all(np.isfinite(e.El))


def test_hamiltonian_is_sum_of_edge_terms_for_small_tilts():
    # H_h -> int rho u^2/2 - nu d_x rho d_x phi as h -> 0 (quadratic limit of 2nu(E-1))
    M = 2001
    d = Discretisation(K=1, M=M, N=1, x_min=-6, x_max=6, T=1, nu=0.2, eta=0.0)
    x = d.x
    rho = np.exp(-x ** 2 / 2)[None, None] / np.sqrt(2 * np.pi)
    phi = (0.3 * x)[None, None]
    H = hamiltonian(rho, phi, node_weights(d.h, M), d)[0]
    # u = 0.3: int rho u^2/2 = 0.045; -nu int rho' phi' = -nu*0.3*int rho' = 0
    assert abs(H - 0.045) < 1e-4
