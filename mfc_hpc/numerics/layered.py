"""The optimality system layer by layer, with its forward-backward coupling frozen.

The midpoint scheme (METHOD.md 4, 8) couples the backward adjoint and the forward density
through three things only: the class fractions ``f_c = rho_c / R`` (``R = rho + eta``) in
the tilts ``E_ij = exp(sum_c f_{c,i} (phi_{c,j} - phi_{c,i}) / (2 nu))``, the running cost
``F'(rho)`` and a terminal condition ``Phi(rho^N)`` that reads the density (KL). Given the
densities at the half levels (``rho_frozen[n] = rho^{n+1/2}``), the adjoint rows of layer
``n`` are a closed system for ``y = phi^{n+1/2}``:

    w_i (y_i - phi^{n+1}_i) - (dt/2) dH_h/drho_i(rho_frozen[n], y) = 0,     phi^n = 2 y - phi^{n+1},

solved from ``phi^N = Phi`` down to ``n = 0`` by Newton (its Jacobian ``w - (dt/2) d(dH/drho)/dphi``
has the structure of ``W - (dt/2) A^T``, ``A`` the walk's generator: an M-matrix for one class).
The density then follows by the one midpoint walk
(:func:`~mfc_hpc.numerics.training.forward_walk`) with the tilts of ``(rho_frozen, phi)``.

For one class with ``eta = 0``, ``F = 0`` and a fixed loss nothing is frozen (``f = 1``, the
adjoint rows do not read ``rho``): the pair is then the exact discrete solution, computed
by ``N`` sparse solves of one layer's size instead of one whole-mesh Newton. Otherwise it
is the target mesh's adjoint and density *given* the frozen densities (e.g. a coarser
solve's, interpolated by :func:`transfer_levels`): the predictor of
:mod:`mfc_hpc.studies.stability`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import BoxGeometry
from .model import Discretisation
from .training import forward_walk, tilts_from_solution
from .walk import stencil_offsets, vector_field, vector_field_jacobian

__all__ = ["LayeredResult", "exact_decoupling", "backward_adjoint", "layered_solve", "transfer_levels"]


def exact_decoupling(d: Discretisation, fixed_loss: bool) -> bool:
    """Whether the layered solve is the exact discrete solution (nothing is frozen)."""
    return d.unit_fraction and not d.running.active and fixed_loss


@dataclass
class LayeredResult:
    """The state ``Z[n, *i, a]`` of a layered solve and how its layer solves went."""

    Z: np.ndarray
    converged: bool
    failed_layer: int | None
    newton_iterations: int
    exact: bool


def _layer_matrix(J: np.ndarray, diag: np.ndarray, d: Discretisation):
    """``diag - J`` as a scipy CSR matrix over ``(node, class)`` unknowns; ``J[*i, S, c, e]``
    couples class ``c`` at node ``i`` to class ``e`` at ``i + stencil_offsets(d)[S]``."""
    import scipy.sparse as sp

    K, nodes = d.K, d.grid.nodes
    n = int(np.prod(nodes)) * K
    idx = np.arange(int(np.prod(nodes))).reshape(nodes)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [diag.ravel()]
    for s, off in enumerate(stencil_offsets(d.ndim)):
        src = tuple(slice(max(0, -o), m - max(0, o)) for o, m in zip(off, nodes))
        dst = tuple(slice(max(0, o), m - max(0, -o)) for o, m in zip(off, nodes))
        r = idx[src].ravel()[:, None, None] * K + np.arange(K)[None, :, None]
        c = idx[dst].ravel()[:, None, None] * K + np.arange(K)[None, None, :]
        v = J[src + (s,)].reshape(-1, K, K)
        rows.append(np.broadcast_to(r, v.shape).ravel())
        cols.append(np.broadcast_to(c, v.shape).ravel())
        vals.append(-v.ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _layer_adjoint(phi_next: np.ndarray, rho_mid: np.ndarray, geom: BoxGeometry, d: Discretisation,
                   rtol: float, max_it: int, guess: np.ndarray | None = None) -> tuple[np.ndarray, bool, int]:
    """``phi^n`` of one midpoint layer from ``phi^{n+1}`` and ``rho^{n+1/2}`` (both ``[c, *i]``);
    Newton starts from ``y = phi^{n+1/2}`` of ``guess`` (a ``phi^n``), else from ``phi^{n+1}``."""
    import scipy.sparse.linalg as spla

    K = d.K
    c = 0.5 * d.dt
    w = geom.w
    rho1 = rho_mid[None]

    def residual(y: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            g = vector_field(rho1, y[None], geom, d)[1][0]
        return w * (y - phi_next) - c * g

    y = phi_next.copy()
    F = residual(y)
    f = float(np.linalg.norm(F))
    if guess is not None and np.all(np.isfinite(guess)):
        yg = 0.5 * (guess + phi_next)
        Fg = residual(yg)
        fg = float(np.linalg.norm(Fg))
        if np.isfinite(fg) and fg < f:
            y, F, f = yg, Fg, fg
    scale = float(np.linalg.norm(w * phi_next) + np.linalg.norm(residual(phi_next))) or 1.0
    diag = np.repeat(np.broadcast_to(w, y.shape[1:]).ravel(), K)
    it = 0
    while np.isfinite(f) and f > rtol * scale and it < max_it:
        with np.errstate(over="ignore", invalid="ignore"):
            # field-major [S, a, b, l, *i] with inputs [c, l, *i]; the rows dH/drho, the columns phi
            Jf = vector_field_jacobian(rho_mid[:, None], y[:, None], geom, d)[:, K:, K:, 0]
            J = np.moveaxis(Jf, (0, 1, 2), (-3, -2, -1))  # [*i, S, c, e]
        if not np.all(np.isfinite(J)):
            return y, False, it
        A = _layer_matrix(c * J, diag, d)
        dy = spla.spsolve(A.tocsc(), np.moveaxis(F, 0, -1).ravel())
        dy = np.moveaxis(dy.reshape(y.shape[1:] + (K,)), -1, 0)
        a = 1.0
        for _ in range(40):
            yt = y - a * dy
            Ft = residual(yt)
            ft = float(np.linalg.norm(Ft))
            if np.isfinite(ft) and ft < f:
                break
            a *= 0.5
        else:
            return y, False, it
        y, F, f = yt, Ft, ft
        it += 1
    return 2.0 * y - phi_next, bool(np.isfinite(f) and f <= rtol * scale), it


def backward_adjoint(phi_N: np.ndarray, rho_mid: np.ndarray, d: Discretisation, *, rtol: float = 1e-12,
                     max_it: int = 50, guess: np.ndarray | None = None) -> tuple[np.ndarray, bool, int | None, int]:
    """The adjoint ``phi[n, c, *i]`` of the midpoint scheme from ``phi^N`` down, with the
    half-level densities ``rho_mid[n, c, *i]`` frozen (module docstring); ``guess`` (an
    earlier ``phi[n, c, *i]``, e.g. of the previous forward-backward sweep) starts each
    layer's Newton where it is closer than ``phi^{n+1}``.

    Returns ``(phi, converged, failed_layer, newton_iterations)``; on a failed layer the
    levels below it are left as NaN.
    """
    if d.scheme != "midpoint":
        raise NotImplementedError("backward_adjoint: the midpoint scheme only")
    geom = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)
    phi = np.full((d.N + 1,) + np.shape(phi_N), np.nan)
    phi[d.N] = phi_N
    total = 0
    for n in range(d.N - 1, -1, -1):
        phi[n], ok, its = _layer_adjoint(phi[n + 1], rho_mid[n], geom, d, rtol, max_it,
                                         None if guess is None else guess[n])
        total += its
        if not ok:
            phi[:n + 1] = np.nan
            return phi, False, n, total
    return phi, True, None, total


def layered_solve(rho0: np.ndarray, phi_N: np.ndarray, rho_frozen: np.ndarray, d: Discretisation,
                  exact: bool = False, guess: np.ndarray | None = None, **kw) -> LayeredResult:
    """Adjoint by :func:`backward_adjoint`, then the density by the midpoint walk with the
    tilts of ``(rho_frozen, phi)``; ``rho_frozen[n, c, *i]`` are the densities at the levels
    ``n = 0..N`` (their level means are the half levels). ``exact``: nothing is frozen
    (:func:`exact_decoupling`), recorded in the result; ``guess``: an earlier ``phi[n, c, *i]``
    for the layers' Newton (:func:`backward_adjoint`)."""
    mid = 0.5 * (rho_frozen[1:] + rho_frozen[:-1])
    phi, ok, bad, its = backward_adjoint(phi_N, mid, d, guess=guess, **kw)
    K = d.K
    Zf = np.concatenate([np.moveaxis(rho_frozen, 1, -1), np.moveaxis(phi, 1, -1)], axis=-1)
    if not ok:
        return LayeredResult(Zf, False, bad, its, exact)
    with np.errstate(over="ignore", invalid="ignore"):
        rho = forward_walk(rho0, tilts_from_solution(Zf, d), d)
    Z = np.concatenate([np.moveaxis(rho, 1, -1), Zf[..., K:]], axis=-1)
    return LayeredResult(Z, bool(np.all(np.isfinite(Z))), None, its, exact)


def transfer_levels(Z: np.ndarray, d_from: Discretisation, d_to: Discretisation) -> np.ndarray:
    """A state ``Z[n, *i, a]`` of one depth-time mesh on another of the same box and depth:
    not-a-knot cubic splines in depth and along each state axis (tensor product; ``C^2``, so
    differences over the new spacing see no interpolation kinks)."""
    from scipy.interpolate import CubicSpline

    def along(v: np.ndarray, x0: np.ndarray, x1: np.ndarray, axis: int) -> np.ndarray:
        if x0.size == x1.size and np.allclose(x0, x1):
            return v
        if x0.size < 4:  # too few points for a cubic: linear
            return np.apply_along_axis(lambda u: np.interp(x1, x0, u), axis, v)
        return CubicSpline(x0, v, axis=axis)(x1)

    out = along(np.asarray(Z, dtype=float), d_from.t, d_to.t, 0)
    for k in range(d_to.ndim):
        out = along(out, d_from.grid.axis(k), d_to.grid.axis(k), 1 + k)
    return out
