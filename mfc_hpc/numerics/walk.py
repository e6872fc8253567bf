"""The controlled random walk of one layer, axis by axis (METHOD.md sections 4 and 8).

Per-level kernels act on ``rho[l, c, *i]`` and ``phi[l, c, *i]`` over a box of nodes whose
:class:`~mfc_hpc.numerics.grid.BoxGeometry` gives the weights and face factors. The box's
first and last nodes along each axis are treated as reflecting walls: exact at the walls
of the domain, and only spoiling the values on the ghost nodes of a distributed box
(never used).

For every directed edge ``i -> j = i +- e_k``: ``R_i = rho_i + eta``,
``P_ij = A_ij / R_i = sum_c (rho_{c,i}/R_i)(phi_{c,j} - phi_{c,i})`` (cancellation-free,
METHOD.md 7; ``phi_j - phi_i`` itself for one class with ``eta = 0``) and
``E_ij = exp(P_ij / (2 nu))``. The mass flow across the edge carries the face factor
``a^(k)_i``:

    dH_h/dphi_{c,i} = sum_k sum_{j=i+-e_k} (nu/h_k) a^(k)_i (rho_{c,j} E_ji - rho_{c,i} E_ij)
    dH_h/drho_{c,i} = sum_k sum_{j=i+-e_k} 2 nu (nu/h_k) a^(k)_i [(E_ij - 1) + E_ij (D_c - P_ij)/(2 nu)]
                      - w_i F'(rho_i)

with ``D_c = phi_{c,j} - phi_{c,i}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import BoxGeometry
from .model import Discretisation

__all__ = ["fractions", "AxisEdges", "axis_edges", "all_edges", "vector_field", "vector_field_jacobian",
           "stencil_offsets", "CENTRE", "lower", "upper", "along"]

#: index of the centre in the node-stencil table
CENTRE = 0


def stencil_offsets(ndim: int) -> list[tuple[int, ...]]:
    """The node offsets every equation of a layer couples: index 0 the node itself,
    ``1 + 2k`` the neighbour ``-e_k`` and ``2 + 2k`` the neighbour ``+e_k`` (``2d + 1`` in
    all). The one table behind the Jacobian layout, its pattern and its preallocation."""
    out = [(0,) * ndim]
    for k in range(ndim):
        for s in (-1, 1):
            out.append(tuple(s if l == k else 0 for l in range(ndim)))
    return out


def minus(k: int) -> int:
    """Stencil index of the neighbour ``-e_k``."""
    return 1 + 2 * k


def plus(k: int) -> int:
    """Stencil index of the neighbour ``+e_k``."""
    return 2 + 2 * k


def along(ndim: int, k: int, sl: slice, lead: int) -> tuple:
    """Index tuple selecting ``sl`` along node axis ``k`` of an array with ``lead`` leading
    axes before the ``ndim`` node axes (and any trailing axes)."""
    return (slice(None),) * lead + tuple(sl if a == k else slice(None) for a in range(ndim))


def lower(x: np.ndarray, k: int, ndim: int, lead: int) -> np.ndarray:
    """The source-side (``i``) ends of the edges ``(i, i + e_k)``."""
    return x[along(ndim, k, slice(None, -1), lead)]


def upper(x: np.ndarray, k: int, ndim: int, lead: int) -> np.ndarray:
    """The ``i + e_k`` ends of the edges ``(i, i + e_k)``."""
    return x[along(ndim, k, slice(1, None), lead)]


def fractions(rho: np.ndarray, d: Discretisation) -> tuple[np.ndarray, np.ndarray]:
    """``f_{c,i} = rho_{c,i} / R_i`` and ``R_i = rho_i + eta`` for ``rho[l, c, *i]``."""
    R = rho.sum(axis=1) + d.eta
    if d.unit_fraction:
        return np.ones_like(rho), R
    return rho / R[:, None], R


@dataclass
class AxisEdges:
    """Quantities on the directed edges along axis ``k`` of each layer.

    Edge ``p`` is the node pair ``(p, p + e_k)``; suffix ``r`` is the jump ``p -> p + e_k``
    (source ``p``), suffix ``l`` the jump ``p + e_k -> p``. ``Dr[l, c, *p]`` is
    ``phi_{c,p+e_k} - phi_{c,p}``; ``P = A/R`` and ``E = exp(P/(2 nu))``, each ``[l, *p]``.
    """

    k: int
    Dr: np.ndarray
    Pr: np.ndarray
    Pl: np.ndarray
    Er: np.ndarray
    El: np.ndarray


def axis_edges(phi: np.ndarray, f: np.ndarray, k: int, d: Discretisation) -> AxisEdges:
    """Tilts of the edges along axis ``k``, computed without cancellation (METHOD.md 7)."""
    n = d.ndim
    Dr = upper(phi, k, n, 2) - lower(phi, k, n, 2)
    if d.unit_fraction:
        Pr = Dr[:, 0].copy()
        Pl = -Pr
    else:
        Pr = np.einsum("lc...,lc...->l...", lower(f, k, n, 2), Dr)
        Pl = -np.einsum("lc...,lc...->l...", upper(f, k, n, 2), Dr)
    two_nu = 2.0 * d.nu
    return AxisEdges(k, Dr, Pr, Pl, np.exp(Pr / two_nu), np.exp(Pl / two_nu))


def all_edges(rho: np.ndarray, phi: np.ndarray, d: Discretisation
              ) -> tuple[np.ndarray, np.ndarray, list[AxisEdges]]:
    """``(f, R, [edges along each axis])``."""
    f, R = fractions(rho, d)
    return f, R, [axis_edges(phi, f, k, d) for k in range(d.ndim)]


def vector_field(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(dH_h/dphi, dH_h/drho)`` per level, each ``[l, c, *i]`` (module docstring)."""
    n = d.ndim
    f, R, edges = all_edges(rho, phi, d)
    g_phi = np.zeros_like(rho)
    g_rho = np.zeros_like(rho)
    two_nu = 2.0 * d.nu
    for e in edges:
        k = e.k
        coef = (d.nu / geom.h[k]) * geom.face[k]  # (nu/h_k) a^(k), broadcast over the edges
        lo, hi = along(n, k, slice(None, -1), 2), along(n, k, slice(1, None), 2)
        # net mass flow of class c across the edge (p, p+e_k)
        flow = coef * (rho[lo] * e.Er[:, None] - rho[hi] * e.El[:, None])
        g_phi[lo] -= flow
        g_phi[hi] += flow
        if d.unit_fraction:  # D_c - P = 0 exactly
            Tr = np.expm1(e.Pr / two_nu)[:, None]
            Tl = np.expm1(e.Pl / two_nu)[:, None]
        else:
            Tr = np.expm1(e.Pr / two_nu)[:, None] + e.Er[:, None] * (e.Dr - e.Pr[:, None]) / two_nu
            Tl = np.expm1(e.Pl / two_nu)[:, None] + e.El[:, None] * (-e.Dr - e.Pl[:, None]) / two_nu
        c2 = two_nu * coef
        g_rho[lo] += c2 * Tr
        g_rho[hi] += c2 * Tl
    if d.running.active:
        g_rho -= (geom.w * d.running.dF(rho.sum(axis=1)))[:, None]
    return g_phi, g_rho


