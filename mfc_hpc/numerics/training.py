"""The discrete training problem whose optimality (KKT) system the scheme is (METHOD.md 4, 8).

``N`` midpoint layers; the weights of layer ``n`` are the log-tilts
``theta_ij = log E_ij^{n+1/2}`` of the jumps between neighbouring nodes; the density of
every class is moved by the midpoint walk with those rates,

    w_i (rho^{n+1}_{c,i} - rho^n_{c,i}) = dt sum_k sum_{j=i+-e_k} (nu/h_k) a^(k)_i
                                          (rho^{n+1/2}_{c,j} E_ji - rho^{n+1/2}_{c,i} E_ij),

that is ``(W - dt/2 A_n) rho^{n+1} = (W + dt/2 A_n) rho^n`` with the jump generator ``A_n``
(the same for every class), and the cost is

    J_h = sum_n dt sum_k sum_{i,j} 2 nu (nu/h_k) a^(k)_i R_i^{n+1/2} c(E_ij) + sum_n dt sum_i w_i F(rho^{n+1/2})
          + sum_c sum_i w_i G_c(x_i) rho^N_{c,i},        c(s) = s log s - s + 1.

Exact gradient by the discrete adjoint. With ``B_n^{+-} = W +- dt/2 A_n`` the layer
constraints are ``B_n^- rho^{n+1} - B_n^+ rho^n = 0``; with multipliers ``mu^n`` and
``q^n_i = dt 2 nu sum_k sum_j (nu/h_k) a^(k)_i c(E_ij) + dt w_i F'(rho_i^{n+1/2})`` the
stationarity conditions in ``rho^N, .., rho^1`` are the backward sweep

    w phi^N = -w s G,     (B_n^-)^T mu^n = w phi^{n+1} - q^n/2,
    w phi^n = (B_n^+)^T mu^n - q^n/2,                          n = N-1, ..., 0,

which defines ``phi^n`` for any network; ``mu^n = (phi^n + phi^{n+1})/2`` exactly, and

    dJ_h/dtheta_e^n = dt (nu/h_k) a^(k)_s e^theta [2 nu R_s theta - sum_c rho_{c,s} (mu_{c,t} - mu_{c,s})]

(edge ``e: s -> t`` along axis ``k``, densities at ``n+1/2``) vanishes exactly when every
tilt is the scheme's ``E = exp(A(phi^{n+1/2})/(2 nu R))``: then ``(rho, phi)`` solves the
scheme and conversely, so ``phi`` of the scheme is the adjoint state of the walk.

Each layer's linear systems are tridiagonal (``d = 1``, LAPACK ``gttrf``/``gttrs``) or sparse
LU (``d >= 2``), factored once per evaluation and used by both sweeps; layers are
sequential by nature, each vectorised over nodes and classes. The kernels act on a chunk
of consecutive layers (:class:`LayerStack`, :func:`walk`, :func:`adjoint_source`,
:func:`adjoint_walk`, :func:`tilt_gradient`): :func:`sweep` runs them over the whole depth,
the distributed route (:mod:`mfc_hpc.parallel.training`) over each rank's layers. Serial
numpy/scipy: it checks a solution and is the reference of the distributed minimiser.
"""
from __future__ import annotations

import time

import numpy as np

from .depth import layers, split
from .grid import BoxGeometry
from .model import Discretisation
from .terminal import BoundaryData
from .walk import all_edges, along

__all__ = ["TiltLayout", "LayerStack", "nodal_parts", "hashed_uniform", "walk", "adjoint_walk", "adjoint_source", "tilt_gradient",
           "tilts_from_solution", "forward_walk", "training_cost", "cost_and_gradient", "sweep", "kkt_state",
           "minimise", "symmetric_partner", "relent"]


def relent(th: np.ndarray) -> np.ndarray:
    """``c(e^th) = e^th th - e^th + 1`` without cancellation."""
    return np.exp(th) * th - np.expm1(th)


