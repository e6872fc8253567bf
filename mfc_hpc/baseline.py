"""Baselines for the mean-field network: ordered thresholds, and gradient descent.

*Ordered thresholds.* A 1-D residual network is a monotone map and the head's decision
regions are intervals in the order of the class means, so a network + head classifies by
``K - 1`` ordered thresholds on the input feature: the best such thresholds are the ceiling
of any network on that feature. :func:`fit_thresholds` finds those with the most training
samples right (dynamic programming over the sorted samples, ``O(K S)`` after sorting).

*Gradient descent.* The same architecture as the exported network (``N`` residual
blocks ``x -> x + dt U_n(x)``, ``U_n(x) = sum_i c_{n,i} relu(x - beta_{n,i}) + B2_n`` with
``M`` units, 1-D state, the same fixed head) trained by back-propagation with Adam on
the sample version of the same cost (METHOD.md section 2):

    J_S = 1/S sum_s [ sum_n dt 1/2 U_n(x^s_n)^2 + G_{y_s}(x^s_N) ]
          + sum_n dt eta/2 sum_i w_i U_n(x_i)^2,

kinetic energy of the data + weight decay ``eta`` over the state interval (quadrature on
the mesh nodes ``x_i`` with weights ``w_i``) + loss. The training samples carry the
priors. With ``noise`` each block adds ``sqrt(2 nu dt) xi`` with fresh ``xi`` at every
step (noise injection: the stochastic network of the mean-field problem). The node
positions ``beta_{n,i}`` are fixed at the mesh nodes (then the exported network is a
point of the same parameter space and ``J_S`` can be evaluated on both) or free.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .head import SoftmaxHead
from .scheme import node_weights

__all__ = ["fit_thresholds", "threshold_predict", "GDNetwork", "GDResult", "train_gd", "sample_cost"]


# ---------------------------------------------------------------------------- thresholds

def fit_thresholds(x: np.ndarray, y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``K - 1`` increasing thresholds maximising training accuracy, classes laid out
    along ``x`` in ``order`` (class indices from left to right)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=int)
    K = len(order)
    s = np.argsort(x, kind="stable")
    xs = x[s]
    rank = np.empty(K, dtype=int)
    rank[np.asarray(order)] = np.arange(K)
    r = rank[y[s]]
    S = x.size
    cnt = np.zeros((K, S + 1))
    cnt[:, 1:] = np.cumsum(r[None, :] == np.arange(K)[:, None], axis=1)
    # f[k, j]: most right answers for the first j samples with ranks 0..k; split[k, j] its cut
    # a cut after j sorted samples must fall between distinct values
    ok = np.ones(S + 1, dtype=bool)
    ok[1:S] = xs[1:] > xs[:-1]
    f = cnt[0].copy()
    cuts = np.zeros((K, S + 1), dtype=int)
    for k in range(1, K):
        g = np.where(ok, f - cnt[k], -np.inf)
        arg = _running_argmax(g)
        f = g[arg] + cnt[k]
        cuts[k] = arg
    j = S
    pos = []
    for k in range(K - 1, 0, -1):
        j = cuts[k, j]
        pos.append(j)
    pos = pos[::-1]
    pad = np.concatenate([[xs[0] - 1.0], xs, [xs[-1] + 1.0]])
    return np.array([0.5 * (pad[p] + pad[p + 1]) for p in pos])


def _running_argmax(g: np.ndarray) -> np.ndarray:
    """Index of the first maximum of ``g[:j+1]`` for every ``j``."""
    best = np.maximum.accumulate(g)
    return np.maximum.accumulate(np.where(g >= best, np.arange(g.size), 0))


def threshold_predict(x: np.ndarray, thresholds: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Class of each sample under ordered thresholds."""
    return np.asarray(order)[np.searchsorted(thresholds, x)]


# ---------------------------------------------------------------------------- gradient descent

@dataclass
class GDNetwork:
    """Parameters ``c[n, i]``, ``B2[n]`` and node positions ``beta[n, i]`` of ``N`` blocks."""

    c: np.ndarray
    B2: np.ndarray
    beta: np.ndarray
    dt: float

    @property
    def N(self) -> int:
        return self.c.shape[0]

    def velocity(self, n: int, x: np.ndarray) -> np.ndarray:
        return np.maximum(x[:, None] - self.beta[n], 0.0) @ self.c[n] + self.B2[n]

    def forward(self, x: np.ndarray, noise_sd: float = 0.0, rng: np.random.Generator | None = None,
                path: bool = False) -> np.ndarray:
        x = np.array(x, dtype=float, copy=True)
        out = [x.copy()] if path else None
        for n in range(self.N):
            x = x + self.dt * self.velocity(n, x)
            if noise_sd:
                x = x + noise_sd * rng.standard_normal(x.shape)
            if path:
                out.append(x.copy())
        return np.array(out) if path else x

    def nodal_drift(self, nodes: np.ndarray) -> np.ndarray:
        """``U_n(x_i)`` on the mesh nodes, ``[n, i]``."""
        return np.einsum("nim,nm->ni", np.maximum(nodes[None, :, None] - self.beta[:, None, :], 0.0),
                         self.c) + self.B2[:, None]


