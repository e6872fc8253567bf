"""Baselines for the mean-field network on the same split: gradient descent on the same
architecture, logistic regression, and (1-D) the best ordered thresholds.

*Gradient descent.* The same architecture as the exported network (``N`` residual blocks
``x -> x + dt U_n(x)``, ``U_n`` the continuous piecewise-linear function of
:mod:`mfc_hpc.learning.cpwl` on the mesh nodes, the same fixed head) trained by
back-propagation with Adam on the sample version of the cost of METHOD.md section 2:

    J_S = 1/S sum_s [ sum_n dt 1/2 |U_n(x^s_n)|^2 + G_{y_s}(x^s_N) ]
          + sum_n dt eta/2 sum_i w_i |U_n(x_i)|^2,

kinetic energy of the data + weight decay ``eta`` over the box (quadrature on the mesh
nodes with the product weights ``w_i``: the ``eta`` term of ``J`` with ``rho`` replaced by
the samples) + loss. The training samples carry the priors. With ``nu > 0`` each block
adds ``sqrt(2 nu dt) xi`` with fresh ``xi`` at every step (noise injection: the stochastic
network of the mean-field problem). The exported network is a point of the same parameter
space, so ``J_S`` is evaluated on both (:func:`sample_cost`).

Parameters: in 2-D the nodal values ``b[n, k, i]`` (the output weights of the hat-function
ReLU form; the trained network is a :class:`~mfc_hpc.learning.network.ResidualNetwork`,
with reflecting walls under noise, whose reflection the gradient follows). In 1-D the
parametrisation of the 1-D releases is kept, so that their numbers are reproduced
exactly: the one-hidden-layer form ``U_n(x) = sum_i c_{n,i} relu(x - beta_{n,i}) + B2_n``
with ``c``, ``B2`` trained (and the node positions ``beta`` fixed at the mesh nodes, or
free), noise added without reflection (:class:`LineReluNetwork`). Adam is not invariant
under the change of parameters between the two forms, so the 1-D numbers depend on it.

*Logistic regression* (:func:`logistic_baselines`): multinomial logistic regression
(:func:`mfc_hpc.problem.losses.fit_logistic`) on the network's input features, and on all
the feature columns of the table (standardised on the training split).

*Ordered thresholds* (1-D only). A 1-D residual network is a monotone map and the head's
decision regions are intervals in the order of the class means, so a network + head
classifies by ``K - 1`` ordered thresholds on the input feature: the best such thresholds
are the ceiling of any network on that feature (:func:`fit_thresholds`, dynamic
programming over the sorted samples).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..numerics.grid import StateGrid
from ..problem.losses import SoftmaxHead, fit_logistic
from .cpwl import interpolate_with_gradient, locate, scatter_weights
from .network import ResidualNetwork, reflect

__all__ = ["fit_thresholds", "threshold_predict", "LineReluNetwork", "GDResult", "train_gd", "sample_cost",
           "line_cost_and_grad", "grid_cost_and_grad", "adam", "logistic_baselines"]


# ---------------------------------------------------------------------------- thresholds

def fit_thresholds(x: np.ndarray, y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``K - 1`` increasing thresholds maximising training accuracy, classes laid out
    along ``x`` (1-D) in ``order`` (class indices from left to right)."""
    x = np.asarray(x, dtype=float).ravel()
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
    # f[k, j]: most right answers for the first j sorted samples with ranks 0..k; a cut
    # after j sorted samples must fall between distinct values
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
    return np.asarray(order)[np.searchsorted(thresholds, np.asarray(x, dtype=float).ravel())]


# ---------------------------------------------------------------------------- the 1-D form

@dataclass
class LineReluNetwork:
    """1-D: parameters ``c[n, i]``, ``B2[n]`` and node positions ``beta[n, i]`` of ``N`` blocks
    ``U_n(x) = sum_i c_{n,i} relu(x - beta_{n,i}) + B2_n`` (the releases' baseline)."""

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
        x = np.array(x, dtype=float, copy=True).ravel()
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

    @classmethod
    def of(cls, net: ResidualNetwork) -> "LineReluNetwork":
        """The 1-D exported network in this parametrisation (its stored ReLU form)."""
        return cls(net.W2, net.B2, -net.B1, net.dt)


