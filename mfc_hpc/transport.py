"""Transport (generative use): move the data density to a target density ``q``.

Two terminal conditions replace the fixed loss of METHOD.md section 2; both are
:class:`~mfc_hpc.scheme.BoundaryData` subclasses, so the scheme, the solver, the
continuation and the diagnostics are unchanged.

**KL terminal cost** (:class:`KLTerminal`): the mean-field terminal cost
``gamma * KL(rho^N_c | q_c)`` per class, ``q_c`` of the class mass ``pi_c``:

    G[rho^N] = gamma sum_c sum_i w_i rho^N_{c,i} log(rho^N_{c,i} / q_{c,i}),
    phi^N_{c,i} = -dG/d(w_i rho^N_{c,i}) = -gamma (log(rho^N_{c,i} / q_{c,i}) + 1),
    d phi^N_{c,i} / d rho^N_{d,i} = -gamma delta_cd / rho^N_{c,i}.

The loss weight ``s`` of the continuation multiplies ``gamma`` (``s = 0``: the
uncontrolled flow).

**Schroedinger bridge** (:class:`BridgeTerminal`): the hard limit ``rho^N_c = q_c``. The
unknowns stay the same; the terminal equations in the adjoint slots of level ``N``
become ``w_i (rho^N_{c,i} - q_{c,i}) = 0``. The density equations conserve mass
(``sum_i w_i rho^N_c = sum_i w_i rho^0_c = pi_c`` exactly), so with ``q_c`` of mass
``pi_c`` one of these equations per class is redundant, and ``phi_c`` is defined up to an
additive constant (the scheme sees only differences ``phi_{c,j} - phi_{c,i}`` within a
level and ``phi^{n+1}_c - phi^n_c`` between levels, so ``phi_c + C_c`` at every level
solves the same equations). The redundant equation at the *gauge node* ``g = 0`` is
replaced by ``w_g phi^N_{c,g} = 0``: this fixes the same constant as the documented gauge
``sum_i w_i phi^N_{c,i} = 0`` (both select one member of the family ``phi_c + C_c``; they
differ by the constant ``C_c = -sum_i w_i phi^N_{c,i} / sum_i w_i``), and, unlike the sum,
it touches one node of level ``N`` only, so it fits the box stencil and the distributed
Jacobian pattern. :func:`apply_gauge` shifts a solution to the documented gauge
afterwards. Mass conservation then gives ``rho^N_{c,g} = q_{c,g}`` too, to round-off.

*Continuation for the bridge.* Its loss weight ``s in [0, 1]`` blends the fixed-loss row
(with ``G = 0``) into the bridge row:

    w_i [ (1 - s) phi^N_{c,i} + s (rho^N_{c,i} - q_{c,i}) ] = 0     (i != g),
    w_g phi^N_{c,g} = 0.

At ``s = 0`` this is ``phi^N = 0``: the uncontrolled flow (``phi = 0``, the data diffused)
is the exact solution and exactly what ``MeshSolver.uncontrolled_guess`` computes (its
matrix uses the rows ``w_i phi^N``). For ``0 < s < 1`` it is the optimality system of the
quadratic penalty ``G = lambda/2 sum_{i != g} w_i (rho^N_{c,i} - q_{c,i})^2`` with
``lambda = s/(1 - s)`` (``phi^N_{c,i} = -lambda (rho^N_{c,i} - q_{c,i})``, ``phi^N_{c,g} = 0``),
a penalty whose weight grows to infinity as ``s -> 1``, where the rows become the bridge.
The residual is linear in ``s``, so the continuation's finite-difference tangent is exact.
"""
from __future__ import annotations

import numpy as np

from .scheme import BoundaryData

__all__ = ["KLTerminal", "BridgeTerminal", "apply_gauge", "gaussian_bridge", "kl_divergence"]

_TINY = 1e-300
#: the bridge rows use ``log(rho/q)`` for ``rho >= LOG_CUT q`` and its tangent line below
LOG_CUT = 1e-3