@dataclass
class GDResult:
    """A trained :class:`GDNetwork` and its history (``cost`` every ``record`` steps)."""

    net: GDNetwork
    cost: list[float] = field(default_factory=list)
    steps: int = 0
    wall: float = 0.0


def _cost_and_grad(p: GDNetwork, x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, nodes: np.ndarray,
                   w: np.ndarray, eta: float, noise_sd: float, rng, free: bool):
    """``J_S`` and its gradient by back-propagation (adjoint ``lambda_n = dJ/dx_n``)."""
    S, dt, N = x0.size, p.dt, p.N
    xs, acts, Us = [x0], [], []
    x = x0
    for n in range(N):
        a = x[:, None] - p.beta[n]
        acts.append(a)
        U = np.maximum(a, 0.0) @ p.c[n] + p.B2[n]
        Us.append(U)
        x = x + dt * U
        if noise_sd:
            x = x + noise_sd * rng.standard_normal(S)
        xs.append(x)
    ce = head.cross_entropy(x)[np.arange(S), y]
    Ain = np.maximum(nodes[None, :, None] - p.beta[:, None, :], 0.0)  # [n, i, m]
    Un = np.einsum("nim,nm->ni", Ain, p.c) + p.B2[:, None]
    J = (0.5 * dt * sum((U * U).sum() for U in Us) + head.gamma * ce.sum()) / S \
        + 0.5 * eta * dt * (w * Un * Un).sum()
    gc, gB, gb = np.zeros_like(p.c), np.zeros_like(p.B2), np.zeros_like(p.beta)
    lam = head.gamma * head.dce_dx(x)[np.arange(S), y] / S
    wU = eta * dt * w * Un  # [n, i]
    for n in range(N - 1, -1, -1):
        a, U = acts[n], Us[n]
        on = a > 0.0
        g = dt * (lam + U / S)  # dJ/dU_n per sample
        gc[n] = np.maximum(a, 0.0).T @ g + Ain[n].T @ wU[n]
        gB[n] = g.sum() + wU[n].sum()
        if free:
            gb[n] = -(g @ on) * p.c[n] - (wU[n] @ (Ain[n] > 0)) * p.c[n]
        lam = lam + g * (on @ p.c[n])
    return J, gc, gB, gb


def sample_cost(net: GDNetwork, x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, nodes: np.ndarray,
                eta: float, nu: float = 0.0, draws: int = 1, seed: int = 0) -> float:
    """``J_S`` of a network (averaged over ``draws`` noise draws when ``nu > 0``)."""
    w = node_weights(nodes[1] - nodes[0], nodes.size)
    sd = np.sqrt(2.0 * nu * net.dt) if nu > 0 else 0.0
    rng = np.random.default_rng(seed)
    vals = [_cost_and_grad(net, x0, y, head, nodes, w, eta, sd, rng, False)[0]
            for _ in range(draws if sd else 1)]
    return float(np.mean(vals))


def train_gd(x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, nodes: np.ndarray, N: int, T: float,
             eta: float, nu: float = 0.0, free_nodes: bool = False, steps: int = 3000,
             lr: float = 0.02, seed: int = 0, record: int = 50,
             betas: tuple[float, float] = (0.9, 0.999)) -> GDResult:
    """Train the baseline from the zero network by full-batch Adam on ``J_S``.

    ``nu > 0`` injects noise ``sqrt(2 nu dt)`` per block (fresh at every step).
    """
    nodes = np.asarray(nodes, dtype=float)
    M = nodes.size
    w = node_weights(nodes[1] - nodes[0], M)
    dt = T / N
    p = GDNetwork(np.zeros((N, M)), np.zeros(N), np.tile(nodes, (N, 1)), dt)
    sd = np.sqrt(2.0 * nu * dt) if nu > 0 else 0.0
    rng = np.random.default_rng(seed)
    params = [p.c, p.B2, p.beta]
    m1 = [np.zeros_like(q) for q in params]
    m2 = [np.zeros_like(q) for q in params]
    b1, b2 = betas
    res = GDResult(p)
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        J, *grads = _cost_and_grad(p, x0, y, head, nodes, w, eta, sd, rng, free_nodes)
        if k % record == 1 or k == steps:
            res.cost.append(float(J))
        for q, g, a, v in zip(params, grads, m1, m2):
            a *= b1
            a += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            q -= lr * (a / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + 1e-8)
    res.steps = steps
    res.wall = time.perf_counter() - t0
    return res
