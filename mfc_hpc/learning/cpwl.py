"""Continuous piecewise-linear (CPWL) functions on the state grid: the interpolant of the
exported network's blocks (numpy only).

A nodal field ``V[..., *i]`` on the grid of :class:`~mfc_hpc.numerics.grid.StateGrid`
(nodes ``x_i``, spacing ``h_k``, box ``prod_k [x_{L,k}, x_{R,k}]``) is interpolated
piecewise-linearly on the *Kuhn triangulation*: ``d = 1`` the cells ``[x_i, x_{i+1}]``;
``d = 2`` each cell ``(i, i+e_1, i+e_2, i+e_1+e_2)`` split along its diagonal
``i -> i+e_1+e_2`` into the triangles ``(i, i+e_1, i+e_1+e_2)`` (local coordinates
``t_1 >= t_2``) and ``(i, i+e_2, i+e_1+e_2)`` (``t_2 > t_1``) -- the same simplices as
:func:`mfc_hpc.numerics.quantities.cell_det_excess`, so the invertibility bound of METHOD.md
section 8 is exact for this interpolant. Outside the box the value is that at the nearest
point of the box (``x`` clipped per axis): the function is constant along the outward
normals.

With ``t = (x - x_i)/h`` in the cell of ``x``, the barycentric weights are
``(1 - t_1, t_1)`` in 1-D and, in 2-D, ``(1 - t_1, t_1 - t_2, t_2)`` on
``(i, i+e_1, i+e_1+e_2)`` or ``(1 - t_2, t_2 - t_1, t_1)`` on ``(i, i+e_2, i+e_1+e_2)``.

**A CPWL function is a ReLU network.** The interpolant is ``sum_g V_g phi_g(x)`` with the
hat functions of the triangulation, and each hat is a small ReLU network of the clipped
input: with ``(u, v) = (x - x_g) / h`` (per axis),

    d = 1:  phi_g = relu(1 - relu(u) - relu(-u))
    d = 2:  phi_g = relu(1 - max(u, v, 0) + min(u, v, 0))
                  = relu(1 - relu(v + relu(u - v)) - relu(relu(v - u) - v))

(:func:`hat_relu`): three hidden ReLU layers with skip connections from the input, whose
weights are fixed by the node positions, and an output layer whose weights are the nodal
values ``V_g``. That is the form of the ONNX export (:mod:`mfc_hpc.learning.onnx_export`);
the package evaluates the same function by locating the simplex (:func:`interpolate`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Simplices", "locate", "interpolate", "interpolate_with_gradient", "scatter_weights", "grid_simplices",
           "sample_simplicial_density", "simplex_cover",
           "hat_relu", "clip_to_box"]


def clip_to_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``x[s, d]`` clipped per axis to ``[lower_k, upper_k]``."""
    return np.minimum(np.maximum(x, lower), upper)


@dataclass(frozen=True)
class Simplices:
    """Where samples ``x[s, d]`` lie: flat node indices ``corner[s, d+1]`` of their simplex,
    barycentric weights ``weight[s, d+1]``, the local coordinates ``t[s, d]`` in their cell
    and which triangle (``upper[s]``: ``t_2 > t_1``, 2-D only); ``inside[s, d]`` whether
    ``x_k`` lay in ``[x_{L,k}, x_{R,k}]`` (the clipped axes have zero derivative)."""

    corner: np.ndarray
    weight: np.ndarray
    t: np.ndarray
    upper: np.ndarray
    inside: np.ndarray
    cell: np.ndarray


def locate(x: np.ndarray, lower, h, nodes) -> Simplices:
    """The simplex of the Kuhn triangulation holding each clipped sample ``x[s, d]``."""
    x = np.asarray(x, dtype=float)
    lo, hv = np.asarray(lower, dtype=float), np.asarray(h, dtype=float)
    M = np.asarray(nodes, dtype=int)
    d = M.size
    hi = lo + hv * (M - 1)
    inside = (x >= lo) & (x <= hi)
    xc = clip_to_box(x, lo, hi)
    r = (xc - lo) / hv
    cell = np.clip(np.floor(r).astype(np.int64), 0, M - 2)
    t = np.clip(r - cell, 0.0, 1.0)
    if d == 1:
        i = cell[:, 0]
        corner = np.stack([i, i + 1], axis=1)
        weight = np.stack([1.0 - t[:, 0], t[:, 0]], axis=1)
        return Simplices(corner, weight, t, np.zeros(x.shape[0], dtype=bool), inside, cell)
    if d != 2:
        raise NotImplementedError("cpwl: d = 1 or 2")
    stride = M[1]
    base = cell[:, 0] * stride + cell[:, 1]
    up = t[:, 1] > t[:, 0]
    t1, t2 = t[:, 0], t[:, 1]
    mid = np.where(up, base + 1, base + stride)  # i + e_2 or i + e_1
    corner = np.stack([base, mid, base + stride + 1], axis=1)
    weight = np.where(up[:, None], np.stack([1.0 - t2, t2 - t1, t1], axis=1),
                      np.stack([1.0 - t1, t1 - t2, t2], axis=1))
    return Simplices(corner, weight, t, up, inside, cell)