def line_cost_and_grad(p: LineReluNetwork, x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, nodes: np.ndarray,
                       w: np.ndarray, eta: float, noise_sd: float, rng, free: bool):
    """``J_S`` and its gradient ``(dc, dB2, dbeta)`` for the 1-D form, by back-propagation
    (adjoint ``lambda_n = dJ/dx_n``)."""
    S, dt, N = x0.size, p.dt, p.N
    acts, Us = [], []
    x = x0
    for n in range(N):
        a = x[:, None] - p.beta[n]
        acts.append(a)
        U = np.maximum(a, 0.0) @ p.c[n] + p.B2[n]
        Us.append(U)
        x = x + dt * U
        if noise_sd:
            x = x + noise_sd * rng.standard_normal(S)
    ce = head.cross_entropy(x)[np.arange(S), y]
    Ain = np.maximum(nodes[None, :, None] - p.beta[:, None, :], 0.0)  # [n, i, m]
    Un = np.einsum("nim,nm->ni", Ain, p.c) + p.B2[:, None]
    J = (0.5 * dt * sum((U * U).sum() for U in Us) + head.gamma * ce.sum()) / S \
        + 0.5 * eta * dt * (w * Un * Un).sum()
    gc, gB, gb = np.zeros_like(p.c), np.zeros_like(p.B2), np.zeros_like(p.beta)
    lam = head.gamma * head.dce_dx(x)[np.arange(S), y, 0] / S
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


# ---------------------------------------------------------------------------- the grid form

def grid_cost_and_grad(b: np.ndarray, grid: StateGrid, dt: float, x0: np.ndarray, y: np.ndarray,
                       head: SoftmaxHead, eta: float, noise_sd: float = 0.0, rng=None,
                       gradient: bool = True) -> tuple[float, np.ndarray | None]:
    """``J_S`` of the CPWL blocks with nodal values ``b[n, k, *i]`` on ``grid`` and its
    gradient with respect to ``b`` (back-propagation; reflecting walls under noise)."""
    x = np.array(x0, dtype=float).reshape(len(x0), -1)
    S, d = x.shape
    N = b.shape[0]
    lo, hi = np.array(grid.lower), np.array(grid.upper)
    w = grid.weights()
    tape = []
    kin = 0.0
    for n in range(N):
        s = locate(x, grid.lower, grid.h, grid.nodes)
        U, G = interpolate_with_gradient(b[n], s, grid.h)  # [d, S], [d, S, d]
        U = U.T
        kin += 0.5 * dt * float((U * U).sum())
        z = x + dt * U
        sgn = None
        if noise_sd:
            z = z + noise_sd * rng.standard_normal(z.shape)
            m = np.mod(z - lo, 2.0 * (hi - lo))
            sgn = np.where(m > hi - lo, -1.0, 1.0)
            z = reflect(z, lo, hi)
        tape.append((s, U, G, sgn))
        x = z
    ce = head.cross_entropy(x)[np.arange(S), y]
    J = (kin + head.gamma * float(ce.sum())) / S + 0.5 * eta * dt * float((w * (b * b).sum(axis=1)).sum())
    if not gradient:
        return J, None
    gb = eta * dt * w * b  # [n, k, *i]
    gf = gb.reshape(N, d, -1)
    lam = head.gamma * head.dce_dx(x)[np.arange(S), y] / S  # [S, d]
    for n in range(N - 1, -1, -1):
        s, U, G, sgn = tape[n]
        if sgn is not None:
            lam = lam * sgn
        g = dt * (lam + U / S)  # dJ/dU_n per sample [S, d]
        gf[n] += scatter_weights(s, g.T, gf.shape[-1])
        lam = lam + np.einsum("sk,ksl->sl", g, G)
    return J, gb


# ---------------------------------------------------------------------------- Adam

def adam(params: list[np.ndarray], cost_and_grad: Callable[[], tuple[float, list[np.ndarray]]], steps: int,
         lr: float = 0.02, betas: tuple[float, float] = (0.9, 0.999), record: int = 50,
         eps: float = 1e-8) -> list[float]:
    """Full-batch Adam on ``params`` (updated in place); ``cost_and_grad()`` returns the
    cost and the gradients at the current parameters. Returns the cost every ``record``
    steps (and at the last)."""
    m1 = [np.zeros_like(q) for q in params]
    m2 = [np.zeros_like(q) for q in params]
    b1, b2 = betas
    hist = []
    for k in range(1, steps + 1):
        J, grads = cost_and_grad()
        if k % record == 1 or k == steps:
            hist.append(float(J))
        for q, g, a, v in zip(params, grads, m1, m2):
            a *= b1
            a += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            q -= lr * (a / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps)
    return hist


