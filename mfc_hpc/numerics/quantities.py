"""Quantities of a layer and of a solution (METHOD.md sections 4, 6 and 8): the discrete
Hamiltonian, the kinetic cost, the drift of the trained network, the outflow rates and
the invertibility of the extracted blocks. Per-level arrays as in :mod:`.walk`.
"""
from __future__ import annotations

import numpy as np

from .grid import BoxGeometry
from .model import Discretisation
from .walk import all_edges, along

__all__ = ["hamiltonian_density", "hamiltonian", "relative_entropy", "kinetic_density", "kinetic_cost",
           "running_density", "running_cost", "drift", "outflow_rate", "cell_det_excess", "compression"]


def _edge_sum(shape, edges, fn, geom: BoxGeometry, d: Discretisation, face: bool = True) -> np.ndarray:
    """``sum_k (nu/h_k) a^(k) [fn(P_r) at the source p, fn(P_l) at the source p + e_k]``
    (each directed edge counted at its source node), ``[l, *i]``."""
    n = d.ndim
    out = np.zeros(shape)
    for e in edges:
        k = e.k
        part = np.zeros(shape)
        part[along(n, k, slice(None, -1), 1)] += fn(e.Pr, along(n, k, slice(None, -1), 1))
        part[along(n, k, slice(1, None), 1)] += fn(e.Pl, along(n, k, slice(1, None), 1))
        out += (d.nu / geom.h[k]) * (geom.face[k] if face else 1.0) * part
    return out


def hamiltonian_density(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation
                        ) -> np.ndarray:
    """Node contributions ``[l, *i]`` to ``H_h``:
    ``sum_k sum_{j=i+-e_k} 2 nu (nu/h_k) a^(k)_i R_i (E_ij - 1) - w_i F(rho_i)``.

    Each directed edge is counted at its source, so the owned nodes of a distributed box
    sum to the rank's share of ``H_h`` without double counting.
    """
    _, R, edges = all_edges(rho, phi, d)
    two_nu = 2.0 * d.nu
    H = two_nu * _edge_sum(R.shape, edges, lambda P, sl: R[sl] * np.expm1(P / two_nu), geom, d)
    if d.running.active:
        H -= geom.w * d.running.F(rho.sum(axis=1))
    return H


