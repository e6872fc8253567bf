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


def vector_field_jacobian(rho: np.ndarray, phi: np.ndarray, geom: BoxGeometry, d: Discretisation
                          ) -> np.ndarray:
    """Jacobian of ``(dH/dphi, dH/drho)`` per level, field-major: ``J[s, a, b, l, *i]``.

    ``rho[c, l, *i]`` and ``phi[c, l, *i]`` are field-major too (class axis first, the mesh
    axes last, so that every numpy pass runs over long contiguous node rows). Row ``a``
    (``c``: ``dH/dphi_c``, ``K + c``: ``dH/drho_c``) at node ``i``, column ``b`` (``d``:
    ``rho_d``, ``K + d``: ``phi_d``) at node ``i + stencil_offsets(d)[s]``.

    For a directed edge ``s -> t`` with ``kE = (nu/h_k) a^(k) E``, ``r_c = rho_{c,s}/(2 nu)``,
    ``f = rho_s/R_s``, ``Q_c = D_c - P`` and ``g = Q/R_s`` (METHOD.md 7), the outflow
    ``O_c = (nu/h_k) a^(k) rho_{c,s} E`` and the edge's term ``S_c`` of ``dH/drho_{c,s}``
    have the derivatives ``dO_c/drho_{d,s} = kE (delta_cd + r_c g_d)``,
    ``dO_c/dphi_{d,s} = -kE r_c f_d = -dO_c/dphi_{d,t}``, ``dS_c/drho_{d,s} = kE Q_c g_d/(2 nu)``,
    ``dS_c/dphi_{d,s} = -kE (Q_c f_d/(2 nu) + delta_cd) = -dS_c/dphi_{d,t}`` (no dependence
    on ``rho_t``).
    """
    K, n = d.K, d.ndim
    two_nu = 2.0 * d.nu
    R = rho.sum(axis=0) + d.eta  # [l, *i]
    unit = d.unit_fraction
    f = None if unit else rho / R
    S = 2 * n + 1
    J = np.zeros((S, 2 * K, 2 * K) + rho.shape[1:])
    C = CENTRE
    P_, R_ = slice(0, K), slice(K, 2 * K)  # rows dH/dphi, dH/drho; columns rho, phi
    eye = np.eye(K).reshape((K, K) + (1,) * (rho.ndim - 1))
    LO, HI = slice(None, -1), slice(1, None)
    for k in range(n):
        coef = (d.nu / geom.h[k]) * geom.face[k]  # (nu/h_k) a^(k), broadcast over the edges
        lo2, hi2 = along(n, k, LO, 2), along(n, k, HI, 2)
        Dr = phi[hi2] - phi[lo2]  # [c, l, *p]: phi_{c,p+e_k} - phi_{c,p}
        if unit:
            Pr = Dr[0]
            Pl = -Pr
        else:
            Pr = np.einsum("c...,c...->...", f[lo2], Dr)
            Pl = -np.einsum("c...,c...->...", f[hi2], Dr)
        # the two families of jumps: p -> p+e_k (source lo) and p+e_k -> p (source hi)
        for src, tgt, D, P, st, ts in ((lo2, hi2, Dr, Pr, plus(k), minus(k)),
                                       (hi2, lo2, -Dr if not unit else None, Pl, minus(k), plus(k))):
            s1, t1 = src[1:], tgt[1:]  # the same boxes of a [l, *i] array
            kE = coef * np.exp(P / two_nu)  # [l, *p]
            rg = rho[src] / two_nu  # r_c: [c, l, *p]
            # (the operations in the order of the 1-D release: its answers are unchanged)
            if unit:
                O_rho = kE[None, None]  # [1, 1, l, *p]
                O_phi = -(kE * rg)[:, None]  # f = 1
                S_phi = -kE[None, None]
                S_rho = None
            else:
                fs = f[src]
                Q = D - P  # [c, l, *p]
                g = Q / R[s1]
                O_rho = kE * (eye + rg[:, None] * g[None, :])  # [c, d, l, *p]
                O_phi = -((kE * rg)[:, None] * fs[None, :])
                S_rho = (kE * Q)[:, None] * g[None, :] / two_nu
                S_phi = -(kE * (Q[:, None] * fs[None, :] / two_nu + eye))
            J[(C, P_, P_) + s1] -= O_rho
            J[(C, P_, R_) + s1] -= O_phi
            J[(st, P_, R_) + s1] += O_phi
            J[(ts, P_, P_) + t1] += O_rho
            J[(ts, P_, R_) + t1] += O_phi
            J[(C, P_, R_) + t1] -= O_phi
            if S_rho is not None:
                J[(C, R_, P_) + s1] += S_rho
            J[(C, R_, R_) + s1] += S_phi
            J[(st, R_, R_) + s1] -= S_phi
    if d.running.active:
        J[C, R_, P_] -= geom.w * d.running.d2F(rho.sum(axis=0))
    return J
