"""The discrete system on a (ghosted) slab of the depth-time mesh (METHOD.md 4, 8).

A slab is ``Z[l, *i, a]``: level ``l`` (depth), node multi-index ``i`` (state), field ``a``
with ``a = c`` for ``rho_c`` and ``a = K + c`` for ``phi_c``. The implicit midpoint rule in
depth (or implicit Euler, :data:`~mfc_hpc.numerics.model.SCHEMES`) and the equation
placement of METHOD.md 4: at point ``(i, n)`` the density slots hold the density
equation of layer ``n-1 -> n`` (the initial condition at ``n = 0``) and the adjoint slots
the adjoint equation of layer ``n -> n+1`` (the terminal condition at ``n = N``). Every
row is scaled by the product weight ``w_i``.

Jacobian rows come as ``V[n, *i, a, q, s, b]``: row ``a`` of point ``(i, n)``, column field
``b`` at node ``i + stencil_offsets(d)[s]`` and level ``n + q - 1`` (density rows) or
``n + q`` (adjoint rows), ``q = 0, 1``. That layout, :func:`stencil_columns` and the
parallel pattern all come from the one table :func:`~mfc_hpc.numerics.walk.stencil_offsets`:
``2(2d+1)`` points per row, ``3(2d+1)`` per DMDA point.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .grid import BoxGeometry
from .model import Discretisation, RunningCost
from .terminal import BoundaryData
from .walk import CENTRE, stencil_offsets, vector_field, vector_field_jacobian

__all__ = ["Slab", "whole_mesh", "layers", "split", "slab_residual", "slab_jacobian", "slab_jacobian_fields",
           "stencil_columns",
           "natural_index", "serial_residual", "serial_jacobian", "jacobian_chunks"]


@dataclass(frozen=True)
class Slab:
    """Where a ghosted slab and its owned box sit in the global mesh.

    The ghosted array covers levels ``l0 ..`` and nodes ``i0[k] ..`` along each axis; the
    owned box is levels ``ys .. ye-1`` and nodes ``xs[k] .. xe[k]-1`` (global indices).
    """

    l0: int
    i0: tuple[int, ...]
    ys: int
    ye: int
    xs: tuple[int, ...]
    xe: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.xs)

    @property
    def own_nodes(self) -> tuple[slice, ...]:
        """The owned nodes as slices of the ghosted array's node axes."""
        return tuple(slice(a - b, e - b) for a, e, b in zip(self.xs, self.xe, self.i0))

    @property
    def global_nodes(self) -> tuple[slice, ...]:
        """The owned nodes as global slices (``sel`` of the boundary data)."""
        return tuple(slice(a, e) for a, e in zip(self.xs, self.xe))

    @property
    def owned_count(self) -> tuple[int, ...]:
        return tuple(e - a for a, e in zip(self.xs, self.xe))

    @property
    def owned_levels(self) -> int:
        return self.ye - self.ys

    def owned(self, Zg: np.ndarray) -> np.ndarray:
        return Zg[(slice(self.ys - self.l0, self.ye - self.l0),) + self.own_nodes]

    def with_levels(self, ys: int, ye: int) -> "Slab":
        """The same slab owning only levels ``ys .. ye-1`` (a chunk of the assembly)."""
        return dataclasses.replace(self, ys=ys, ye=ye)


def whole_mesh(d: Discretisation) -> Slab:
    """The slab of the whole mesh on one process (serial reference)."""
    z = (0,) * d.ndim
    return Slab(0, z, 0, d.N + 1, z, d.grid.nodes)


def layers(Zg: np.ndarray, theta: float) -> np.ndarray:
    """Evaluation points ``(1-theta) z^l + theta z^{l+1}`` between consecutive slab levels."""
    if theta == 0.5:
        return 0.5 * (Zg[:-1] + Zg[1:])
    return (1.0 - theta) * Zg[:-1] + theta * Zg[1:]