def hamiltonian(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Discrete Hamiltonian ``H_h(z)`` of each level (summed over the box's nodes)."""
    H = hamiltonian_density(rho, phi, geom, d)
    return H.reshape(H.shape[0], -1).sum(axis=1)


def relative_entropy(P: np.ndarray, two_nu: float) -> np.ndarray:
    """``c(E) = E log E - E + 1`` with ``E = exp(P/(2 nu))``, accurate for small ``P``."""
    y = P / two_nu
    return np.exp(y) * y - np.expm1(y)


def kinetic_density(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Node contributions ``[l, *i]`` to the kinetic cost rate
    ``sum_k sum_j 2 nu (nu/h_k) a^(k)_i R_i c(E_ij)``."""
    _, R, edges = all_edges(rho, phi, d)
    two_nu = 2.0 * d.nu
    return two_nu * _edge_sum(R.shape, edges, lambda P, sl: R[sl] * relative_entropy(P, two_nu), geom, d)


def kinetic_cost(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Per level, the kinetic (layer-weight) cost rate summed over the box."""
    C = kinetic_density(rho, phi, geom, d)
    return C.reshape(C.shape[0], -1).sum(axis=1)


def running_density(rho: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """``w_i F(rho_i)`` per level and node, ``[l, *i]``."""
    return geom.w * d.running.F(rho.sum(axis=1))


def running_cost(rho: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Per level ``sum_i w_i F(rho_i)``."""
    r = running_density(rho, geom, d)
    return r.reshape(r.shape[0], -1).sum(axis=1)


def drift(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Layer drift ``b[l, k, *i]``: the mean displacement rate of the walk along axis ``k``,
    ``b^(k)_i = (nu / w^(k)_{i_k}) (E_{i,i+e_k} - E_{i,i-e_k})``.

    Inside that is ``(nu/h_k)(E_{i,i+e_k} - E_{i,i-e_k})``; at a wall the missing neighbour
    counts as ``E = 1``, ``+-(2 nu/h_k)(E - 1)``, so that no control gives no drift there
    either (the reflecting wall is not a drift of the network).
    """
    n = d.ndim
    _, R, edges = all_edges(rho, phi, d)
    b = np.empty((R.shape[0], n) + R.shape[1:])
    for e in edges:
        k = e.k
        Ep = np.ones(R.shape)
        Em = np.ones(R.shape)
        Ep[along(n, k, slice(None, -1), 1)] = e.Er
        Em[along(n, k, slice(1, None), 1)] = e.El
        b[:, k] = d.nu / geom.w_axis(k) * (Ep - Em)
    return b


def outflow_rate(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation) -> np.ndarray:
    """Outflow rate ``sum_k sum_{j=i+-e_k} (nu/(h_k w^(k)_{i_k})) E_ij`` of every node,
    ``[l, *i]`` (METHOD.md 6, 8): the layer map is a Markov kernel while ``dt`` times it is
    at most 2."""
    n = d.ndim
    _, R, edges = all_edges(rho, phi, d)
    rate = np.zeros(R.shape)
    for e in edges:
        k = e.k
        out = np.zeros(R.shape)
        out[along(n, k, slice(None, -1), 1)] += e.Er
        out[along(n, k, slice(1, None), 1)] += e.El
        rate += d.nu / geom.h[k] * out / geom.w_axis(k)
    return rate


def cell_det_excess(b: np.ndarray, h: tuple[float, ...], dt: float) -> np.ndarray:
    """``det(I + dt grad U) - 1`` of the piecewise-linear interpolant ``U`` of the drift
    ``b[l, k, *i]`` on every simplex of the grid's Kuhn triangulation, computed without
    cancellation (``tr(A) + det(A)`` for ``A = dt grad U`` when ``d = 2``).

    ``d = 1``: the cells ``(i, i+1)``, ``[l, M-1]``, value ``dt (b_{i+1} - b_i)/h``.
    ``d = 2``: each cell ``(i, i+e_1, i+e_2, i+e_1+e_2)`` split along its diagonal into the
    triangles ``(i, i+e_1, i+e_1+e_2)`` and ``(i, i+e_2, i+e_1+e_2)``, ``[l, M_1-1, M_2-1, 2]``.
    A block ``x -> x + dt U(x)`` is invertible (orientation kept on every simplex) iff all
    values exceed ``-1`` (METHOD.md 8).
    """
    n = b.ndim - 2
    if n == 1:
        return dt * np.diff(b[:, 0], axis=-1) / h[0]
    if n != 2:
        raise NotImplementedError("cell_det_excess: d = 1 or 2")
    h1, h2 = h
    U1, U2 = b[:, 0], b[:, 1]

    def c(U, a, b_):  # corner (a, b_) of every cell: 0 = i, 1 = i + e
        return U[:, a:U.shape[1] - 1 + a, b_:U.shape[2] - 1 + b_]

    out = np.empty(U1.shape[:1] + (U1.shape[1] - 1, U1.shape[2] - 1, 2))
    # triangle (i, i+e1, i+e1+e2)
    g11 = (c(U1, 1, 0) - c(U1, 0, 0)) / h1
    g12 = (c(U1, 1, 1) - c(U1, 1, 0)) / h2
    g21 = (c(U2, 1, 0) - c(U2, 0, 0)) / h1
    g22 = (c(U2, 1, 1) - c(U2, 1, 0)) / h2
    out[..., 0] = dt * (g11 + g22) + dt * dt * (g11 * g22 - g12 * g21)
    # triangle (i, i+e2, i+e1+e2)
    g11 = (c(U1, 1, 1) - c(U1, 0, 1)) / h1
    g12 = (c(U1, 0, 1) - c(U1, 0, 0)) / h2
    g21 = (c(U2, 1, 1) - c(U2, 0, 1)) / h1
    g22 = (c(U2, 0, 1) - c(U2, 0, 0)) / h2
    out[..., 1] = dt * (g11 + g22) + dt * dt * (g11 * g22 - g12 * g21)
    return out


def compression(b: np.ndarray, h: tuple[float, ...], dt: float) -> float:
    """``max(1 - det(I + dt grad U))`` over simplices and levels: the invertibility number
    (``dt max(-d_x U)`` when ``d = 1``); the blocks are invertible iff it is below 1."""
    ex = cell_det_excess(b, h, dt)
    return float((-ex).max()) if ex.size else -np.inf
