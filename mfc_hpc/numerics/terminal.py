"""Boundary data of the depth-time system: initial densities and terminal conditions.

* :class:`BoundaryData` — the fixed loss of METHOD.md section 2, ``phi^N_c = -s G_c`` (``s``
  the loss weight of the continuation);
* :class:`KLTerminal` — the mean-field terminal cost ``gamma KL(rho^N_c | q_c)``:

      phi^N_{c,i} = -gamma (log(rho^N_{c,i} / q_{c,i}) + 1),  d phi^N_{c,i}/d rho^N_{d,i} = -gamma delta_cd / rho^N_{c,i};

* :class:`BridgeTerminal` — the Schroedinger bridge ``rho^N_c = q_c``, rows
  ``w_i [(1 - s) phi^N_{c,i} + s log(rho^N_{c,i}/q_{c,i})] = 0`` (the log continued by its
  tangent below ``LOG_CUT q``) with the gauge row ``w_g phi^N_{c,g} = 0`` at one node
  ``g_c`` per class (where ``q_c`` peaks); see :mod:`mfc_hpc.learning.transport` for the
  derivation and its limits.

Arrays are over all nodes of the grid: ``rho0[c, *i]``, ``G[c, *i]``, ``target[c, *i]``.
The methods take ``sel``, a tuple of global slices (one per state axis) naming the box
they act on; per-node inputs come as ``rhoN[c, *i]`` or ``ZN[*i, a]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BoundaryData", "KLTerminal", "BridgeTerminal", "LOG_CUT", "apply_gauge", "kl_divergence"]

_TINY = 1e-300
#: the bridge rows use ``log(rho/q)`` for ``rho >= LOG_CUT q`` and its tangent line below
LOG_CUT = 1e-3


class BoundaryData:
    """Initial densities and the terminal condition ``phi^N = Phi(rho^N)``; by default the
    fixed loss ``Phi_c = -scale G_c(x)``."""

    #: whether ``Phi`` is the fixed loss ``-scale G`` (the discrete training problem of
    #: :mod:`mfc_hpc.numerics.training` and the a priori stability bound need one)
    fixed_loss = True

    def __init__(self, rho0: np.ndarray, G: np.ndarray, scale: float = 1.0) -> None:
        self.rho0 = np.asarray(rho0, dtype=float)  # [c, *i] on all nodes
        self.G = np.asarray(G, dtype=float)  # [c, *i]
        if self.G.shape != self.rho0.shape:
            raise ValueError(f"BoundaryData: G {self.G.shape} and rho0 {self.rho0.shape} differ")
        self.scale = float(scale)  # loss weight of the continuation, phi^N = -scale G

    @property
    def K(self) -> int:
        return self.rho0.shape[0]

    def _sl(self, sel: tuple) -> tuple:
        return (slice(None),) + tuple(sel)

    def terminal(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        """``Phi_c(rho^N)`` on the box ``sel``, ``[c, *i]``."""
        return -self.scale * self.G[self._sl(sel)]

    def terminal_scale_derivative(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        """``dPhi_c/d scale`` on the box ``sel`` (for the tangent predictor)."""
        return -self.G[self._sl(sel)]

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, sel: tuple) -> float:
        """The box's share of ``sum_c sum_i w_i scale G_c(x_i) rho^N_{c,i}``."""
        return float((w * self.scale * self.G[self._sl(sel)] * rhoN).sum())

    def terminal_derivative(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray | None:
        """``dPhi_c/drho_d`` as ``[*i, c, d]``, or ``None`` when ``Phi`` is fixed."""
        return None

    def terminal_rows(self, ZN: np.ndarray, w: np.ndarray, sel: tuple) -> np.ndarray | None:
        """Terminal equations other than ``w_i (phi^N - Phi(rho^N))``: the rows ``[*i, c]``
        of the adjoint slots at level ``N`` from ``ZN[*i, a]`` (level ``N``, all ``2K``
        fields), or ``None`` for the default. They may only use level ``N`` at their own
        node (the box stencil)."""
        return None

    def terminal_rows_jacobian(self, ZN: np.ndarray, w: np.ndarray, sel: tuple) -> np.ndarray | None:
        """Derivative ``[*i, c, b]`` of :meth:`terminal_rows` with respect to field ``b`` of
        level ``N`` at the same node (``None`` with the default rows)."""
        return None


class KLTerminal(BoundaryData):
    """Terminal cost ``gamma KL(rho^N_c | q_c)`` per class; ``target[c, *i] = q_{c,i}``."""

    fixed_loss = False

    def __init__(self, rho0: np.ndarray, target: np.ndarray, gamma: float = 1.0, scale: float = 1.0) -> None:
        rho0 = np.asarray(rho0, dtype=float)
        super().__init__(rho0, np.zeros_like(rho0), scale)
        self.target = np.asarray(target, dtype=float)
        if self.target.shape != rho0.shape or np.any(self.target <= 0):
            raise ValueError("KLTerminal: target must be positive with the shape of rho0 [c, *i]")
        self.gamma = float(gamma)

    def _log_ratio(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        return np.log(np.maximum(rhoN, _TINY)) - np.log(self.target[self._sl(sel)])

    def terminal(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        return -self.scale * self.gamma * (self._log_ratio(rhoN, sel) + 1.0)

    def terminal_scale_derivative(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        return -self.gamma * (self._log_ratio(rhoN, sel) + 1.0)

    def terminal_derivative(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        K = rhoN.shape[0]
        inv = -self.scale * self.gamma / np.maximum(rhoN, _TINY)  # [c, *i]
        return np.moveaxis(inv, 0, -1)[..., :, None] * np.eye(K)

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, sel: tuple) -> float:
        r = np.maximum(rhoN, _TINY)
        return float((w * self.scale * self.gamma * r * self._log_ratio(rhoN, sel)).sum())


class BridgeTerminal(BoundaryData):
    """Schroedinger bridge ``rho^N_c = q_c`` (``target[c, *i]``, mass ``pi_c`` each), with
    the gauge ``phi^N_{c,g} = 0`` at the node ``gauge_nodes[c]`` (a flat index; default
    where ``q_c`` peaks) and the blend of the module docstring for ``scale < 1``."""

    fixed_loss = False

    def __init__(self, rho0: np.ndarray, target: np.ndarray, scale: float = 1.0,
                 gauge_nodes: np.ndarray | None = None) -> None:
        rho0 = np.asarray(rho0, dtype=float)
        super().__init__(rho0, np.zeros_like(rho0), scale)
        self.target = np.asarray(target, dtype=float)
        if self.target.shape != rho0.shape or np.any(self.target <= 0):
            raise ValueError("BridgeTerminal: target must be positive with the shape of rho0 [c, *i]")
        K, nodes = rho0.shape[0], rho0.shape[1:]
        n = int(np.prod(nodes))
        g = np.argmax(self.target.reshape(K, -1), axis=1) if gauge_nodes is None else np.asarray(gauge_nodes, dtype=int)
        if g.shape != (K,) or np.any(g < 0) or np.any(g >= n):
            raise ValueError(f"BridgeTerminal: one gauge node per class in 0..{n - 1}, got {g}")
        self.gauge_nodes = g
        self._mask = np.zeros((K, n), dtype=bool)
        self._mask[np.arange(K), g] = True
        self._mask = self._mask.reshape((K,) + nodes)

    def _gauge(self, sel: tuple) -> np.ndarray:
        """``[*i, c]``: True at the gauge node of class ``c``."""
        return np.moveaxis(self._mask[self._sl(sel)], 0, -1)

    def _logratio(self, rho: np.ndarray, sel: tuple) -> tuple[np.ndarray, np.ndarray]:
        """``L(rho) - log q`` and ``L'(rho)`` for ``rho[*i, c]``: ``L = log`` above
        ``eps = LOG_CUT q``, continued linearly (C^1) below, so that any ``rho`` (also 0 or
        negative, e.g. the zero state of the solver's set-up) gives finite rows."""
        q = np.moveaxis(self.target[self._sl(sel)], 0, -1)
        eps = LOG_CUT * q
        r = np.maximum(rho, eps)
        val = np.log(r / q) + np.minimum(rho - eps, 0.0) / eps
        return val, 1.0 / r

    def terminal_rows(self, ZN: np.ndarray, w: np.ndarray, sel: tuple) -> np.ndarray:
        K = self.K
        s = self.scale
        val, _ = self._logratio(ZN[..., :K], sel)
        rows = w[..., None] * ((1.0 - s) * ZN[..., K:] + s * val)
        return np.where(self._gauge(sel), w[..., None] * ZN[..., K:], rows)

    def terminal_rows_jacobian(self, ZN: np.ndarray, w: np.ndarray, sel: tuple) -> np.ndarray:
        K = self.K
        s = self.scale
        _, der = self._logratio(ZN[..., :K], sel)
        eye = np.eye(K)
        J = np.zeros(ZN.shape[:-1] + (K, 2 * K))
        J[..., :K] = s * (w[..., None] * der)[..., :, None] * eye
        J[..., K:] = (1.0 - s) * w[..., None, None] * eye
        g = self._gauge(sel)  # [*i, c]
        J[..., :K] *= ~g[..., None]
        J[..., K:] = np.where(g[..., None], w[..., None, None] * eye, J[..., K:])
        return J

    def terminal(self, rhoN: np.ndarray, sel: tuple) -> np.ndarray:
        """The penalty's ``Phi = -lambda log(rho^N / q)`` for ``scale < 1`` (informative only:
        the rows are :meth:`terminal_rows`); 0 at ``scale = 1``."""
        s = self.scale
        if s >= 1.0:
            return np.zeros_like(rhoN)
        val, _ = self._logratio(np.moveaxis(rhoN, 0, -1), sel)
        return np.moveaxis(np.where(self._gauge(sel), 0.0, -(s / (1.0 - s)) * val), -1, 0)

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, sel: tuple) -> float:
        """For ``0 < scale < 1`` the box's share of the penalty
        ``lambda sum_{i != g} w_i (rho log(rho/q) - rho + q)``; 0 for the bridge itself (a
        constraint: its cost is the kinetic cost) and at ``scale = 0``."""
        s = self.scale
        if s >= 1.0 or s <= 0.0:
            return 0.0
        q = self.target[self._sl(sel)]
        r = np.maximum(rhoN, _TINY)
        e = (r * np.log(r / q) - r + q) * ~np.moveaxis(self._gauge(sel), -1, 0)
        return float(s / (1.0 - s) * (w * e).sum())


def apply_gauge(Z: np.ndarray, w: np.ndarray, K: int) -> np.ndarray:
    """A copy of ``Z[n, *i, a]`` with each ``phi_c`` shifted by one constant (at every level)
    so that ``sum_i w_i phi^N_{c,i} = 0``: the same solution of the bridge, in the
    documented gauge."""
    Z = np.array(Z, dtype=float, copy=True)
    nd = Z.ndim - 2
    axes = tuple(range(nd))
    C = (w[..., None] * Z[-1, ..., K:]).sum(axis=axes) / w.sum()  # [c]
    Z[..., K:] -= C
    return Z


def kl_divergence(rho: np.ndarray, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w_i rho_i log(rho_i / q_i)`` per leading index (``0 log 0 = 0``); ``w`` has the
    node shape and the node axes are the trailing ones."""
    rho = np.asarray(rho, dtype=float)
    r = np.maximum(rho, _TINY)
    v = w * np.where(rho > 0, rho * (np.log(r) - np.log(q)), 0.0)
    return v.reshape(v.shape[: v.ndim - w.ndim] + (-1,)).sum(axis=-1)
