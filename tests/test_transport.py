"""The KL terminal cost: its terminal rows and their Jacobian, and a serial Newton solve
that moves a density towards the target."""
from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

from mfc_hpc.scheme import Discretisation, node_weights, serial_jacobian, serial_residual
from mfc_hpc.transport import KLTerminal


def _problem(M=33, N=8):
    d = Discretisation(K=1, M=M, N=N, x_min=-3.0, x_max=3.0, T=1.0, nu=0.2, eta=0.0)
    w = node_weights(d.h, M)
    g = lambda m, s: np.exp(-(d.x - m) ** 2 / (2 * s)) + 1e-3
    rho0 = g(-1.0, 0.2)[None] / (w * g(-1.0, 0.2)).sum()
    q = g(1.0, 0.3)[None] / (w * g(1.0, 0.3)).sum()
    return d, w, KLTerminal(rho0, q, gamma=2.0)


def test_kl_jacobian_matches_finite_differences():
    d, w, bd = _problem(M=9, N=3)
    rng = np.random.default_rng(0)
    Z = np.zeros((d.N + 1, d.M, 2))
    Z[..., 0] = bd.rho0[0] * (1 + 0.2 * rng.random((d.N + 1, d.M)))
    Z[..., 1] = 0.3 * rng.normal(size=(d.N + 1, d.M))
    J = serial_jacobian(Z, d, bd).toarray()
    F0 = serial_residual(Z, d, bd).ravel()
    eps = 1e-7
    for k in rng.choice(Z.size, 12, replace=False):
        Zp = Z.copy().ravel()
        Zp[k] += eps
        fd = (serial_residual(Zp.reshape(Z.shape), d, bd).ravel() - F0) / eps
        assert np.allclose(fd, J[:, k], rtol=1e-4, atol=1e-6)


def test_kl_newton_moves_density_to_target():
    d, w, bd = _problem()
    Z = np.zeros((d.N + 1, d.M, 2))
    Z[..., 0] = bd.rho0[0]
    for _ in range(40):
        F = serial_residual(Z, d, bd).ravel()
        if np.abs(F).max() < 1e-12:
            break
        step = spla.spsolve(serial_jacobian(Z, d, bd).tocsc(), F).reshape(Z.shape)
        t = 1.0
        while np.any(Z[..., 0] - t * step[..., 0] <= 0):
            t *= 0.5
        Z -= t * step
    assert np.abs(serial_residual(Z, d, bd)).max() < 1e-10
    rhoN = Z[-1, :, 0]
    kl = lambda r: (w * r * np.log(r / bd.target[0])).sum()
    assert kl(rhoN) < 0.5 * kl(bd.rho0[0])  # the network carried the data towards q
    assert abs((w * rhoN).sum() - 1.0) < 1e-12
    assert np.allclose(Z[-1, :, 1], bd.terminal(rhoN[None], 0, d.M)[0])
