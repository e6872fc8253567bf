"""The serial reference: Newton on the whole mesh with the same slab kernels as the
parallel solver (:func:`~mfc_hpc.numerics.depth.serial_residual`,
:func:`~mfc_hpc.numerics.depth.serial_jacobian`) and a sparse direct solve.

It checks the parallel solver and serves the studies on small meshes; the production
path is :class:`mfc_hpc.parallel.snes.MeshSolver`. Both cap a step with
:func:`step_cap`, the one rule for what a Newton step must keep positive.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .depth import serial_jacobian, serial_residual
from .model import Discretisation
from .terminal import BoundaryData

__all__ = ["STEP_CAPS", "TAIL", "tail_thresholds", "step_cap", "NewtonResult", "reference_newton"]

#: what a Newton step must keep positive (``solver.step_cap``): ``"bulk"`` (default) ``R =
#: sum_c rho_c + eta`` everywhere and every class density above :data:`TAIL` of its maximum;
#: ``"total"`` ``R`` alone; ``"classes"`` every positive class density (the rule of the 1-D
#: releases)
STEP_CAPS = ("bulk", "total", "classes")
#: class densities below this fraction of their maximum are tails a Newton step may take
#: through zero (METHOD.md 8: the exact discrete density is slightly negative in far tails)
TAIL = 1e-8


def tail_thresholds(Z: np.ndarray, K: int, reduce_max=None) -> np.ndarray:
    """``TAIL * max rho_c`` per class (``reduce_max``: a global max over ranks)."""
    m = np.array([Z[..., c].max() if Z.size else 0.0 for c in range(K)])
    if reduce_max is not None:
        m = np.array([reduce_max(v) for v in m])
    return TAIL * np.maximum(m, 0.0)


def step_cap(Z: np.ndarray, dZ: np.ndarray, d: Discretisation, positivity: float, rule: str = "bulk",
             tails: np.ndarray | None = None) -> float:
    """The largest ``a <= 1`` such that ``Z - a dZ`` keeps what ``rule`` protects above
    ``(1 - positivity)`` of its value at every node and level of the block ``Z[..., a]``.

    ``R = sum_c rho_c + eta`` is what the scheme divides by (METHOD.md 7, 8); keeping it
    positive at every level keeps ``R^{n+1/2}`` positive. ``"bulk"`` also keeps every class
    density above ``tails[c]`` (:func:`tail_thresholds`, from the whole state) from crossing
    zero: a step that would send the bulk of a class negative is shortened (Newton then
    stalls quickly and continuation takes over, instead of creeping at the line search's
    smallest step), while far tails may go slightly negative, as the exact discrete density
    of METHOD.md 8 does (a nodal cap on them stalls Newton). ``"total"``: ``R`` alone;
    ``"classes"``: every positive class density (the 1-D releases' rule). Nothing is capped
    for one class with ``eta = 0``, where the scheme never divides.
    """
    if d.unit_fraction:
        return 1.0
    K = d.K
    rho, drho = Z[..., :K], dZ[..., :K]
    R = rho.sum(axis=-1) + d.eta
    dR = drho.sum(axis=-1)
    a = 1.0
    if rule in ("bulk", "total"):
        grow = (dR > 0) & (R > 0)
        if grow.any():
            a = min(a, float((positivity * R[grow] / dR[grow]).min()))
    if rule in ("bulk", "classes"):
        cut = np.zeros(K) if rule == "classes" or tails is None else np.asarray(tails)
        grow = (drho > 0) & (rho > cut)
        if grow.any():
            a = min(a, float((positivity * rho[grow] / drho[grow]).min()))
    return a


@dataclass
class NewtonResult:
    """A serial Newton solve: the state ``Z[n, *i, a]`` and how it went."""

    Z: np.ndarray
    converged: bool
    iterations: int
    residual: float  # final |F| relative to |F(0)|
    history: list[float] = field(default_factory=list)
    time: float = 0.0


def reference_newton(d: Discretisation, bd: BoundaryData, Z0: np.ndarray | None = None, *,
                     rtol: float = 1e-11, atol: float = 0.0, max_it: int = 40, positivity: float = 0.9,
                     backtrack: bool = True, verbose: bool = False, rule: str = "bulk") -> NewtonResult:
    """Newton with the exact Jacobian and a sparse LU (serial reference).

    From ``Z = 0`` the first Newton step is the uncontrolled flow (the Jacobian at ``z = 0``
    is the plain walk and the discrete heat operator). Steps are capped by
    :func:`step_cap` and, with ``backtrack``, halved until the residual norm decreases.
    Converged when ``|F| <= max(rtol |F(Z0)|, atol |F(0)|)`` (2-norms; ``|F(0)|`` is the
    size of the boundary data, as in the parallel solver).
    """
    import scipy.sparse.linalg as spla

    t0 = time.perf_counter()
    shape = d.state_shape
    Z = np.zeros(shape) if Z0 is None else np.array(Z0, dtype=float)
    f0 = float(np.linalg.norm(serial_residual(np.zeros(shape), d, bd))) or 1.0
    F = serial_residual(Z, d, bd)
    f = float(np.linalg.norm(F))
    hist = [f]
    tol = max(rtol * (f if Z0 is not None else f0), atol * f0)
    it = 0
    while f > tol and it < max_it:
        J = serial_jacobian(Z, d, bd).tocsc()
        dz = spla.splu(J).solve(F.ravel()).reshape(shape)
        a = step_cap(Z, dz, d, positivity, rule, tail_thresholds(Z, d.K))
        for _ in range(30 if backtrack else 1):
            Zt = Z - a * dz
            Ft = serial_residual(Zt, d, bd)
            ft = float(np.linalg.norm(Ft))
            if not backtrack or (np.isfinite(ft) and ft < f):
                break
            a *= 0.5
        else:
            return NewtonResult(Z, False, it, f / f0, hist, time.perf_counter() - t0)
        Z, F, f = Zt, Ft, ft
        it += 1
        hist.append(f)
        if verbose:
            print(f"  newton {it:2d} |F| {f:.3e} step {a:.3f} {time.perf_counter() - t0:.1f}s", flush=True)
        if not np.isfinite(f):
            break
    return NewtonResult(Z, bool(f <= tol), it, f / f0, hist, time.perf_counter() - t0)
