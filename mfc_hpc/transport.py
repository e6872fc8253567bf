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
become ``rho^N_{c,i} = q_{c,i}``, written as ``w_i log(rho^N_{c,i} / q_{c,i}) = 0`` (same
solutions; the logarithm makes the rows scale-free where ``q`` is tiny, and below
``LOG_CUT q`` it is continued by its tangent line so that any state gives finite rows).
The density equations conserve mass (``sum_i w_i rho^N_c = sum_i w_i rho^0_c = pi_c``
exactly), so with ``q_c`` of mass ``pi_c`` one of these equations per class is
redundant, and ``phi_c`` is defined up to an additive constant (the scheme sees only
differences ``phi_{c,j} - phi_{c,i}`` within a level and ``phi^{n+1}_c - phi^n_c`` between
levels, so ``phi_c + C_c`` at every level solves the same equations). The redundant
equation at the *gauge node* ``g_c`` is replaced by ``w_g phi^N_{c,g} = 0``. This fixes
the same constant as the documented gauge ``sum_i w_i phi^N_{c,i} = 0`` (both select one
member of the family ``phi_c + C_c``; they differ by ``C_c = -sum_i w_i phi^N_{c,i} /
sum_i w_i``), and, unlike the sum, it touches one node of level ``N`` only, so it fits
the box stencil and the distributed Jacobian pattern. :func:`apply_gauge` shifts a
solution to the documented gauge afterwards. Mass conservation gives
``rho^N_{c,g} = q_{c,g}`` to round-off; the gauge node is where ``q_c`` peaks (by default),
since the round-off of the mass lands there: at a node where ``q`` is 1e-17 it would be
a relative error of order one (that was tried: node 0 fails).

*Continuation for the bridge.* Its loss weight ``s in [0, 1]`` blends the fixed-loss row
(with ``G = 0``) into the bridge row:

    w_i [ (1 - s) phi^N_{c,i} + s log(rho^N_{c,i} / q_{c,i}) ] = 0     (i != g_c),
    w_g phi^N_{c,g} = 0.

At ``s = 0`` this is ``phi^N = 0``: the uncontrolled flow (``phi = 0``, the data diffused)
is the exact solution and exactly what ``MeshSolver.uncontrolled_guess`` computes (its
matrix uses the rows ``w_i phi^N``). For ``0 < s < 1`` it is the optimality system of the
KL terminal cost ``lambda sum_{i != g} w_i (rho log(rho/q) - rho + q)`` with
``lambda = s/(1 - s)``, whose weight grows without bound as ``s -> 1``: the bridge is the
limit ``gamma -> infinity`` of the KL transport. The residual is linear in ``s``, so the
continuation's finite-difference tangent is exact.