class TiltLayout:
    """The log-tilts of all layers as one vector: for each axis ``k`` the right and left
    jumps of its edges, ``[2, N, *edges_k]``, concatenated over axes (for ``d = 1`` simply
    ``[2, N, M-1]``, the shape :meth:`natural` gives)."""

    def __init__(self, d: Discretisation) -> None:
        self.d = d
        nodes = d.grid.nodes
        self.edge_shapes = [tuple(m - 1 if l == k else m for l, m in enumerate(nodes)) for k in range(d.ndim)]
        self.sizes = [2 * d.N * int(np.prod(e)) for e in self.edge_shapes]
        self.size = int(sum(self.sizes))

    @property
    def natural(self) -> tuple[int, ...]:
        d = self.d
        return (2, d.N, d.grid.nodes[0] - 1) if d.ndim == 1 else (self.size,)

    def split(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(theta_r, theta_l) per axis]``, each ``[N, *edges_k]``."""
        flat = np.asarray(theta, dtype=float).reshape(-1)
        if flat.size != self.size:
            raise ValueError(f"theta: expected {self.size} log-tilts, got {flat.size}")
        out, o = [], 0
        for e, n in zip(self.edge_shapes, self.sizes):
            part = flat[o:o + n].reshape((2, self.d.N) + e)
            out.append((part[0], part[1]))
            o += n
        return out

    def join(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        flat = np.concatenate([np.stack([r, l]).ravel() for r, l in parts])
        return flat.reshape(self.natural)

    def zeros(self) -> np.ndarray:
        return np.zeros(self.natural)

    def to_nodal(self, theta: np.ndarray) -> np.ndarray:
        """The nodal array ``T[N, *nodes, 2d]`` of :func:`nodal_parts` (unused slots 0)."""
        d = self.d
        T = np.zeros((d.N,) + d.grid.nodes + (2 * d.ndim,))
        for (r, l), (tr, tl) in zip(nodal_parts(T, d.ndim), self.split(theta)):
            r[...] = tr
            l[...] = tl
        return T

    def from_nodal(self, T: np.ndarray) -> np.ndarray:
        """The log-tilts of a nodal array ``T[N, *nodes, 2d]`` in this layout."""
        return self.join(nodal_parts(T, self.d.ndim))


class LayerStack:
    """The midpoint layers ``n = 0..L-1`` of a chunk of depth on the whole node grid, from
    their log-tilts ``parts`` (per axis ``(theta_r, theta_l)``, each ``[L, *edges_k]``;
    :meth:`TiltLayout.split` or :func:`nodal_parts`): the jump generator

        (A_n rho)_i = sum_k sum_{j=i+-e_k} (nu/h_k) a^(k) (rho_j E_ji - rho_i E_ij),

    the same for every class, and ``B_n^{+-} = W +- dt/2 A_n``. Everything that does not
    depend on the densities (the rates, the diagonals of ``B^{+-}``, the factorisations of
    ``B^-``) is set up for all layers of the chunk at once; :func:`walk` and
    :func:`adjoint_walk` then run the layers in order. Arrays ``[c, *i]``."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]], geom: BoxGeometry, d: Discretisation) -> None:
        nd = d.ndim
        self.d, self.geom = d, geom
        self.L = int(parts[0][0].shape[0])
        c = 0.5 * d.dt
        coef = [(d.nu / geom.h[k]) * geom.face[k] for k in range(nd)]  # (nu/h_k) a^(k), over the edges
        #: per axis ``dt/2`` times the flow rates of the jumps p -> p+e_k and p+e_k -> p
        #: with the face factor, ``[L, *edges_k]``
        self.rates = [(c * coef[k] * np.exp(tr), c * coef[k] * np.exp(tl)) for k, (tr, tl) in enumerate(parts)]
        out = np.zeros((self.L,) + geom.count)
        for k, (kr, kl) in enumerate(self.rates):
            out[along(nd, k, slice(None, -1), 1)] += kr
            out[along(nd, k, slice(1, None), 1)] += kl
        #: ``dt/2`` times the rates leaving each node, ``[L, *i]``
        self.out = out
        self.w = geom.w
        self._edges = [(along(nd, k, slice(None, -1), 1), along(nd, k, slice(1, None), 1)) for k in range(nd)]

    def explicit(self, n: int, rho: np.ndarray) -> np.ndarray:
        """``B_n^+ rho = W rho + dt/2 A_n rho`` for ``rho[c, *i]``."""
        y = (self.w - self.out[n]) * rho
        for (lo, hi), (kr, kl) in zip(self._edges, self.rates):
            y[hi] += kr[n] * rho[lo]
            y[lo] += kl[n] * rho[hi]
        return y

    def explicit_T(self, n: int, mu: np.ndarray) -> np.ndarray:
        """``(B_n^+)^T mu = W mu + dt/2 sum_j (nu/h_k) a^(k) E_ij (mu_j - mu_i)`` for ``mu[c, *i]``."""
        y = self.w * mu
        for (lo, hi), (kr, kl) in zip(self._edges, self.rates):
            dmu = mu[hi] - mu[lo]
            y[lo] += kr[n] * dmu
            y[hi] -= kl[n] * dmu
        return y

    def solvers(self) -> list:
        """Per layer a solve ``x = (B_n^-)^{-1} b`` (``transpose=True``: with the transpose)
        for ``b[c, *i]``: LAPACK tridiagonal factors when ``d = 1``, sparse LU (one pattern
        for every layer) otherwise. ``B^- = W - dt/2 A_n`` is column diagonally dominant (its
        columns sum to ``w``), so neither needs pivoting for stability."""
        if self.d.ndim == 1:
            return self._tridiagonal()
        return self._sparse_lu()

    def _tridiagonal(self) -> list:
        from scipy.linalg.lapack import dgttrf, dgttrs

        (kr, kl), = self.rates
        diag = self.w + self.out  # [L, M]
        sub, sup = -kr, -kl  # row i+1 col i: inflow from i; row i col i+1: inflow from i+1
        out = []
        for n in range(self.L):
            dl, dd, du, du2, ipiv, info = dgttrf(sub[n], diag[n], sup[n])
            if info < 0:
                raise ValueError(f"dgttrf: argument {-info} is invalid")

            def solve(b, transpose=False, f=(dl, dd, du, du2, ipiv)):
                x, _ = dgttrs(*f, b.T, trans="T" if transpose else "N")  # b[c, M]: b.T is Fortran order
                return x.T
            out.append(solve)
        return out

    def _sparse_lu(self) -> list:
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        shape, nd = self.geom.count, self.d.ndim
        n = int(np.prod(shape))
        idx = np.arange(n).reshape(shape)
        rows, cols = [idx.ravel()], [idx.ravel()]
        for k in range(nd):
            s = idx[along(nd, k, slice(None, -1), 0)].ravel()
            t = idx[along(nd, k, slice(1, None), 0)].ravel()
            rows += [t, s]  # inflow at t from s (rate E_r), at s from t (rate E_l)
            cols += [s, t]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        # the CSC pattern once; per layer only the values, permuted into it
        pat = sp.csc_matrix((np.arange(1, rows.size + 1, dtype=float), (rows, cols)), shape=(n, n))
        perm = pat.data.astype(np.int64) - 1
        w = np.broadcast_to(self.geom.w, shape)
        out = []
        for m in range(self.L):
            vals = [(w + self.out[m]).ravel()]
            for kr, kl in self.rates:
                vals += [(-kr[m]).ravel(), (-kl[m]).ravel()]
            A = sp.csc_matrix((np.concatenate(vals)[perm], pat.indices, pat.indptr), shape=(n, n))
            # a fill-reducing ordering of A + A^T (the pattern is symmetric): about 0.6 x the
            # fill and the time of the default COLAMD on a 65^2 layer
            lu = splu(A, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})

            def solve(b, transpose=False, lu=lu):
                b = np.asarray(b, dtype=float)
                x = lu.solve(b.reshape((-1, n)).T, trans="T" if transpose else "N").T
                return x.reshape(b.shape)
            out.append(solve)
        return out


