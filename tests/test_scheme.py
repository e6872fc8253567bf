"""Pure kernels of the scheme (no PETSc): exact Jacobian against finite differences in
1-D and 2-D, conservation, limits, axis swap, the stencil table and its pattern."""
import numpy as np
import pytest

from mfc_hpc.numerics.depth import serial_jacobian, serial_residual, stencil_columns, whole_mesh
from mfc_hpc.numerics.grid import BoxGeometry, StateGrid
from mfc_hpc.numerics.model import Discretisation, RunningCost
from mfc_hpc.numerics.quantities import drift, hamiltonian, cell_det_excess
from mfc_hpc.numerics.terminal import BoundaryData
from mfc_hpc.numerics.walk import axis_edges, fractions, stencil_offsets, vector_field


def grid_of(nodes, lo=-1.0, hi=1.5):
    n = len(nodes)
    return StateGrid((lo,) * n, tuple(hi - 0.4 * k for k in range(n)), tuple(nodes))


def random_problem(K, eta, kappa, scheme="midpoint", nodes=(7,), N=4, seed=0):
    rng = np.random.default_rng(seed)
    g = grid_of(nodes)
    d = Discretisation(grid=g, K=K, N=N, T=0.7, nu=0.3, eta=eta,
                       running=RunningCost("congestion" if kappa else "none", kappa), scheme=scheme)
    Z = np.empty(d.state_shape)
    Z[..., :K] = rng.uniform(0.05, 1.0, Z[..., :K].shape)
    Z[..., K:] = 0.5 * rng.normal(size=Z[..., K:].shape)
    bd = BoundaryData(rng.uniform(0.1, 1.0, (K,) + g.nodes), rng.normal(size=(K,) + g.nodes))
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


@pytest.mark.parametrize("K,eta,kappa,scheme,nodes", [
    (1, 0.0, 0.0, "midpoint", (7,)),   # one class, eta = 0 (no division by R)
    (2, 0.1, 0.7, "midpoint", (7,)),   # multi-class with running cost F != 0
    (3, 0.05, 0.3, "midpoint", (7,)),
    (3, 0.05, 0.3, "euler", (7,)),
    (1, 0.2, 0.5, "midpoint", (7,)),
    (1, 0.0, 0.0, "midpoint", (5, 4)),  # d = 2
    (2, 0.1, 0.6, "midpoint", (5, 4)),  # d = 2, two classes, F != 0
    (2, 0.1, 0.6, "euler", (4, 5)),
])
def test_analytic_jacobian_equals_finite_differences(K, eta, kappa, scheme, nodes):
    d, Z, bd = random_problem(K, eta, kappa, scheme, nodes=nodes, N=3 if len(nodes) > 1 else 4, seed=K)
    J = serial_jacobian(Z, d, bd).toarray()
    Jfd = fd_jacobian(Z, d, bd)
    rel = np.abs(J - Jfd).max() / np.abs(J).max()
    assert rel <= 1e-6, rel
    assert J.shape == (d.unknowns,) * 2