def _edge_derivatives(rho_s, f_s, R_s, D, P, E, coef, d: Discretisation):
    """Derivatives of one family of directed edges ``s -> t`` along one axis.

    Returns ``(dO_s, dO_t, dS_s, dS_t)``, each ``[l, *p, c, b]`` with ``b`` over the 2K
    columns ``(rho_d, phi_d)`` of the source ``s`` or target ``t`` node, where
    ``O_c = coef rho_{c,s} E`` is the outflow along the edge (``coef = (nu/h_k) a^(k)``)
    and ``S_c = 2 nu coef [(E - 1) + E (D_c - P)/(2 nu)]`` its term of ``dH/drho_{c,s}``.
    Arguments: ``rho_s, f_s, D: [l, c, *p]``; ``R_s, P, E: [l, *p]``.
    """
    K = d.K
    two_nu = 2.0 * d.nu
    rho_s = np.moveaxis(rho_s, 1, -1)  # [l, *p, c]
    f_s = np.moveaxis(f_s, 1, -1)
    D = np.moveaxis(D, 1, -1)
    if d.unit_fraction:
        g = np.zeros_like(D)  # d(A/R)/d rho = (D - P)/R = 0
        Q = np.zeros_like(D)
    else:
        Q = D - P[..., None]  # [l, *p, c]
        g = Q / R_s[..., None]  # d P / d rho_{d,s}
    eye = np.eye(K)
    kE = (coef * E)[..., None, None]  # [l, *p, 1, 1]
    shape = P.shape + (K, 2 * K)
    dO_s = np.empty(shape)
    dO_t = np.zeros(shape)
    dS_s = np.empty(shape)
    dS_t = np.zeros(shape)
    rg = rho_s[..., :, None] / two_nu  # [l, *p, c, 1]
    dO_s[..., :K] = kE * (eye + rg * g[..., None, :])
    dO_s[..., K:] = -kE * rg * f_s[..., None, :]
    dO_t[..., K:] = kE * rg * f_s[..., None, :]
    qf = Q[..., :, None] * f_s[..., None, :] / two_nu  # [l, *p, c, d]
    dS_s[..., :K] = kE * Q[..., :, None] * g[..., None, :] / two_nu
    dS_s[..., K:] = -kE * (qf + eye)
    dS_t[..., K:] = kE * (qf + eye)
    return dO_s, dO_t, dS_s, dS_t


