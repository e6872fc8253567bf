"""The closed-form case of METHOD.md sections 5 and 8, and a discrete solution's errors.

One class, ``F = 0``, ``eta = 0``, product Gaussian data ``prod_k N(mu0_k, s0_k)`` and the
loss ``G = alpha/2 |x - m|^2``; with ``D(t) = 1 + alpha (T - t)``, axis by axis:
``u = -alpha/D (x - m)``, ``mu_k(t) - m_k = (mu0_k - m_k) D/D(0)``,
``s_k(t) = s0_k (D/D(0))^2 + (2 nu/alpha) D (1 - D/D(0))`` and
``phi = -alpha/(2D) |x - m|^2 - d nu log D``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .depth import layers, split
from .grid import BoxGeometry
from .model import Discretisation
from .quantities import drift

__all__ = ["ClosedForm", "closed_form_errors"]


@dataclass(frozen=True)
class ClosedForm:
    """Density, velocity and adjoint of the closed-form solution (one entry per axis in
    ``m``, ``mu0``, ``s0``)."""

    nu: float
    alpha: float
    T: float
    m: tuple[float, ...]
    mu0: tuple[float, ...]
    s0: tuple[float, ...]

    def _D(self, t: float) -> float:
        return 1.0 + self.alpha * (self.T - t)

    def moments(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-axis mean and variance at depth ``t``."""
        D, D0 = self._D(t), self._D(0.0)
        m, mu0, s0 = (np.asarray(v, dtype=float) for v in (self.m, self.mu0, self.s0))
        return m + (mu0 - m) * D / D0, s0 * (D / D0) ** 2 + 2.0 * self.nu / self.alpha * D * (1.0 - D / D0)

    def density(self, t: float, x: np.ndarray) -> np.ndarray:
        """``rho(t, x)`` at points ``x[..., d]``."""
        mu, s = self.moments(t)
        x = np.asarray(x, dtype=float)
        return np.prod(np.exp(-(x - mu) ** 2 / (2.0 * s)) / np.sqrt(2.0 * np.pi * s), axis=-1)

    def velocity(self, t: float, x: np.ndarray) -> np.ndarray:
        """``u(t, x)`` at points ``x[..., d]``, ``[..., d]``."""
        return -self.alpha / self._D(t) * (np.asarray(x, dtype=float) - np.asarray(self.m))

    def adjoint(self, t: float, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        D = self._D(t)
        return -self.alpha / (2.0 * D) * ((x - np.asarray(self.m)) ** 2).sum(axis=-1) - len(self.m) * self.nu * np.log(D)


def closed_form_errors(Z: np.ndarray, d: Discretisation, cf: ClosedForm) -> dict:
    """Errors of a solution ``Z[n, *i, a]``: the max over levels of the L1 density error
    ``sum_i w_i |rho^n_i - rho(t_n, x_i)|``, and the rho-weighted L2 error of the drift
    ``b^{n+1/2}`` against ``u(t_{n+1/2}, x_i)`` over depth-time."""
    g = d.grid
    geom = BoxGeometry(g, (0,) * g.ndim, g.nodes)
    w, x, t = geom.w, g.points(), d.t
    exact = np.array([cf.density(tn, x) for tn in t])
    err = np.abs(Z[..., 0] - exact) * w
    e_rho = float(err.reshape(err.shape[0], -1).sum(axis=1).max())
    rm, pm = split(layers(Z, 0.5), 1)
    b = np.moveaxis(drift(rm, pm, geom, d), 1, -1)  # [l, *i, d]
    u = np.array([cf.velocity(tm, x) for tm in t[:-1] + 0.5 * d.dt])
    e_u = float(np.sqrt((d.dt * w * rm[:, 0] * ((b - u) ** 2).sum(axis=-1)).sum()))
    return {"density_L1": e_rho, "velocity_L2_rho": e_u}