class KLTerminal(BoundaryData):
    """Terminal cost ``gamma KL(rho^N_c | q_c)`` per class; ``target[c, i] = q_{c,i}``."""

    def __init__(self, rho0: np.ndarray, target: np.ndarray, gamma: float = 1.0, scale: float = 1.0) -> None:
        rho0 = np.asarray(rho0, dtype=float)
        super().__init__(rho0, np.zeros_like(rho0), scale)
        self.target = np.asarray(target, dtype=float)
        if self.target.shape != rho0.shape or np.any(self.target <= 0):
            raise ValueError("KLTerminal: target must be positive with the shape of rho0 [c, i]")
        self.gamma = float(gamma)

    def _log_ratio(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        return np.log(np.maximum(rhoN, _TINY)) - np.log(self.target[:, i0:i1])

    def terminal(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        return -self.scale * self.gamma * (self._log_ratio(rhoN, i0, i1) + 1.0)

    def terminal_scale_derivative(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        return -self.gamma * (self._log_ratio(rhoN, i0, i1) + 1.0)

    def terminal_derivative(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        K = rhoN.shape[0]
        inv = -self.scale * self.gamma / np.maximum(rhoN, _TINY)  # [c, i]
        return np.einsum("ci,cd->icd", inv, np.eye(K))

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> float:
        r = np.maximum(rhoN, _TINY)
        return float((w * self.scale * self.gamma * r * self._log_ratio(rhoN, i0, i1)).sum())


class BridgeTerminal(BoundaryData):
    """Schroedinger bridge ``rho^N_c = q_c`` (``target[c, i]``, mass ``pi_c`` each), with
    the gauge ``phi^N_{c,g} = 0`` at node ``gauge_node`` and the blend of the module
    docstring for ``scale < 1``."""

    def __init__(self, rho0: np.ndarray, target: np.ndarray, scale: float = 1.0, gauge_node: int = 0) -> None:
        rho0 = np.asarray(rho0, dtype=float)
        super().__init__(rho0, np.zeros_like(rho0), scale)
        self.target = np.asarray(target, dtype=float)
        if self.target.shape != rho0.shape or np.any(self.target <= 0):
            raise ValueError("BridgeTerminal: target must be positive with the shape of rho0 [c, i]")
        if not 0 <= gauge_node < rho0.shape[1]:
            raise ValueError(f"BridgeTerminal: gauge node {gauge_node} outside 0..{rho0.shape[1] - 1}")
        self.gauge_node = int(gauge_node)

    def _gauge(self, i0: int, i1: int) -> np.ndarray:
        return np.arange(i0, i1) == self.gauge_node  # [i]

    def _logratio(self, rho: np.ndarray, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray]:
        """``L(rho) - log q`` and ``L'(rho)`` for ``rho[i, c]``: ``L = log`` above
        ``eps = LOG_CUT q``, continued linearly (C^1) below, so that any ``rho`` (also 0 or
        negative, e.g. the zero state of the solver's set-up) gives finite rows."""
        q = self.target[:, i0:i1].T
        eps = LOG_CUT * q
        r = np.maximum(rho, eps)
        val = np.log(r / q) + np.minimum(rho - eps, 0.0) / eps
        return val, 1.0 / r

    def terminal_rows(self, ZN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> np.ndarray:
        K = self.rho0.shape[0]
        s = self.scale
        val, _ = self._logratio(ZN[:, :K], i0, i1)
        rows = w[:, None] * ((1.0 - s) * ZN[:, K:] + s * val)
        g = self._gauge(i0, i1)
        rows[g] = w[g, None] * ZN[g, K:]
        return rows

    def terminal_rows_jacobian(self, ZN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> np.ndarray:
        K = self.rho0.shape[0]
        s = self.scale
        _, der = self._logratio(ZN[:, :K], i0, i1)
        eye = np.eye(K)
        J = np.zeros((ZN.shape[0], K, 2 * K))
        J[:, :, :K] = s * (w[:, None] * der)[:, :, None] * eye
        J[:, :, K:] = (1.0 - s) * w[:, None, None] * eye
        g = self._gauge(i0, i1)
        J[g, :, :K] = 0.0
        J[g, :, K:] = w[g, None, None] * eye
        return J

    def terminal(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """The penalty's ``Phi = -lambda (rho^N - q)`` for ``scale < 1`` (informative only:
        the rows are :meth:`terminal_rows`)."""
        s = self.scale
        if s >= 1.0:
            return np.zeros_like(rhoN)
        Phi = -(s / (1.0 - s)) * (rhoN - self.target[:, i0:i1])
        Phi[:, self._gauge(i0, i1)] = 0.0
        return Phi

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> float:
        """The penalty ``lambda/2 sum_{i != g} w_i (rho^N - q)^2`` for ``scale < 1``; 0 for
        the bridge itself (a constraint: its cost is the kinetic cost)."""
        s = self.scale
        if s >= 1.0 or s <= 0.0:
            return 0.0
        e = (rhoN - self.target[:, i0:i1]) * ~self._gauge(i0, i1)
        return float(0.5 * s / (1.0 - s) * (w * e * e).sum())


def apply_gauge(Z: np.ndarray, w: np.ndarray, K: int) -> np.ndarray:
    """A copy of ``Z[n, i, a]`` with each ``phi_c`` shifted by one constant (at every level)
    so that ``sum_i w_i phi^N_{c,i} = 0``: the same solution of the bridge, in the
    documented gauge."""
    Z = np.array(Z, dtype=float, copy=True)
    C = (w[:, None] * Z[-1, :, K:]).sum(axis=0) / w.sum()  # [c]
    Z[..., K:] -= C
    return Z


def kl_divergence(rho: np.ndarray, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w_i rho_i log(rho_i / q_i)`` per leading index (``0 log 0 = 0``)."""
    rho = np.asarray(rho, dtype=float)
    r = np.maximum(rho, _TINY)
    return (w * np.where(rho > 0, rho * (np.log(r) - np.log(q)), 0.0)).sum(axis=-1)


def gaussian_bridge(t, T: float, m0: float, s0: float, m1: float, s1: float, nu: float):
    """Mean and variance at depth ``t`` of the Schroedinger bridge from ``N(m0, s0)`` to
    ``N(m1, s1)`` (variances) over ``[0, T]`` for ``dX = u dt + sqrt(2 nu) dW`` on the line
    (minimal ``E int 1/2 u^2``): with ``tau = t/T`` and ``sigma^2 T = 2 nu T``,

        mean = (1 - tau) m0 + tau m1,
        var  = (1 - tau)^2 s0 + tau^2 s1 + tau (1 - tau) sqrt(4 s0 s1 + (2 nu T)^2)

    (the 1-D case of the closed form of Bunne et al., AISTATS 2023; ``nu -> 0`` gives the
    displacement interpolation ``((1 - tau) sqrt(s0) + tau sqrt(s1))^2``)."""
    tau = np.asarray(t, dtype=float) / T
    D = np.sqrt(4.0 * s0 * s1 + (2.0 * nu * T) ** 2)
    return (1 - tau) * m0 + tau * m1, (1 - tau) ** 2 * s0 + tau ** 2 * s1 + tau * (1 - tau) * D
