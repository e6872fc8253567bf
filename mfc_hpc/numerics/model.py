"""Model constants of one discrete optimality system: the grid, depth, noise, decay, ``F``.

Names follow METHOD.md: ``K`` classes on a :class:`~mfc_hpc.numerics.grid.StateGrid`,
``N`` layers ``t_n = n dt`` with ``dt = T/N``, noise ``nu``, weight decay ``eta``, running
cost ``F`` and the depth scheme (:data:`SCHEMES`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grid import StateGrid

__all__ = ["SCHEMES", "RunningCost", "Discretisation"]

#: Depth-time schemes: ``(theta_rho, theta_phi)``; density rows take ``dH/dphi`` at
#: ``(1-theta_rho) z^n + theta_rho z^{n+1}``, adjoint rows ``dH/drho`` at
#: ``(1-theta_phi) z^n + theta_phi z^{n+1}``. The one table of scheme names.
SCHEMES: dict[str, tuple[float, float]] = {
    "midpoint": (0.5, 0.5),  # symplectic (default)
    "euler": (1.0, 0.0),  # implicit Euler in each equation's own direction (not symplectic)
}

#: running costs ``F``: the one table of their names
RUNNING_COSTS = ("none", "congestion")


@dataclass(frozen=True)
class RunningCost:
    """Mean-field running cost ``F(rho)`` of the total density ``rho = sum_c rho_c``.

    ``kind = "none"``: ``F = 0``; ``kind = "congestion"``: ``F = kappa/2 rho^2``.
    """

    kind: str = "none"
    kappa: float = 0.0

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.kappa != 0.0

    def F(self, r: np.ndarray) -> np.ndarray:
        return 0.5 * self.kappa * r * r if self.active else np.zeros_like(r)

    def dF(self, r: np.ndarray) -> np.ndarray:
        return self.kappa * r if self.active else np.zeros_like(r)

    def d2F(self, r: np.ndarray) -> np.ndarray:
        return np.full_like(r, self.kappa) if self.active else np.zeros_like(r)


@dataclass(frozen=True)
class Discretisation:
    """Sizes and constants of one discrete optimality system (METHOD.md 4, 8).

    ``grid`` the state nodes, ``K`` classes, ``N`` layers over depth ``T``; ``nu`` noise,
    ``eta`` weight decay, ``running`` the cost ``F``, ``scheme`` a key of :data:`SCHEMES`.
    Unknowns: ``2K (N+1) prod_k M_k``.
    """

    grid: StateGrid
    K: int
    N: int
    T: float
    nu: float
    eta: float
    running: RunningCost = field(default_factory=RunningCost)
    scheme: str = "midpoint"

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def dt(self) -> float:
        return self.T / self.N

    @property
    def t(self) -> np.ndarray:
        return self.dt * np.arange(self.N + 1)

    @property
    def thetas(self) -> tuple[float, float]:
        return SCHEMES[self.scheme]

    @property
    def unit_fraction(self) -> bool:
        """One class and ``eta = 0``: ``rho_c / R = 1`` exactly (never divide)."""
        return self.K == 1 and self.eta == 0.0

    @property
    def unknowns(self) -> int:
        return 2 * self.K * (self.N + 1) * self.grid.size

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of a whole state ``Z[n, *i, a]``."""
        return (self.N + 1,) + self.grid.nodes + (2 * self.K,)