*Limits.* Newton follows this path when the target's tails on the mesh are not too thin
relative to the uncontrolled flow's (checked: Gaussian targets with ``q_min / q_max``
about 1e-6 converge; a target whose tail is 1e-17 where the diffused data has 1e-6 does
not): give such targets a floor (``[loss] floor``, uniform mixture, default 1e-4).
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

    def __init__(self, rho0: np.ndarray, target: np.ndarray, scale: float = 1.0,
                 gauge_nodes: np.ndarray | None = None) -> None:
        rho0 = np.asarray(rho0, dtype=float)
        super().__init__(rho0, np.zeros_like(rho0), scale)
        self.target = np.asarray(target, dtype=float)
        if self.target.shape != rho0.shape or np.any(self.target <= 0):
            raise ValueError("BridgeTerminal: target must be positive with the shape of rho0 [c, i]")
        g = np.argmax(self.target, axis=1) if gauge_nodes is None else np.asarray(gauge_nodes, dtype=int)
        if g.shape != (rho0.shape[0],) or np.any(g < 0) or np.any(g >= rho0.shape[1]):
            raise ValueError(f"BridgeTerminal: one gauge node per class in 0..{rho0.shape[1] - 1}, got {g}")
        self.gauge_nodes = g

    def _gauge(self, i0: int, i1: int) -> np.ndarray:
        """``[i, c]``: True at the gauge node of class ``c``."""
        return np.arange(i0, i1)[:, None] == self.gauge_nodes[None, :]

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
        return np.where(g, w[:, None] * ZN[:, K:], rows)

    def terminal_rows_jacobian(self, ZN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> np.ndarray:
        K = self.rho0.shape[0]
        s = self.scale
        _, der = self._logratio(ZN[:, :K], i0, i1)
        eye = np.eye(K)
        J = np.zeros((ZN.shape[0], K, 2 * K))
        J[:, :, :K] = s * (w[:, None] * der)[:, :, None] * eye
        J[:, :, K:] = (1.0 - s) * w[:, None, None] * eye
        g = self._gauge(i0, i1)  # [i, c]
        J[:, :, :K] *= ~g[:, :, None]
        J[:, :, K:] = np.where(g[:, :, None], w[:, None, None] * eye, J[:, :, K:])
        return J

    def terminal(self, rhoN: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """The penalty's ``Phi = -lambda log(rho^N / q)`` for ``scale < 1`` (informative only:
        the rows are :meth:`terminal_rows`); 0 at ``scale = 1``."""
        s = self.scale
        if s >= 1.0:
            return np.zeros_like(rhoN)
        val, _ = self._logratio(rhoN.T, i0, i1)
        return np.where(self._gauge(i0, i1), 0.0, -(s / (1.0 - s)) * val).T

    def terminal_cost(self, rhoN: np.ndarray, w: np.ndarray, i0: int, i1: int) -> float:
        """For ``0 < scale < 1`` the slab's share of the penalty
        ``lambda sum_{i != g} w_i (rho log(rho/q) - rho + q)``; 0 for the bridge itself (a
        constraint: its cost is the kinetic cost) and at ``scale = 0``."""
        s = self.scale
        if s >= 1.0 or s <= 0.0:
            return 0.0
        q = self.target[:, i0:i1]
        r = np.maximum(rhoN, _TINY)
        e = (r * np.log(r / q) - r + q) * ~self._gauge(i0, i1).T
        return float(s / (1.0 - s) * (w * e).sum())


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


def transport_network(cfg, Z: np.ndarray):
    """The residual network of a transport solution ``Z`` (bridge: in the documented
    gauge). Transport has no read-out: the model file carries a neutral head (all logits
    0, ``gamma = 0``; two entries when there is one class, the second named ``"-"``)."""
    from .head import SoftmaxHead
    from .network import network_from_state
    from .problem import discretisation
    from .scheme import node_weights

    d = discretisation(cfg)
    if cfg.loss.kind == "bridge":
        Z = apply_gauge(Z, node_weights(d.h, d.M), d.K)
    names = [c.name or f"class{k}" for k, c in enumerate(cfg.classes)]
    if len(names) == 1:
        names.append("-")
    head = SoftmaxHead(np.zeros(len(names)), np.zeros(len(names)), 0.0)
    cfgd = cfg.to_dict()
    for c in cfgd["classes"]:
        c.pop("values", None)
    return network_from_state(Z, d, head, tuple(names), None, cfgd)


def transport_report(cfg, Z: np.ndarray, summary: dict, out_dir=None, samples: int = 2000,
                     seed: int = 0, plots: bool = True) -> dict:
    """Evaluate a converged transport solve (serial, rank 0): kinetic cost, distance of
    ``rho^N`` to the target (L1, KL; before: ``rho^0``), the exported network
    (``OUT/model.npz``), and ``samples`` draws of ``rho^0_c`` pushed through it with noise
    ``nu``, tested against ``q_c`` and ``rho^N_c`` (one-sample Kolmogorov-Smirnov)."""
    from pathlib import Path

    from .problem import discretisation, target_densities
    from .scheme import node_weights
    from .training import density_cdf, ks_statistic, sample_density

    d = discretisation(cfg)
    w = node_weights(d.h, d.M)
    K = d.K
    q = target_densities(cfg)
    rho = np.moveaxis(Z[..., :K], 2, 1)  # [n, c, i]
    net = transport_network(cfg, Z)
    rng = np.random.default_rng(seed)
    cost = summary["diagnostics"]["cost"]
    rep: dict = {
        "kind": cfg.loss.kind,
        "kinetic_cost": cost["kinetic"],
        "terminal_cost": cost["terminal"],
        "gamma": cfg.loss.gamma if cfg.loss.kind == "kl" else None,
        "classes": [],
        "network": {"blocks": net.N, "units_per_block": net.M, "dt_max_compression": net.compression()},
    }
    pushed = []
    for c in range(K):
        x0 = sample_density(d.x, rho[0, c], samples, rng)
        xN = net.forward(x0, noise=True, rng=rng)
        pushed.append((x0, xN))
        Dq, pq = ks_statistic(xN, density_cdf(d.x, q[c]))
        Dr, _ = ks_statistic(xN, density_cdf(d.x, rho[-1, c]))
        D0, _ = ks_statistic(net.forward(x0), density_cdf(d.x, q[c]))
        Dn, _ = ks_statistic(x0, density_cdf(d.x, q[c]))
        pi = float((w * q[c]).sum())
        rep["classes"].append({
            "class": net.class_names[c], "prior": pi,
            "l1_rhoN_target": float((w * np.abs(rho[-1, c] - q[c])).sum() / pi),
            "l1_rho0_target": float((w * np.abs(rho[0, c] - q[c])).sum() / pi),
            "kl_rhoN_target": float(kl_divergence(rho[-1, c], q[c], w) / pi),
            "kl_rho0_target": float(kl_divergence(rho[0, c], q[c], w) / pi),
            "samples": samples, "ks_D_pushed_vs_target": Dq, "p_value": pq,
            "ks_D_pushed_vs_rhoN": Dr, "ks_D_pushed_without_noise_vs_target": D0,
            "ks_D_input_vs_target": Dn, "critical_D_5pct": 1.358 / np.sqrt(samples)})
    if out_dir is not None:
        out = Path(out_dir)
        rep["model"] = str(net.save(out / "model.npz"))
        if plots:
            from .plots import transport_figure
            title = (f"{cfg.loss.kind}: kinetic cost {cost['kinetic']:.4g}, "
                     f"L1(rho(T), q) = {rep['classes'][0]['l1_rhoN_target']:.2e}")
            rep["figures"] = [str(transport_figure(out / "density_flow.png", net, rho, q, *pushed[0],
                                                   title=title))]
    return rep