def nodal_parts(T: np.ndarray, ndim: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis ``(theta_r, theta_l)`` as views of a nodal tilt array ``T[L, *nodes, 2d]``:
    field ``2k`` holds the jump ``i -> i + e_k`` of the edge ``(i, i + e_k)`` at node ``i``,
    field ``2k + 1`` the jump back; the nodes past the last one along ``k`` hold nothing."""
    out = []
    for k in range(ndim):
        sl = along(ndim, k, slice(None, -1), 1)
        out.append((T[sl + (2 * k,)], T[sl + (2 * k + 1,)]))
    return out


def hashed_uniform(index: np.ndarray, seed: int = 0) -> np.ndarray:
    """Pseudo-random numbers in ``[-1, 1)``, a pure function of an integer ``index`` (and
    ``seed``): the splitmix64 finaliser of ``index + seed * 2^32``. Any decomposition of an
    index range gives the same numbers, so a perturbation made of them does not depend on
    the number of ranks."""
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -52) - 1.0


def _whole(d: Discretisation) -> BoxGeometry:
    return BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)


def tilts_from_solution(Z: np.ndarray, d: Discretisation) -> np.ndarray:
    """Log-tilts of a solution ``Z[n, *i, a]``: ``P/(2 nu)`` of every edge at the midpoints
    ``z^{n+1/2}``, in the layout of :class:`TiltLayout` (``[2, N, M-1]`` for ``d = 1``)."""
    rho, phi = split(layers(Z, 0.5), d.K)
    _, _, edges = all_edges(rho, phi, d)
    two_nu = 2.0 * d.nu
    return TiltLayout(d).join([(e.Pr / two_nu, e.Pl / two_nu) for e in edges])


def walk(stack: LayerStack, solvers: list, rho_in: np.ndarray) -> np.ndarray:
    """The midpoint walk through the layers of a chunk: ``rho[l, c, *i]`` for the chunk's
    ``L + 1`` levels, level 0 being ``rho_in``, ``B_n^- rho^{n+1} = B_n^+ rho^n`` (layers are
    sequential by nature; each is vectorised over nodes and classes)."""
    rho = np.empty((stack.L + 1,) + np.shape(rho_in))
    rho[0] = rho_in
    for n in range(stack.L):
        rho[n + 1] = solvers[n](stack.explicit(n, rho[n]))
    return rho


def adjoint_walk(stack: LayerStack, solvers: list, phi_out: np.ndarray, q: np.ndarray,
                 pen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The backward adjoint sweep through a chunk (module docstring): from ``phi`` at the
    chunk's last level, ``(B_n^-)^T mu^n = w phi^{n+1} - q^n/2 - pen^{n+1}`` and
    ``w phi^n = (B_n^+)^T mu^n - q^n/2``. Returns ``(mu[L, c, *i], phi[L + 1, c, *i])``;
    ``q[L, *i]`` from :func:`adjoint_source`, ``pen[L + 1, c, *i]`` an optional extra
    derivative of the objective with respect to the densities of each level."""
    w = stack.w
    L = stack.L
    phi = np.empty((L + 1,) + np.shape(phi_out))
    mu = np.empty((L,) + np.shape(phi_out))
    phi[L] = phi_out
    half_q = 0.5 * q[:, None]  # [L, 1, *i]
    for n in range(L - 1, -1, -1):
        rhs = w * phi[n + 1] - half_q[n]
        if pen is not None:
            rhs -= pen[n + 1]
        mu[n] = solvers[n](rhs, transpose=True)
        y = stack.explicit_T(n, mu[n])
        y -= half_q[n]
        phi[n] = y / w
    return mu, phi


def _layer_costs(rho: np.ndarray, parts, d: Discretisation, geom: BoxGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Per layer of a chunk (``rho[L + 1, c, *i]``, ``parts`` of ``L`` layers): the kinetic
    and running cost rates (without ``dt``)."""
    nd = d.ndim
    L = rho.shape[0] - 1
    mid = 0.5 * (rho[1:] + rho[:-1])
    R = mid.sum(axis=1) + d.eta
    two_nu = 2.0 * d.nu
    kin = np.zeros(L)
    for k, (tr, tl) in enumerate(parts):
        ck = (d.nu / geom.h[k]) * geom.face[k]
        lo, hi = along(nd, k, slice(None, -1), 1), along(nd, k, slice(1, None), 1)
        c = two_nu * (np.broadcast_to(ck, geom.count)[lo[1:]] * (R[lo] * relent(tr))
                      + np.broadcast_to(ck, geom.count)[hi[1:]] * (R[hi] * relent(tl)))
        kin += c.sum(axis=tuple(range(1, c.ndim)))
    run = geom.w * d.running.F(mid.sum(axis=1))
    run = run.sum(axis=tuple(range(1, run.ndim)))
    return kin, run


def adjoint_source(rho: np.ndarray, parts, d: Discretisation, geom: BoxGeometry) -> np.ndarray:
    """``q^n_i = dt 2 nu sum_k sum_j (nu/h_k) a^(k)_i c(E_ij) + dt w_i F'(rho_i^{n+1/2})``,
    ``[L, *i]``, for the layers of a chunk (``rho[L + 1, c, *i]``; without ``F`` the densities
    are not read and may be ``None``)."""
    nd = d.ndim
    L = parts[0][0].shape[0]
    q = np.zeros((L,) + geom.count)
    for k, (tr, tl) in enumerate(parts):
        ck = np.broadcast_to((d.nu / geom.h[k]) * geom.face[k], geom.count)
        lo, hi = along(nd, k, slice(None, -1), 1), along(nd, k, slice(1, None), 1)
        q[lo] += ck[lo[1:]] * relent(tr)
        q[hi] += ck[hi[1:]] * relent(tl)
    q *= d.dt * 2.0 * d.nu
    if d.running.active:
        q += d.dt * geom.w * d.running.dF((0.5 * (rho[1:] + rho[:-1])).sum(axis=1))
    return q


def tilt_gradient(rho: np.ndarray, mu: np.ndarray, parts, d: Discretisation, geom: BoxGeometry
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``dJ_h/dtheta`` of the layers of a chunk, per axis ``(g_r, g_l)`` shaped like ``parts``:
    ``dt (nu/h_k) a^(k)_s e^theta [2 nu R_s theta - sum_c rho_{c,s} (mu_{c,t} - mu_{c,s})]``
    (edge ``s -> t``, densities at ``n + 1/2``; ``rho[L + 1, c, *i]``, ``mu[L, c, *i]``)."""
    nd = d.ndim
    mid = 0.5 * (rho[1:] + rho[:-1])  # [n, c, *i]
    R = mid.sum(axis=1) + d.eta
    dt, two_nu = d.dt, 2.0 * d.nu
    grads = []
    for k, (tr, tl) in enumerate(parts):
        ck = np.broadcast_to((d.nu / geom.h[k]) * geom.face[k], geom.count)
        lo, hi = along(nd, k, slice(None, -1), 2), along(nd, k, slice(1, None), 2)
        lo1, hi1 = lo[1:], hi[1:]
        dmu = mu[hi] - mu[lo]  # [n, c, *e]
        gr = dt * ck[lo1[1:]] * np.exp(tr) * (two_nu * R[lo1] * tr - (mid[lo] * dmu).sum(axis=1))
        gl = dt * ck[hi1[1:]] * np.exp(tl) * (two_nu * R[hi1] * tl + (mid[hi] * dmu).sum(axis=1))
        grads.append((gr, gl))
    return grads


def forward_walk(rho0: np.ndarray, theta: np.ndarray, d: Discretisation) -> np.ndarray:
    """Densities ``rho[n, c, *i]`` moved by the midpoint walk with the log-tilts ``theta``."""
    stack = LayerStack(TiltLayout(d).split(theta), _whole(d), d)
    return walk(stack, stack.solvers(), np.asarray(rho0, dtype=float))


def training_cost(rho: np.ndarray, theta: np.ndarray, d: Discretisation, bd: BoundaryData) -> dict:
    """``J_h`` split into kinetic, running and terminal parts for densities ``rho[n, c, *i]``."""
    geom = _whole(d)
    kin, run = _layer_costs(rho, TiltLayout(d).split(theta), d, geom)
    kin, run = float(d.dt * kin.sum()), float(d.dt * run.sum())
    term = bd.terminal_cost(rho[-1], geom.w, (slice(None),) * d.ndim)
    return {"kinetic": kin, "running": run, "terminal": float(term), "total": float(kin + run + term)}


def _check_fixed_terminal(bd: BoundaryData) -> None:
    if not bd.fixed_loss:
        raise NotImplementedError("the discrete training problem needs the fixed terminal loss phi^N = -s G "
                                  "(quadratic or softmax), not a KL or bridge terminal condition")


def sweep(theta: np.ndarray, d: Discretisation, bd: BoundaryData, barrier: float = 0.0):
    """Forward walk, cost and the backward adjoint sweep: ``(rho, phi, mu, grad, cost)``.

    ``barrier = tau > 0`` adds ``tau sum_{n >= 1} sum_{c,i} w_i (-log rho^n_{c,i})`` to the
    cost (as ``cost["barrier"]``, also in ``cost["objective"]``) and to the gradient; then
    ``phi`` is the adjoint of that objective, not of ``J_h``. The whole depth is one chunk
    of :func:`walk`, :func:`adjoint_source`, :func:`adjoint_walk` and :func:`tilt_gradient`
    (the distributed route runs the same kernels on each rank's chunk)."""
    _check_fixed_terminal(bd)
    layout = TiltLayout(d)
    parts = layout.split(theta)
    nd = d.ndim
    geom = _whole(d)
    w = geom.w
    stack = LayerStack(parts, geom, d)
    solvers = stack.solvers()
    rho = walk(stack, solvers, bd.rho0)
    kin, run = _layer_costs(rho, parts, d, geom)
    term = bd.terminal_cost(rho[-1], w, (slice(None),) * nd)
    cost = {"kinetic": float(d.dt * kin.sum()), "running": float(d.dt * run.sum()), "terminal": float(term)}
    cost["total"] = cost["kinetic"] + cost["running"] + cost["terminal"]
    q = adjoint_source(rho, parts, d, geom)
    cost["objective"] = cost["total"]
    pen = None
    if barrier > 0.0:
        with np.errstate(all="ignore"):
            cost["barrier"] = float(barrier * (w * -np.log(rho[1:])).sum())
        pen = np.zeros_like(rho)  # d(barrier)/d rho^n
        pen[1:] = -barrier * w / rho[1:]
        cost["objective"] = cost["total"] + cost["barrier"]
    mu, phi = adjoint_walk(stack, solvers, bd.terminal(rho[-1], (slice(None),) * nd), q, pen)
    return rho, phi, mu, layout.join(tilt_gradient(rho, mu, parts, d, geom)), cost


def cost_and_gradient(theta: np.ndarray, d: Discretisation, bd: BoundaryData) -> tuple[float, np.ndarray]:
    """``J_h`` and its exact gradient with respect to the log-tilts (the gradient has the
    shape of ``theta``)."""
    theta = np.asarray(theta, dtype=float)
    _, _, _, g, c = sweep(theta, d, bd)
    return c["total"], g.reshape(theta.shape)


def kkt_state(theta: np.ndarray, d: Discretisation, bd: BoundaryData) -> np.ndarray:
    """The state ``Z[n, *i, a]`` of a network: ``rho`` moved by its walk, ``phi`` its adjoint.

    It solves the scheme exactly when ``theta`` is a stationary point of ``J_h``; for
    ``theta = tilts_from_solution(Z)`` of a solution ``Z`` it gives back ``Z``.
    """
    rho, phi, _, _, _ = sweep(np.asarray(theta, dtype=float), d, bd)
    return np.concatenate([np.moveaxis(rho, 1, -1), np.moveaxis(phi, 1, -1)], axis=-1)


def symmetric_partner(theta: np.ndarray, d: Discretisation) -> np.ndarray:
    """The network mirrored by ``x -> -x`` (``d = 1``): edge ``p`` -> ``M-2-p``, right <->
    left jumps. For a mirror-symmetric problem ``J_h`` of the partner equals ``J_h``."""
    if d.ndim != 1:
        raise NotImplementedError("symmetric_partner: d = 1")
    (tr, tl), = TiltLayout(d).split(theta)
    return np.stack([tl[:, ::-1], tr[:, ::-1]]).reshape(np.shape(theta))


def minimise(d: Discretisation, bd: BoundaryData, theta0: np.ndarray | None = None, *,
             gtol: float = 1e-10, ftol: float = 0.0, maxiter: int = 20000, maxcor: int = 30,
             perturb: float = 0.0, seed: int = 0, bound: float = 20.0, restarts: int = 50,
             barrier: float = 0.0, callback=None) -> dict:
    """Minimise ``J_h`` over the log-tilts by L-BFGS (``scipy.optimize.minimize``, L-BFGS-B).

    Starts from ``theta0`` (default: the zero network, plain diffusion); ``perturb`` adds
    ``N(0, perturb^2)`` noise to the start (to leave a symmetric saddle). ``gtol`` applies
    to the largest gradient entry divided by ``dt (nu/h_1) 2 nu`` (the scale of the kinetic
    curvature), so it reads as a log-tilt tolerance. The midpoint walk keeps densities
    non-negative only below its Markov bound on the rates; where ``R < 0`` the kinetic
    term is negative and ``J_h`` unbounded below. Networks whose walk makes some
    ``rho_c <= -eta/K`` are infeasible (a large value sends the line search back, and
    L-BFGS restarts with fresh memory at most ``restarts`` times when its line search
    fails there). Every log-tilt is kept in ``[-bound, bound]``.

    ``barrier = tau > 0`` minimises ``J_h + tau sum w (-log rho)`` instead.

    Returns a dict: ``theta``, ``rho [N+1, K, *i]``, ``cost`` (J_h split), ``history``,
    ``gradients`` (largest projected gradient entry per iteration, scaled as ``gtol``),
    ``iterations``, ``evaluations``, ``message``, ``gradient_max``, ``time``.
    """
    from scipy.optimize import minimize

    t0 = time.perf_counter()
    layout = TiltLayout(d)
    shape = layout.natural
    th = layout.zeros() if theta0 is None else np.array(theta0, dtype=float).reshape(shape)
    if perturb:
        th = th + perturb * np.random.default_rng(seed).normal(size=shape)
    scale = d.dt * d.nu / d.grid.h[0] * 2.0 * d.nu  # gradient units -> log-tilt units
    history: list[float] = []
    counter = {"nfev": 0, "infeasible": 0}
    gradients: list[float] = []
    last = {"x": None, "J": None, "g": None}

    def fun(x):
        counter["nfev"] += 1
        with np.errstate(all="ignore"):
            rho, _, _, g, c = sweep(x.reshape(shape), d, bd, barrier)
        J = c["objective"]
        if not (np.isfinite(J) and np.all(np.isfinite(g))) or rho.min() <= floor:
            counter["infeasible"] += 1
            J = infeasible
            g = np.where(np.isfinite(g), g, 0.0)
        last["x"], last["J"], last["g"] = x.copy(), J, g
        return J, g.ravel()

    def projected(x, g):  # the gradient that L-BFGS-B's gtol measures (box projected)
        return np.abs(np.clip(x - g.ravel(), -bound, bound) - x).max() / scale

    def cb(x):  # scipy < 1.11 passes only x; the accepted point is the last evaluated one
        if last["x"] is None or not np.array_equal(x, last["x"]):
            fun(x)
        history.append(float(last["J"]))
        gradients.append(float(projected(x, last["g"])))
        if callback is not None:
            callback(x.reshape(shape), history[-1])

    with np.errstate(all="ignore"):
        _, _, _, g0, c0 = sweep(th, d, bd, barrier)
    J0 = c0["objective"]
    infeasible = 1e3 * (1.0 + abs(J0))
    floor = 0.0 if barrier > 0 or d.eta == 0 else -d.eta / d.K
    history.append(J0)
    gradients.append(float(projected(th.ravel(), g0)))
    x, nit, restarts_used = th.ravel(), 0, 0
    while True:  # restart (fresh memory) when the line search fails, e.g. at the positivity edge
        r = minimize(fun, x, jac=True, method="L-BFGS-B", callback=cb,
                     bounds=[(-bound, bound)] * th.size,
                     options={"maxiter": maxiter - nit, "maxcor": maxcor, "gtol": gtol * scale,
                              "ftol": ftol, "maxfun": 4 * maxiter, "maxls": 50})
        gained = fun(x)[0] - r.fun if r.fun < infeasible else 0.0
        x, nit = r.x, nit + r.nit
        if r.success or nit >= maxiter or restarts_used >= restarts or \
                gained <= 1e-13 * (1.0 + abs(r.fun)):
            break
        restarts_used += 1
    theta = x.reshape(shape)
    J, g = cost_and_gradient(theta, d, bd)
    rho = forward_walk(bd.rho0, theta, d)
    return {"theta": theta, "rho": rho, "cost": training_cost(rho, theta, d, bd),
            "history": np.array(history), "gradients": np.array(gradients), "iterations": nit,
            "restarts": restarts_used, "evaluations": counter["nfev"],
            "infeasible_evaluations": counter["infeasible"],
            "message": str(r.message), "success": bool(r.success),
            "gradient_max": float(np.abs(g).max() / scale), "time": time.perf_counter() - t0}
