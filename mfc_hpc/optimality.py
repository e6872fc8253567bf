"""The discrete training problem whose optimality (KKT) system the scheme is (METHOD.md 4).

``N`` midpoint layers; the weights of layer ``n`` are the log-tilts
``theta_ij = log E_ij^{n+1/2}`` of the jumps between neighbouring nodes; the density of
every class is moved by the midpoint walk with those rates,

    w_i (rho^{n+1}_{c,i} - rho^n_{c,i}) = dt (nu/h) sum_j (rho^{n+1/2}_{c,j} E_ji - rho^{n+1/2}_{c,i} E_ij),

and the cost is

    J_h = sum_n dt sum_{i,j} 2 nu (nu/h) R_i^{n+1/2} c(E_ij) + sum_n dt sum_i w_i F(rho^{n+1/2})
          + sum_c sum_i w_i G_c(x_i) rho^N_{c,i},        c(s) = s log s - s + 1.

Serial numpy/scipy: it checks a solution, it is not the solver.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_banded

from .scheme import BoundaryData, Discretisation, edge_terms, node_weights

__all__ = ["tilts_from_solution", "forward_walk", "training_cost"]


def tilts_from_solution(Z: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    """Log-tilts ``(theta_r, theta_l)`` ``[n, p]`` of a solution ``Z[n, i, a]``: jumps
    ``p -> p+1`` and ``p+1 -> p`` at the midpoints ``z^{n+1/2}``."""
    mid = 0.5 * (Z[1:] + Z[:-1])
    rho = np.moveaxis(mid[..., :d.K], 2, 1)
    phi = np.moveaxis(mid[..., d.K:], 2, 1)
    e = edge_terms(rho, phi, d)
    two_nu = 2.0 * d.nu
    return e.Pr / two_nu, e.Pl / two_nu


def forward_walk(rho0: np.ndarray, theta_r: np.ndarray, theta_l: np.ndarray,
                 d: Discretisation) -> np.ndarray:
    """Densities ``rho[n, c, i]`` moved by the midpoint walk with the given log-tilts.

    Each layer solves the tridiagonal system ``(W - dt/2 A) rho^{n+1} = (W + dt/2 A) rho^n``
    with ``A`` the jump generator (the same for every class).
    """
    M, K, N = d.M, d.K, theta_r.shape[0]
    w = node_weights(d.h, M)
    k = d.nu / d.h
    rho = np.empty((N + 1, K, M))
    rho[0] = rho0
    for n in range(N):  # layers are sequential by nature; each is vectorised over nodes
        Er, El = np.exp(theta_r[n]), np.exp(theta_l[n])
        out = np.zeros(M)
        out[:-1] += Er
        out[1:] += El
        ab = np.zeros((3, M))  # banded W - dt/2 A
        ab[1] = w + 0.5 * d.dt * k * out
        ab[0, 1:] = -0.5 * d.dt * k * El  # row i, column i+1: inflow E_{i+1,i}
        ab[2, :-1] = -0.5 * d.dt * k * Er  # row i, column i-1: inflow E_{i-1,i}
        r = rho[n]
        Ar = -out * r
        Ar[:, :-1] += El * r[:, 1:]
        Ar[:, 1:] += Er * r[:, :-1]
        rho[n + 1] = solve_banded((1, 1), ab, (w * r + 0.5 * d.dt * k * Ar).T).T
    return rho


def training_cost(rho: np.ndarray, theta_r: np.ndarray, theta_l: np.ndarray,
                  d: Discretisation, bd: BoundaryData) -> dict:
    """``J_h`` split into kinetic, running and terminal parts for densities ``rho[n, c, i]``."""
    w = node_weights(d.h, d.M)
    mid = 0.5 * (rho[1:] + rho[:-1])
    R = mid.sum(axis=1) + d.eta
    two_nu, k = 2.0 * d.nu, d.nu / d.h

    def c(th: np.ndarray) -> np.ndarray:  # s log s - s + 1 at s = exp(th), no cancellation
        return np.exp(th) * th - np.expm1(th)

    kin = d.dt * two_nu * k * ((R[:, :-1] * c(theta_r)).sum() + (R[:, 1:] * c(theta_l)).sum())
    run = d.dt * (w * d.running.F(mid.sum(axis=1))).sum()
    term = bd.terminal_cost(rho[-1], w, 0, d.M)
    return {"kinetic": float(kin), "running": float(run), "terminal": float(term),
            "total": float(kin + run + term)}
