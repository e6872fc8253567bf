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

__all__ = ["STEP_CAPS", "step_cap", "NewtonResult", "reference_newton"]

#: what a Newton step must keep positive: ``"total"`` ``R = sum_c rho_c + eta`` (the
#: default, METHOD.md 8) or ``"classes"`` every class density (the rule of the 1-D
#: releases before the d-dimensional core, kept to reproduce their runs)
STEP_CAPS = ("total", "classes")


def step_cap(Z: np.ndarray, dZ: np.ndarray, d: Discretisation, positivity: float, rule: str = "total") -> float:
    """The largest ``a <= 1`` such that ``Z - a dZ`` keeps what ``rule`` protects above
    ``(1 - positivity)`` of its value at every node and level of the block ``Z[..., a]``.

    ``"total"``: ``R = sum_c rho_c + eta``, what the scheme divides by (METHOD.md 7, 8);
    keeping it positive at every level keeps ``R^{n+1/2}`` positive. Nodal class
    densities are then not protected: the exact discrete density may be slightly negative
    in far tails (METHOD.md 8), and a nodal cap stalls Newton there. ``"classes"``: every
    positive class density (the earlier rule). Nothing is capped for one class with
    ``eta = 0``, where the scheme never divides (``A/R = phi_j - phi_i``).
    """
    if d.unit_fraction:
        return 1.0
    K = d.K
    if rule == "classes":
        R, dR = Z[..., :K], dZ[..., :K]
    else:
        R = Z[..., :K].sum(axis=-1) + d.eta
        dR = dZ[..., :K].sum(axis=-1)
    grow = (dR > 0) & (R > 0)
    if not grow.any():
        return 1.0
    return min(1.0, float((positivity * R[grow] / dR[grow]).min()))


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
                     backtrack: bool = True, verbose: bool = False, rule: str = "total") -> NewtonResult:
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
        a = step_cap(Z, dz, d, positivity, rule)
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
