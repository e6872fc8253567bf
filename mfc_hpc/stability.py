"""How many layers for how many nodes: the bounds of METHOD.md section 6 (pure numpy).

Two conditions keep the trained network and its discrete density well behaved:

* **Markov / positivity**: the layer map of the density is a non-negative matrix when
  ``dt * max_i r_i <= 2`` with the outflow rate ``r_i = (nu/(h w_i)) sum_j E_ij``
  (the explicit half ``W + dt/2 A`` of the midpoint step is then non-negative and the
  implicit half ``(W - dt/2 A)^{-1}`` always is, being the inverse of an M-matrix).
  With a frozen adjoint slope ``g`` (velocity ``U = |g|``) the tilts are
  ``E_{i,i+-1} = exp(+-U h/(2 nu))`` and ``r = (2 nu/h^2) cosh(Pe/2)``, ``Pe = U h/nu`` the
  cell Peclet number; since ``cosh y <= 1 + |sinh y|`` this is below the simple bound
  ``2 nu/h^2 + |b|/h`` with the drift ``b = (2 nu/h) sinh(Pe/2)``.
* **Monotone layers**: the extracted block ``x -> x + dt U_n(x)`` (``U_n`` the piecewise-linear
  interpolant of the drift ``b``) is invertible iff ``1 + dt (b_{i+1} - b_i)/h > 0`` on every
  cell, i.e. ``dt * max(-d_x U) < 1``.

*A priori* the adjoint is replaced by the terminal condition ``phi_c = -s G_c`` (the loss
gradient bounds the adjoint gradient): for each class the drift, outflow rate and
compression of that frozen adjoint are computed with the scheme's own formulas, and the
largest over classes is used. *A posteriori* the same numbers come from a solution
(:func:`mfc_hpc.diagnostics.diagnostics`). :func:`amplification` is the frozen-coefficient
(von Neumann) factor of the linearised scheme; ``mfc_hpc/docs/stability.md`` derives it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .scheme import BoundaryData, Discretisation, drift, node_weights, outflow_rate

__all__ = ["frozen_rate", "frozen_drift", "symbol", "amplification", "max_amplification",
           "frozen_adjoint_numbers", "a_priori", "a_posteriori", "observed", "min_layers", "max_nodes",
           "MARKOV_LIMIT", "COMPRESSION_LIMIT"]

#: ``dt * max outflow rate`` up to which the midpoint layer map is a Markov kernel
MARKOV_LIMIT = 2.0
#: ``dt * max(-d_x U)`` below which every extracted layer map is monotone
COMPRESSION_LIMIT = 1.0


# ------------------------------------------------------------------------------ frozen coefficients

def frozen_rate(U: float | np.ndarray, h: float | np.ndarray, nu: float) -> np.ndarray:
    """Outflow rate ``(2 nu/h^2) cosh(U h/(2 nu))`` of an interior node under a frozen slope."""
    return 2.0 * nu / h ** 2 * np.cosh(U * h / (2.0 * nu))


def frozen_drift(U: float | np.ndarray, h: float | np.ndarray, nu: float) -> np.ndarray:
    """Drift ``b = (2 nu/h) sinh(U h/(2 nu))`` of the walk under a frozen slope ``U``."""
    return 2.0 * nu / h * np.sinh(U * h / (2.0 * nu))


def symbol(theta: np.ndarray, U: float, h: float, nu: float) -> np.ndarray:
    """Fourier symbol ``lambda(theta)`` of the frozen generator ``W^{-1} A`` acting on ``rho``:
    ``(2 nu/h^2) [cosh y (cos theta - 1) - i sinh y sin theta]``, ``y = U h/(2 nu)``."""
    y = U * h / (2.0 * nu)
    return 2.0 * nu / h ** 2 * (np.cosh(y) * (np.cos(theta) - 1.0) - 1j * np.sinh(y) * np.sin(theta))


def amplification(theta: np.ndarray, dt: float, U: float, h: float, nu: float,
                  scheme: str = "midpoint") -> np.ndarray:
    """Amplification factor ``G(theta)`` of one layer of the linearised density equation.

    Midpoint: ``(1 + dt lambda/2)/(1 - dt lambda/2)``; implicit Euler: ``1/(1 - dt lambda)``.
    The linearised adjoint (backward Kolmogorov equation, solved from ``T`` down) has the
    complex conjugate symbol and the same ``|G|``.
    """
    lam = dt * symbol(theta, U, h, nu)
    if scheme == "midpoint":
        return (1.0 + 0.5 * lam) / (1.0 - 0.5 * lam)
    if scheme == "euler":
        return 1.0 / (1.0 - lam)
    raise ValueError(f"unknown scheme {scheme!r}")


def max_amplification(dt: float, U: float, h: float, nu: float, scheme: str = "midpoint",
                      n: int = 721) -> dict:
    """``max |G|`` over ``theta`` and the sawtooth factor ``G(pi) = (1 - dt r)/(1 + dt r)``."""
    th = np.linspace(0.0, np.pi, n)
    G = amplification(th, dt, U, h, nu, scheme)
    return {"max_abs": float(np.abs(G).max()), "sawtooth": float(G[-1].real)}


# ------------------------------------------------------------------------------ a priori

def frozen_adjoint_numbers(d: Discretisation, bd: BoundaryData) -> dict:
    """Drift, outflow rate and compression of the frozen adjoint ``phi_c = -s G_c``.

    Drift and compression are taken on interior nodes (the frozen adjoint violates the
    no-flux condition at the walls), the outflow rate on all nodes.
    Each class is treated as alone (one class, ``eta = 0``: the tilt of class ``c`` is
    ``exp((phi_{c,j} - phi_{c,i})/(2 nu))``); the shared tilt is a convex combination of the
    class slopes in its exponent, so the rates are bounded by the largest of these.
    Returns per-unit-depth numbers (multiply by ``dt``).
    """
    one = dataclasses.replace(d, K=1, eta=0.0, N=1)
    phi = -bd.scale * bd.G[:, None, :]  # the classes as levels of a one-class problem: [c, 1, i]
    w = node_weights(d.h, d.M)
    rho = np.ones_like(phi)  # unused: one class with eta = 0 never reads rho
    b = drift(rho, phi, one)  # [c, i]
    rate = outflow_rate(rho, phi, w, one)
    # drift and compression on interior nodes only: the frozen adjoint ignores the
    # no-flux condition d_x phi = 0 that flattens the solution's adjoint at the walls,
    # and its one-sided wall drift would be an artefact (the rate keeps the walls)
    b = b[:, 1:-1]
    comp = -(b[:, 1:] - b[:, :-1]) / d.h
    Gx = np.abs(np.diff(bd.G, axis=1)).max() * bd.scale / d.h
    return {"velocity": float(np.abs(b).max(initial=0.0)), "loss_gradient": float(Gx),
            "outflow_rate": float(rate.max()), "compression": float(comp.max(initial=0.0)),
            "cell_peclet": float(Gx * d.h / d.nu)}


def a_priori(d: Discretisation, bd: BoundaryData) -> dict:
    """The a priori verdict for ``(N, M)`` before solving (METHOD.md section 6).

    ``stable`` iff ``dt * rate <= 2`` and ``dt * compression < 1`` for the frozen adjoint.
    Also reports the simple bound ``dt (2 nu/h^2 + U/h)``, the parabolic number
    ``nu dt/h^2``, the cell Peclet number and the frozen-coefficient amplification.
    """
    f = frozen_adjoint_numbers(d, bd)
    dt = d.dt
    markov = dt * f["outflow_rate"]
    comp = dt * f["compression"]
    amp = max_amplification(dt, f["loss_gradient"], d.h, d.nu, d.scheme)
    simple = dt * (2.0 * d.nu / d.h ** 2 + f["velocity"] / d.h)
    return {
        "nodes": d.M, "layers": d.N, "h": d.h, "dt": dt,
        "frozen": f,
        "dt_outflow_rate": markov, "dt_compression": comp,
        "simple_bound": simple, "parabolic": d.nu * dt / d.h ** 2,
        "amplification": amp,
        "markov_ok": bool(markov <= MARKOV_LIMIT), "monotone_ok": bool(comp < COMPRESSION_LIMIT),
        "stable": bool(markov <= MARKOV_LIMIT and comp < COMPRESSION_LIMIT),
    }


def min_layers(d: Discretisation, bd: BoundaryData) -> int | None:
    """Smallest ``N`` with an a priori stable verdict on the configuration's ``M`` nodes;
    ``None`` when the frozen rates overflow or ask for more than 1e9 layers (tilts ``E``
    beyond reason: no practical number of layers helps on this node mesh)."""
    f = frozen_adjoint_numbers(d, bd)
    need = max(d.T * f["outflow_rate"] / MARKOV_LIMIT, d.T * f["compression"] / COMPRESSION_LIMIT)
    if not np.isfinite(need) or need > 1e9:  # beyond any network anyone would build
        return None
    n_markov = int(np.ceil(d.T * f["outflow_rate"] / MARKOV_LIMIT - 1e-12))
    n_comp = int(np.floor(d.T * f["compression"] / COMPRESSION_LIMIT + 1e-12)) + 1
    return max(1, n_markov, n_comp)


def max_nodes(d: Discretisation, bd_of_M, M_cap: int = 1 << 14, samples: int = 48) -> int | None:
    """Largest ``M <= M_cap`` with an a priori stable verdict for the configuration's ``N``.

    ``bd_of_M(M)`` gives the boundary data on ``M`` nodes. The frozen rate
    ``(2 nu/h^2) cosh(U h/(2 nu))`` is not monotone in ``h`` (large on coarse meshes too,
    where the tilts ``E`` blow up), so the stable node counts form an interval: ``M`` is
    sampled geometrically on ``[3, M_cap]`` and the upper end refined by bisection.
    ``None`` if no sampled ``M`` is stable.
    """
    def ok(M: int) -> bool:
        return a_priori(dataclasses.replace(d, M=M), bd_of_M(M))["stable"]

    cand = np.unique(np.geomspace(3, M_cap, samples).astype(int))
    good = [bool(ok(int(m))) for m in cand]
    if not any(good):
        return None
    k = max(i for i, g in enumerate(good) if g)
    if k == cand.size - 1:
        return int(cand[k])
    lo, hi = int(cand[k]), int(cand[k + 1])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


# ------------------------------------------------------------------------------ a posteriori

def a_posteriori(diag: dict) -> dict:
    """The same conditions on a solution's diagnostics (``dt_max_outflow_rate``, ``dt_max_compression``)."""
    m = diag["dt_max_outflow_rate"]
    c = diag["dt_max_compression"]
    return {"dt_outflow_rate": m, "dt_compression": c,
            "markov_ok": bool(m <= MARKOV_LIMIT), "monotone_ok": bool(c < COMPRESSION_LIMIT),
            "stable": bool(m <= MARKOV_LIMIT and c < COMPRESSION_LIMIT)}


def observed(converged: bool, diag: dict | None, max_density: float,
             positivity_tol: float = 1e-8) -> dict:
    """What a run shows: Newton converged, densities non-negative (down to
    ``-positivity_tol * max rho``, the accuracy of the solve) and every layer map monotone."""
    if not converged or diag is None:
        return {"converged": bool(converged), "positive": None, "monotone": None, "stable": False}
    pos = bool(diag["min_density"] >= -positivity_tol * max_density)
    mono = bool(diag["dt_max_compression"] < COMPRESSION_LIMIT)
    return {"converged": True, "positive": pos, "monotone": mono, "stable": pos and mono}