def split(Z: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """``Z[l, *i, a]`` -> ``rho[l, c, *i], phi[l, c, *i]``."""
    return np.moveaxis(Z[..., :K], -1, 1), np.moveaxis(Z[..., K:], -1, 1)


def _trim(Zg: np.ndarray, s: Slab) -> tuple[np.ndarray, Slab]:
    """The levels of the ghosted array that the owned levels' equations touch (one below,
    one above), with the slab re-anchored on them."""
    a = max(s.l0, s.ys - 1)
    b = min(s.l0 + Zg.shape[0], s.ye + 1)
    return Zg[a - s.l0:b - s.l0], dataclasses.replace(s, l0=a)


def _own_class_last(g: np.ndarray, idx: np.ndarray, own: tuple) -> np.ndarray:
    """``g[l, c, *i]`` at layers ``idx`` and the owned nodes, class axis last: ``[n, *i, c]``."""
    return np.moveaxis(g[(idx, slice(None)) + own], 1, -1)


def slab_residual(Zg: np.ndarray, s: Slab, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """Residual of the discrete optimality system on the owned box, ``[n, *i, a]``.

    Density slot of point ``(i, n)``: ``w_i (rho^n - rho^{n-1}) - dt dH/dphi`` at the
    layer ``n-1 -> n`` (``w_i (rho^0 - rho_init)`` at ``n = 0``). Adjoint slot:
    ``w_i (phi^{n+1} - phi^n) + dt dH/drho`` at the layer ``n -> n+1``
    (``w_i (phi^N - Phi(rho^N))``, or the terminal rows of ``bd``, at ``n = N``).
    """
    Zg, s = _trim(Zg, s)
    K = d.K
    th_r, th_p = d.thetas
    geom = BoxGeometry(d.grid, s.i0, Zg.shape[1:-1])
    own = s.own_nodes
    w = geom.w[own]
    rho_r, phi_r = split(layers(Zg, th_r), K)
    g_phi, g_rho = vector_field(rho_r, phi_r, geom, d)
    if th_p != th_r:
        rho_p, phi_p = split(layers(Zg, th_p), K)
        _, g_rho = vector_field(rho_p, phi_p, geom, d)
    F = np.empty((s.ye - s.ys,) + s.owned_count + (2 * K,))
    Zo = s.owned(Zg)
    lev = np.arange(s.ys, s.ye)
    wc = w[..., None]
    m = lev >= 1  # density rows: layer (n-1) - l0
    if m.any():
        n1 = lev[m] - s.l0
        dz = Zg[(n1,) + own + (slice(0, K),)] - Zg[(n1 - 1,) + own + (slice(0, K),)]
        F[m, ..., :K] = wc * dz - d.dt * _own_class_last(g_phi, n1 - 1, own)
    if (~m).any():
        rho0 = np.moveaxis(bd.rho0[(slice(None),) + s.global_nodes], 0, -1)
        F[~m, ..., :K] = wc * (Zo[~m][..., :K] - rho0)
    m = lev <= d.N - 1  # adjoint rows: layer n - l0
    if m.any():
        n0 = lev[m] - s.l0
        dz = Zg[(n0 + 1,) + own + (slice(K, None),)] - Zg[(n0,) + own + (slice(K, None),)]
        F[m, ..., K:] = wc * dz + d.dt * _own_class_last(g_rho, n0, own)
    if (~m).any():
        ZN = Zo[~m][0]  # level N, [*i, a]
        rows = bd.terminal_rows(ZN, w, s.global_nodes)
        if rows is not None:
            F[~m, ..., K:] = rows
        else:
            target = bd.terminal(np.moveaxis(ZN[..., :K], -1, 0), s.global_nodes)
            F[~m, ..., K:] = wc * (ZN[..., K:] - np.moveaxis(target, 0, -1))
    return F


def slab_jacobian_fields(Zg: np.ndarray, s: Slab, d: Discretisation, bd: BoundaryData,
                         uncontrolled: bool = False) -> np.ndarray:
    """Jacobian rows of the owned box, field-major: ``VF[a, q, s, b, n, *i]`` (a C-contiguous
    array whose transpose is :func:`slab_jacobian`'s ``V[n, *i, a, q, s, b]``).

    The mesh axes come last so that every numpy pass runs over long rows of nodes; the
    parallel assembly gathers the values straight from this layout into the matrix's own
    storage (:mod:`mfc_hpc.parallel.pattern`). Entries whose column lies outside the mesh
    are zero. ``uncontrolled``: see :func:`slab_jacobian`.
    """
    Zg, s = _trim(Zg, s)
    if uncontrolled:
        Zg = np.zeros_like(Zg)
        d = dataclasses.replace(d, running=RunningCost())
    K, nd = d.K, d.ndim
    S = 2 * nd + 1
    th_r, th_p = d.thetas
    geom = BoxGeometry(d.grid, s.i0, Zg.shape[1:-1])
    own = s.own_nodes
    w = geom.w[own]
    nl = s.ye - s.ys
    VF = np.zeros((2 * K, 2, S, 2 * K, nl) + s.owned_count)
    C = CENTRE
    Zf = np.moveaxis(Zg, -1, 0)  # [a, l, *i] (a view)

    def field_layers(theta: float) -> np.ndarray:  # :func:`layers` along axis 1: [a, l, *i]
        if theta == 0.5:
            return 0.5 * (Zf[:, :-1] + Zf[:, 1:])
        return (1.0 - theta) * Zf[:, :-1] + theta * Zf[:, 1:]

    Lr = field_layers(th_r)
    Jr = vector_field_jacobian(Lr[:K], Lr[K:], geom, d)  # [s, a, b, l, *i]
    if th_p == th_r:
        Jp = Jr
    else:
        Lp = field_layers(th_p)
        Jp = vector_field_jacobian(Lp[:K], Lp[K:], geom, d)
    del Lr

    def put(rows: slice, J: np.ndarray, l0: int, l1: int, n0: int, n1: int, sign: float, theta: float) -> None:
        """Rows ``rows`` of levels ``n0 .. n1-1`` (owned-box indices) from layers ``l0 .. l1-1``
        of ``J``: ``sign dt ((1-theta) J, theta J)`` for ``q = 0, 1``."""
        X = J[(slice(None), rows, slice(None), slice(l0, l1)) + own].swapaxes(0, 1)  # [a, s, b, n, *i]
        np.multiply(X, sign * d.dt * (1.0 - theta), out=VF[rows, 0, :, :, n0:n1])
        np.multiply(X, sign * d.dt * theta, out=VF[rows, 1, :, :, n0:n1])

    # density rows: layer n-1 -> n at levels n >= 1; the initial condition at n = 0
    a0 = max(s.ys, 1)
    if a0 < s.ye:
        put(slice(0, K), Jr, a0 - 1 - s.l0, s.ye - 1 - s.l0, a0 - s.ys, nl, -1.0, th_r)
        for c in range(K):
            VF[c, 0, C, c, a0 - s.ys:] -= w
            VF[c, 1, C, c, a0 - s.ys:] += w
    if s.ys == 0:
        for c in range(K):
            VF[c, 1, C, c, 0] = w
    # adjoint rows: layer n -> n+1 at levels n <= N-1; the terminal condition at n = N
    b1 = min(s.ye, d.N)
    if s.ys < b1:
        put(slice(K, 2 * K), Jp, s.ys - s.l0, b1 - s.l0, 0, b1 - s.ys, 1.0, th_p)
        for c in range(K):
            VF[K + c, 0, C, K + c, :b1 - s.ys] -= w
            VF[K + c, 1, C, K + c, :b1 - s.ys] += w
    if s.ye == d.N + 1:
        nN = d.N - s.ys
        for c in range(K):
            VF[K + c, 0, C, K + c, nN] = w
        ZN = Zg[(d.N - s.l0,) + own]  # level N, [*i, a]
        dRows = None if uncontrolled else bd.terminal_rows_jacobian(ZN, w, s.global_nodes)
        if dRows is not None:  # [*i, c, b]
            VF[K:, 0, C, :, nN] = np.moveaxis(dRows, (-2, -1), (0, 1))
        else:
            dPhi = None if uncontrolled else bd.terminal_derivative(np.moveaxis(ZN[..., :K], -1, 0),
                                                                    s.global_nodes)
            if dPhi is not None:  # [*i, c, d]
                VF[K:, 0, C, :K, nN] = np.moveaxis(-w[..., None, None] * dPhi, (-2, -1), (0, 1))
    return VF


def slab_jacobian(Zg: np.ndarray, s: Slab, d: Discretisation, bd: BoundaryData,
                  uncontrolled: bool = False) -> np.ndarray:
    """Jacobian rows of the owned box: ``V[n, *i, a, q, s, b]`` (module docstring), a view
    of :func:`slab_jacobian_fields`.

    Entries whose column lies outside the mesh are zero. With ``uncontrolled=True`` it is
    instead the matrix of the *uncontrolled flow* (``E = 1``: the density diffused forward
    by the plain walk, the adjoint backward by the discrete heat operator, ``F = 0``): the
    Jacobian at ``z = 0`` without running cost, whose ``-J^{-1} F(0)`` is the initial guess
    of METHOD.md section 7.
    """
    VF = slab_jacobian_fields(Zg, s, d, bd, uncontrolled)
    return np.moveaxis(VF, (0, 1, 2, 3), (-4, -3, -2, -1))


def jacobian_chunks(s: Slab, d: Discretisation, max_values: int = 1 << 23) -> list[Slab]:
    """The owned levels of ``s`` in chunks whose :func:`slab_jacobian` holds at most
    ``max_values`` entries (bounds the assembly's temporaries on large meshes)."""
    per_level = int(np.prod(s.owned_count)) * (2 * d.K) ** 2 * 2 * (2 * d.ndim + 1)
    step = max(1, max_values // max(per_level, 1))
    return [s.with_levels(a, min(a + step, s.ye)) for a in range(s.ys, s.ye, step)] or [s]


def stencil_columns(s: Slab, d: Discretisation, structural_zeros: bool = False
                    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Global natural coordinates of every entry of :func:`slab_jacobian`.

    Returns ``(level, nodes, field, valid)``: arrays (``nodes`` one per state axis)
    broadcastable to the shape of ``V``; ``valid`` is False where the column falls outside
    the mesh and, unless ``structural_zeros``, on the entries the scheme never makes
    nonzero (an adjoint row's neighbours' density columns): the Jacobian's pattern.
    """
    K, nd = d.K, d.ndim
    ndims = 1 + nd + 4  # [n, *i, a, q, s, b]

    def shaped(v: np.ndarray, axis: int) -> np.ndarray:
        return v.reshape([-1 if k == axis else 1 for k in range(ndims)])

    offs = np.array(stencil_offsets(nd))  # [S, d]
    n = shaped(np.arange(s.ys, s.ye), 0)
    a = shaped(np.arange(2 * K), nd + 1)
    q = shaped(np.arange(2), nd + 2)
    b = shaped(np.arange(2 * K), nd + 4)
    level = n + q - (a < K)
    # an adjoint row depends on the densities at its own node only (dH/drho_{c,i} sees
    # rho through R_i and f_i): its neighbours' density columns are structural zeros
    valid = (level >= 0) & (level <= d.N)
    if not structural_zeros:
        valid = valid & ~((a >= K) & (shaped(np.arange(2 * nd + 1), nd + 3) != CENTRE) & (b < K))
    nodes = []
    for k in range(nd):
        node = shaped(np.arange(s.xs[k], s.xe[k]), 1 + k) + shaped(offs[:, k], nd + 3)
        valid = valid & (node >= 0) & (node < d.grid.nodes[k])
        nodes.append(node)
    return level, tuple(nodes), b, valid


def natural_index(level: np.ndarray, nodes: tuple[np.ndarray, ...], field: np.ndarray, d: Discretisation
                  ) -> np.ndarray:
    """Index of unknown ``(n, i, a)`` in the natural ordering (C order of ``Z[n, *i, a]``)."""
    idx = level
    for k, i in enumerate(nodes):
        idx = idx * d.grid.nodes[k] + i
    return idx * (2 * d.K) + field


def serial_jacobian(Z: np.ndarray, d: Discretisation, bd: BoundaryData, uncontrolled: bool = False):
    """The whole Jacobian as a scipy CSR matrix in natural ordering (serial reference)."""
    import scipy.sparse as sp

    s = whole_mesh(d)
    V = slab_jacobian(Z, s, d, bd, uncontrolled=uncontrolled)
    level, nodes, field, valid = stencil_columns(s, d)
    shape = V.shape
    nd = d.ndim
    rows = np.arange(d.unknowns).reshape((d.N + 1,) + d.grid.nodes + (2 * d.K,))
    rows = np.broadcast_to(rows.reshape(rows.shape + (1, 1, 1)), shape)
    cols = np.broadcast_to(natural_index(level, nodes, field, d), shape)
    valid = np.broadcast_to(valid, shape)
    n = d.unknowns
    del nd
    return sp.csr_matrix((V[valid], (rows[valid], cols[valid])), shape=(n, n))


def serial_residual(Z: np.ndarray, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """The whole residual ``[n, *i, a]`` (serial reference)."""
    return slab_residual(Z, whole_mesh(d), d, bd)