@dataclass
class GDResult:
    """A trained network (:class:`LineReluNetwork` in 1-D, :class:`ResidualNetwork` in 2-D)
    and its history (``cost`` every ``record`` steps)."""

    net: object
    cost: list[float] = field(default_factory=list)
    steps: int = 0
    wall: float = 0.0
    lr: float = 0.02


def train_gd(x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, grid: StateGrid, N: int, T: float,
             eta: float, nu: float = 0.0, free_nodes: bool = False, steps: int = 3000,
             lr: float = 0.02, seed: int = 0, record: int = 50,
             betas: tuple[float, float] = (0.9, 0.999), class_names: tuple[str, ...] | None = None) -> GDResult:
    """Train the baseline from the zero network by full-batch Adam on ``J_S``; ``nu > 0``
    injects noise ``sqrt(2 nu dt)`` per block (fresh at every step). ``free_nodes``: 1-D
    only, the node positions are trained too."""
    dt = T / N
    sd = np.sqrt(2.0 * nu * dt) if nu > 0 else 0.0
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=int)
    t0 = time.perf_counter()
    if grid.ndim == 1:
        nodes = grid.axis(0)
        M = nodes.size
        w = grid.weights()
        x = np.asarray(x0, dtype=float).ravel()
        p = LineReluNetwork(np.zeros((N, M)), np.zeros(N), np.tile(nodes, (N, 1)), dt)

        def cg():
            J, *g = line_cost_and_grad(p, x, y, head, nodes, w, eta, sd, rng, free_nodes)
            return J, g

        hist = adam([p.c, p.B2, p.beta], cg, steps, lr, betas, record)
        net = p
    else:
        if free_nodes:
            raise ValueError("train_gd: free node positions are a 1-D option")
        b = np.zeros((N, grid.ndim) + grid.nodes)

        def cg():
            J, g = grid_cost_and_grad(b, grid, dt, x0, y, head, eta, sd, rng)
            return J, [g]

        hist = adam([b], cg, steps, lr, betas, record)
        names = tuple(class_names) if class_names else tuple(f"class{c}" for c in range(head.K))
        net = ResidualNetwork(grid, b, dt, nu, head, names)
    return GDResult(net, hist, steps, time.perf_counter() - t0, lr)


def sample_cost(net, x0: np.ndarray, y: np.ndarray, head: SoftmaxHead, grid: StateGrid, eta: float,
                nu: float = 0.0, draws: int = 1, seed: int = 0) -> float:
    """``J_S`` of a network (averaged over ``draws`` noise draws when ``nu > 0``): a
    :class:`LineReluNetwork` or a :class:`~mfc_hpc.learning.network.ResidualNetwork`."""
    y = np.asarray(y, dtype=int)
    sd = np.sqrt(2.0 * nu * net.dt) if nu > 0 else 0.0
    rng = np.random.default_rng(seed)
    if isinstance(net, ResidualNetwork) and net.ndim == 1:
        net = LineReluNetwork.of(net)
    if isinstance(net, LineReluNetwork):
        nodes = grid.axis(0)
        w = grid.weights()
        x = np.asarray(x0, dtype=float).ravel()
        vals = [line_cost_and_grad(net, x, y, head, nodes, w, eta, sd, rng, False)[0]
                for _ in range(draws if sd else 1)]
    else:
        vals = [grid_cost_and_grad(net.drift, net.grid, net.dt, x0, y, head, eta, sd, rng, gradient=False)[0]
                for _ in range(draws if sd else 1)]
    return float(np.mean(vals))


# ---------------------------------------------------------------------------- logistic regression

def _report(head: SoftmaxHead, x: np.ndarray, y: np.ndarray) -> dict:
    from .network import classification_report
    return classification_report(head, x, y)


def logistic_baselines(data) -> dict:
    """Logistic regression on the network's input features (the states ``x`` of the split)
    and on all the table's feature columns (standardised with the training split's mean
    and standard deviation): train and test reports of each."""
    K = data.K
    same = fit_logistic(data.x_train, data.y_train, K)
    X = data.samples.X
    Xtr, Xte = X[data.train_index], X[data.test_index]
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Ztr, Zte = (Xtr - mu) / sd, (Xte - mu) / sd
    full = fit_logistic(Ztr, data.y_train, K)
    return {
        "same_features": {"features": data.ndim, "train": _report(same, data.x_train, data.y_train),
                          "test": _report(same, data.x_test, data.y_test)},
        "all_features": {"features": int(X.shape[1]), "columns": list(data.samples.feature_names),
                         "train": _report(full, Ztr, data.y_train), "test": _report(full, Zte, data.y_test)},
    }
