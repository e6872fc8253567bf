"""The closed-form case of METHOD.md section 5, and the errors of a discrete solution
against it.

One class, ``F = 0``, Gaussian data ``N(mu0, s0)``, quadratic loss
``G = alpha/2 (x - m)^2``; with ``D(t) = 1 + alpha (T - t)``:
``u = -alpha/D (x - m)``, ``rho(t) = N(mu(t), s(t))``,
``mu(t) - m = (mu0 - m) D/D(0)``, ``s(t) = s0 (D/D(0))^2 + (2 nu/alpha) D (1 - D/D(0))``.
"""
from __future__ import annotations

import numpy as np

from .config import Config, ConfigError
from .scheme import Discretisation, _layers, _split, drift, node_weights

__all__ = ["ClosedForm", "closed_form_errors"]


class ClosedForm:
    """Density and velocity of the closed-form solution for a configuration."""

    def __init__(self, cfg: Config) -> None:
        if cfg.K != 1 or cfg.loss.kind != "quadratic" or cfg.model.running != "none" \
                or cfg.classes[0].mean is None or cfg.model.eta != 0.0:
            raise ConfigError("closed form: needs one Gaussian class, eta = 0, F = 0 and the quadratic loss")
        self.nu, self.alpha, self.m = cfg.model.nu, cfg.loss.alpha, cfg.loss.target
        self.mu0, self.s0, self.T = cfg.classes[0].mean, cfg.classes[0].var, cfg.mesh.depth

    def _D(self, t):
        return 1.0 + self.alpha * (self.T - t)

    def density(self, t: float, x: np.ndarray) -> np.ndarray:
        D, D0 = self._D(t), self._D(0.0)
        mu = self.m + (self.mu0 - self.m) * D / D0
        s = self.s0 * (D / D0) ** 2 + 2.0 * self.nu / self.alpha * D * (1.0 - D / D0)
        return np.exp(-(x - mu) ** 2 / (2.0 * s)) / np.sqrt(2.0 * np.pi * s)

    def velocity(self, t: float, x: np.ndarray) -> np.ndarray:
        return -self.alpha / self._D(t) * (x - self.m)


def closed_form_errors(Z: np.ndarray, d: Discretisation, cf: ClosedForm) -> dict:
    """Errors of a solution ``Z[n, i, a]``: max over levels of the L1 density error
    ``sum_i w_i |rho^n_i - rho(t_n, x_i)|``, and the rho-weighted L2 error of the drift
    ``b^{n+1/2}`` against ``u(t_{n+1/2}, x_i)`` over depth-time."""
    w = node_weights(d.h, d.M)
    x, t = d.x, d.t
    exact = np.array([cf.density(tn, x) for tn in t])
    e_rho = float((w * np.abs(Z[..., 0] - exact)).sum(axis=1).max())
    rm, pm = _split(_layers(Z, 0.5), 1)
    b = drift(rm, pm, d)
    u = np.array([cf.velocity(tm, x) for tm in t[:-1] + 0.5 * d.dt])
    e_u = float(np.sqrt((d.dt * w * rm[:, 0] * (b - u) ** 2).sum()))
    return {"density_L1": e_rho, "velocity_L2_rho": e_u}