def interpolate(V: np.ndarray, s: Simplices) -> np.ndarray:
    """``V[..., *i]`` interpolated at the located samples: ``[..., s]``."""
    lead = V.shape[:V.ndim - (s.corner.shape[1] - 1)]
    Vf = V.reshape(lead + (-1,))
    return (Vf[..., s.corner] * s.weight).sum(axis=-1)


def interpolate_with_gradient(V: np.ndarray, s: Simplices, h) -> tuple[np.ndarray, np.ndarray]:
    """The interpolant ``[..., s]`` and its gradient in ``x`` ``[..., s, d]`` (constant on
    each simplex; zero along clipped axes)."""
    d = s.corner.shape[1] - 1
    lead = V.shape[:V.ndim - d]
    Vf = V.reshape(lead + (-1,))
    Vc = Vf[..., s.corner]  # [..., s, d+1]
    val = (Vc * s.weight).sum(axis=-1)
    hv = np.asarray(h, dtype=float)
    if d == 1:
        g = ((Vc[..., 1] - Vc[..., 0]) / hv[0])[..., None]
    else:
        # lower triangle (i, i+e1, i+e1+e2): d/dt1 = V(i+e1) - V(i), d/dt2 = V(i+e1+e2) - V(i+e1);
        # upper (i, i+e2, i+e1+e2): d/dt2 = V(i+e2) - V(i), d/dt1 = V(i+e1+e2) - V(i+e2)
        a = Vc[..., 1] - Vc[..., 0]
        b = Vc[..., 2] - Vc[..., 1]
        g1 = np.where(s.upper, b, a) / hv[0]
        g2 = np.where(s.upper, a, b) / hv[1]
        g = np.stack([g1, g2], axis=-1)
    return val, g * s.inside


def scatter_weights(s: Simplices, coef: np.ndarray, size: int) -> np.ndarray:
    """``sum_s coef[..., s] weight[s, j]`` gathered on the nodes: the gradient of
    ``sum_s coef_s U(x_s)`` with respect to the nodal values, ``[..., size]`` (flat nodes)."""
    coef = np.asarray(coef, dtype=float)
    lead = coef.shape[:-1]
    c2 = coef.reshape(-1, coef.shape[-1])
    out = np.zeros((c2.shape[0], size))
    idx = s.corner.ravel()
    for r in range(c2.shape[0]):
        out[r] = np.bincount(idx, weights=(c2[r][:, None] * s.weight).ravel(), minlength=size)
    return out.reshape(lead + (size,))


def hat_relu(x: np.ndarray, centres: np.ndarray, h) -> np.ndarray:
    """Hat functions ``phi_g(x)`` ``[s, G]`` of nodes ``centres[G, d]`` in the ReLU form of
    the module docstring, for samples ``x[s, d]`` already clipped to the box."""
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    hv = np.asarray(h, dtype=float)
    P = (x[:, None, :] - centres[None, :, :]) / hv  # [s, G, d]
    if centres.shape[1] == 1:
        u = P[..., 0]
        return relu(1.0 - relu(u) - relu(-u))
    u, v = P[..., 0], P[..., 1]
    return relu(1.0 - relu(v + relu(u - v)) - relu(relu(v - u) - v))