def vector_field_jacobian(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation
                          ) -> np.ndarray:
    """Jacobian of ``(dH/dphi, dH/drho)`` per level: ``J[l, *i, s, a, b]``.

    Row ``a`` (``c``: ``dH/dphi_c``, ``K + c``: ``dH/drho_c``) at node ``i``, column ``b``
    (``d``: ``rho_d``, ``K + d``: ``phi_d``) at node ``i + stencil_offsets(d)[s]``.
    """
    K, n = d.K, d.ndim
    f, R, edges = all_edges(rho, phi, d)
    J = np.zeros(rho.shape[:1] + rho.shape[2:] + (2 * n + 1, 2 * K, 2 * K))
    C = CENTRE
    rows_p, rows_r = slice(0, K), slice(K, 2 * K)

    def at(k: int, sl: slice, s: int, rows: slice) -> tuple:
        return along(n, k, sl, 1) + (s, rows)

    LO, HI = slice(None, -1), slice(1, None)
    for e in edges:
        k = e.k
        coef = (d.nu / geom.h[k]) * geom.face[k]
        lo2, hi2 = along(n, k, LO, 2), along(n, k, HI, 2)
        lo1, hi1 = along(n, k, LO, 1), along(n, k, HI, 1)
        # jumps p -> p+e_k
        Os, Ot, Ss, St = _edge_derivatives(rho[lo2], f[lo2], R[lo1], e.Dr, e.Pr, e.Er, coef, d)
        J[at(k, LO, C, rows_p)] -= Os
        J[at(k, LO, plus(k), rows_p)] -= Ot
        J[at(k, HI, minus(k), rows_p)] += Os
        J[at(k, HI, C, rows_p)] += Ot
        J[at(k, LO, C, rows_r)] += Ss
        J[at(k, LO, plus(k), rows_r)] += St
        # jumps p+e_k -> p
        Os, Ot, Ss, St = _edge_derivatives(rho[hi2], f[hi2], R[hi1], -e.Dr, e.Pl, e.El, coef, d)
        J[at(k, HI, C, rows_p)] -= Os
        J[at(k, HI, minus(k), rows_p)] -= Ot
        J[at(k, LO, plus(k), rows_p)] += Os
        J[at(k, LO, C, rows_p)] += Ot
        J[at(k, HI, C, rows_r)] += Ss
        J[at(k, HI, minus(k), rows_r)] += St
    if d.running.active:
        J[..., C, K:, :K] -= (geom.w * d.running.d2F(rho.sum(axis=1)))[..., None, None]
    return J