@pytest.mark.parametrize("nodes", [(7,), (5, 4)])
def test_pattern_is_the_stencil_table(nodes):
    """The Jacobian's nonzeros lie on the stencil table's pattern: ``2(2d+1)`` points per
    row, and the ``2K`` rows of an interior mesh point touch ``3(2d+1)`` points (15 of the
    box's 27 in 2-D)."""
    d, Z, bd = random_problem(2, 0.1, 0.4, nodes=nodes, N=3)
    nd, K = d.ndim, d.K
    assert len(stencil_offsets(nd)) == 2 * nd + 1
    J = serial_jacobian(Z, d, bd).tocsr()
    assert np.diff(J.indptr).max() <= 2 * (2 * nd + 1) * 2 * K
    shape = d.state_shape
    centre = (1,) + tuple(m // 2 for m in d.grid.nodes)
    rows = [np.ravel_multi_index(centre + (a,), shape) for a in range(2 * K)]
    cols = np.unique(np.concatenate([J[r].indices for r in rows]))
    points = {np.unravel_index(c, shape)[:-1] for c in cols}
    assert len(points) == 3 * (2 * nd + 1)


def test_walk_conserves_mass_per_class_and_is_diffusion_without_control():
    d, Z, bd = random_problem(3, 0.1, 0.4, nodes=(9,))
    rho = np.moveaxis(Z[..., :3], -1, 1)
    phi = np.moveaxis(Z[..., 3:], -1, 1)
    geom = BoxGeometry(d.grid, (0,), d.grid.nodes)
    g_phi, _ = vector_field(rho, phi, geom, d)
    assert np.abs(g_phi.sum(axis=-1)).max() < 1e-13  # inflow - outflow sums to zero
    d0 = Discretisation(grid=d.grid, K=3, N=d.N, T=d.T, nu=d.nu, eta=d.eta)
    g0, grho0 = vector_field(rho, np.zeros_like(phi), geom, d0)
    h = d.grid.h[0]
    lap = d.nu / h * (rho[..., 2:] - 2 * rho[..., 1:-1] + rho[..., :-2])
    assert np.allclose(g0[..., 1:-1], lap, atol=1e-14)
    assert np.abs(grho0).max() == 0.0
    assert np.abs(drift(rho, np.zeros_like(phi), geom, d0)).max() == 0.0


def test_walk_in_2d_conserves_mass_and_is_the_kronecker_sum_without_control():
    """With face factors the uncontrolled 2-D walk is the sum of the 1-D walks along each
    axis (METHOD.md 8), and inflow - outflow sums to zero."""
    d, Z, bd = random_problem(2, 0.1, 0.0, nodes=(6, 5), N=2)
    rho = np.moveaxis(Z[..., :2], -1, 1)
    geom = BoxGeometry(d.grid, (0, 0), d.grid.nodes)
    g0, _ = vector_field(rho, np.zeros_like(rho), geom, d)
    assert np.abs(g0.sum(axis=(-2, -1))).max() < 1e-13
    w = geom.w
    expect = np.zeros_like(rho)
    for k in range(2):
        gk = d.grid
        h = gk.h[k]
        w1 = geom.w_axis(k)
        r = np.moveaxis(rho, 2 + k, -1)
        lap = np.zeros_like(r)
        lap[..., :-1] += r[..., 1:] - r[..., :-1]
        lap[..., 1:] += r[..., :-1] - r[..., 1:]
        expect += np.moveaxis(lap, -1, 2 + k) * d.nu / h / w1
    assert np.allclose(g0 / w, expect, rtol=1e-12, atol=1e-12)


def test_tilts_bounded_in_vacuum_and_one_class_uses_adjoint_differences():
    g = StateGrid.line(0.0, 1.0, 9)
    d = Discretisation(grid=g, K=1, N=2, T=1, nu=0.1, eta=0.0)
    rho = np.full((1, 1, 9), 1e-300)
    phi = np.linspace(0, 1, 9)[None, None, :] ** 2
    f, R = fractions(rho, d)
    e = axis_edges(phi, f, 0, d)
    # one class, eta = 0: A/R = phi_j - phi_i exactly, whatever the density
    assert np.array_equal(e.Pr, np.diff(phi[0], axis=-1))
    assert np.all(np.isfinite(e.Er)) and np.all(np.isfinite(e.El))


def test_hamiltonian_is_sum_of_edge_terms_for_small_tilts():
    # H_h -> int rho u^2/2 - nu d_x rho d_x phi as h -> 0 (quadratic limit of 2nu(E-1))
    M = 2001
    g = StateGrid.line(-6, 6, M)
    d = Discretisation(grid=g, K=1, N=1, T=1, nu=0.2, eta=0.0)
    x = g.axis(0)
    rho = np.exp(-x ** 2 / 2)[None, None] / np.sqrt(2 * np.pi)
    phi = (0.3 * x)[None, None]
    H = hamiltonian(rho, phi, BoxGeometry(g, (0,), (M,)), d)[0]
    assert abs(H - 0.045) < 1e-4


def test_axis_swap_transposes_residual_and_jacobian():
    d, Z, bd = random_problem(2, 0.1, 0.5, nodes=(5, 4), N=2, seed=4)
    gT = d.grid.transposed((1, 0))
    dT = Discretisation(grid=gT, K=2, N=d.N, T=d.T, nu=d.nu, eta=d.eta, running=d.running)
    ZT = np.swapaxes(Z, 1, 2)
    bdT = BoundaryData(np.swapaxes(bd.rho0, 1, 2), np.swapaxes(bd.G, 1, 2))
    F, FT = serial_residual(Z, d, bd), serial_residual(ZT, dT, bdT)
    assert np.abs(np.swapaxes(FT, 1, 2) - F).max() <= 1e-14 * np.abs(F).max()


def test_invertibility_number_of_a_linear_field():
    """``det(I + dt grad U) - 1`` is exact for a linear field ``U = A x`` on every triangle."""
    g = StateGrid((-1.0, -1.0), (1.0, 2.0), (5, 7))
    A = np.array([[-0.7, 0.3], [0.2, -1.1]])
    X = g.points()
    b = np.einsum("kl,...l->k...", A, X)[None]  # [1, k, i1, i2]
    dt = 0.4
    ex = cell_det_excess(b, g.h, dt)
    assert ex.shape == (1, 4, 6, 2)
    assert np.allclose(ex, np.linalg.det(np.eye(2) + dt * A) - 1.0, rtol=1e-12)
    b1 = (-0.5 * StateGrid.line(0, 1, 5).axis(0))[None, None]
    assert np.allclose(cell_det_excess(b1, (0.25,), 0.2), -0.1)