def grid_simplices(nodes) -> np.ndarray:
    """Flat node indices ``[T, d+1]`` of every simplex of the Kuhn triangulation, in the
    order of :func:`mfc_hpc.numerics.quantities.cell_det_excess` (1-D: cell ``i``; 2-D: cell
    ``(i_1, i_2)`` in C order, then the triangle ``(i, i+e_1, i+e_1+e_2)`` and
    ``(i, i+e_2, i+e_1+e_2)``)."""
    M = tuple(int(m) for m in nodes)
    if len(M) == 1:
        i = np.arange(M[0] - 1)
        return np.stack([i, i + 1], axis=1)
    if len(M) != 2:
        raise NotImplementedError("cpwl: d = 1 or 2")
    i1, i2 = np.meshgrid(np.arange(M[0] - 1), np.arange(M[1] - 1), indexing="ij")
    base = (i1 * M[1] + i2).ravel()
    lower = np.stack([base, base + M[1], base + M[1] + 1], axis=1)
    upper = np.stack([base, base + 1, base + M[1] + 1], axis=1)
    return np.stack([lower, upper], axis=1).reshape(-1, 3)


def sample_simplicial_density(points: np.ndarray, p: np.ndarray, simplices: np.ndarray, n: int,
                              rng: np.random.Generator) -> np.ndarray:
    """``n`` samples ``[n, d]`` of the density that is linear on every simplex with nodal
    values ``p`` (flat; negative values count as 0) at ``points[G, d]``: a simplex by its
    mass (volume times the mean of its vertex values), then a vertex ``j`` with probability
    ``p_j / sum(p)`` on it and barycentric coordinates from the Dirichlet law with
    parameter 2 at ``j`` and 1 elsewhere (exact: the density ``sum_j p_j lambda_j`` is
    that mixture of the uniform law reweighted by ``lambda_j``)."""
    p = np.maximum(np.asarray(p, dtype=float).ravel(), 0.0)
    V = points[simplices]  # [T, d+1, d]
    E = V[:, 1:] - V[:, :1]
    vol = np.abs(np.linalg.det(E)) if E.shape[-1] > 1 else np.abs(E[:, 0, 0])
    pv = p[simplices]  # [T, d+1]
    mass = vol * pv.mean(axis=1)
    k = rng.choice(mass.size, size=n, p=mass / mass.sum())
    q = pv[k]
    tot = q.sum(axis=1, keepdims=True)
    cum = np.cumsum(q / tot, axis=1)
    j = np.minimum((rng.random((n, 1)) > cum).sum(axis=1), q.shape[1] - 1)
    alpha = np.ones((n, q.shape[1]))
    alpha[np.arange(n), j] = 2.0
    g = rng.standard_gamma(alpha)
    lam = g / g.sum(axis=1, keepdims=True)
    return np.einsum("sv,svd->sd", lam, V[k])


def simplex_cover(vertices: np.ndarray, y: np.ndarray, tol: float = 1e-12, chunk: int = 1 << 22
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which simplices ``vertices[T, d+1, d]`` contain each point ``y[Q, d]`` (barycentric
    coordinates all ``>= -tol``; degenerate simplices are skipped): the number of them
    ``count[Q]``, the first ``first[Q]`` (-1 if none) and the point's barycentric
    coordinates ``lam[Q, d+1]`` in it. Brute force over all simplices, ``O(T Q)``."""
    V = np.asarray(vertices, dtype=float)
    y = np.asarray(y, dtype=float).reshape(len(y), -1)
    T, _, d = V.shape
    E = np.transpose(V[:, 1:] - V[:, :1], (0, 2, 1))  # [T, d, d]: columns are the edges
    det = np.linalg.det(E) if d > 1 else E[:, 0, 0]
    ok = np.abs(det) > 1e-300
    Einv = np.zeros_like(E)
    Einv[ok] = np.linalg.inv(E[ok])
    count = np.zeros(len(y), dtype=int)
    first = np.full(len(y), -1)
    lam = np.full((len(y), d + 1), np.nan)
    step = max(1, chunk // max(T, 1))
    for a in range(0, len(y), step):
        q = y[a:a + step]  # [q, d]
        r = np.einsum("tij,tqj->tqi", Einv, q[None, :, :] - V[:, None, 0, :])  # [T, q, d]
        L = np.concatenate([1.0 - r.sum(axis=-1, keepdims=True), r], axis=-1)  # [T, q, d+1]
        inside = np.all(L >= -tol, axis=-1) & ok[:, None]
        count[a:a + step] = inside.sum(axis=0)
        has = inside.any(axis=0)
        f = np.argmax(inside, axis=0)
        first[a:a + step] = np.where(has, f, -1)
        lam[a:a + step][has] = L[f[has], np.flatnonzero(has)]
    return count, first, lam
