"""The read-out at depth ``T`` and the terminal losses ``G_c`` on the grid (METHOD.md 2).

Soft-max head on ``R^d``: logits ``z_c(x) = w_c . x + b_c``; a state at ``x`` with label
``c`` costs the cross-entropy ``CE_c(x) = log sum_k exp z_k(x) - z_c(x)``, and the
terminal loss is ``G_c = gamma CE_c``. Two ways to choose the head of a ``[data]`` problem:

* *targets*: class ``c`` is sent to a target ``t_c`` with logits
  ``-|x - t_c|^2 / (2 s^2)``, which up to the common term ``-|x|^2 / (2 s^2)`` is
  ``w_c = t_c / s^2``, ``b_c = -|t_c|^2 / (2 s^2)`` (decision boundaries: the bisectors
  between targets). The default for ``d = 1``: a 1-D network is a monotone map, so it can
  move and sharpen classes but not reorder them, and targets in the order of the class
  means are what it can reach.
* *fitted*: multinomial logistic regression on the untransformed training features
  (:func:`fit_logistic`); the default for ``d = 2``. The zero network then already
  classifies as well as a linear classifier on the features, and training bends the
  data so that the fixed linear read-out separates it better: that is exactly what the
  network contributes, and no target layout has to be guessed for classes that are not
  linearly ordered (moons, spirals).

The quadratic loss is ``G = alpha/2 |x - m|^2`` for every class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SoftmaxHead", "target_head", "default_targets", "fit_logistic", "quadratic_loss",
           "softmax_loss"]


@dataclass(frozen=True)
class SoftmaxHead:
    """Soft-max read-out with logits ``weights[c] . x + biases[c]`` and loss weight ``gamma``;
    ``weights`` is ``[K, d]``."""

    weights: np.ndarray
    biases: np.ndarray
    gamma: float = 1.0

    def __post_init__(self) -> None:
        W = np.asarray(self.weights, dtype=float)
        if W.ndim == 1:
            W = W[:, None]
        b = np.asarray(self.biases, dtype=float).ravel()
        if W.ndim != 2 or W.shape[0] != b.size or b.size < 2:
            raise ValueError("head: needs one weight vector and one bias per class (at least two classes)")
        object.__setattr__(self, "weights", W)
        object.__setattr__(self, "biases", b)

    @property
    def K(self) -> int:
        return self.weights.shape[0]

    @property
    def ndim(self) -> int:
        return self.weights.shape[1]

    def _states(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.ndim == 1 and (x.ndim == 1 or x.shape[-1] != 1):
            x = x[..., None]
        return x

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``z[s, c] = w_c . x_s + b_c`` for states ``x[s, d]`` (``x[s]`` when ``d = 1``)."""
        return self._states(x) @ self.weights.T + self.biases

    def cross_entropy(self, x: np.ndarray) -> np.ndarray:
        """``CE[s, c]``: the cross-entropy of label ``c`` at ``x_s`` (without ``gamma``)."""
        z = self.logits(x)
        zmax = z.max(axis=-1, keepdims=True)
        lse = zmax + np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True))
        return lse - z

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Soft-max class probabilities ``[s, c]``."""
        return np.exp(-self.cross_entropy(x))

    def dce_dx(self, x: np.ndarray) -> np.ndarray:
        """``grad_x CE_c`` at ``x_s``, ``[s, c, d]``: ``sum_k p_k w_k - w_c``."""
        p = self.probabilities(x)
        return (p @ self.weights)[..., None, :] - self.weights

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class of each state."""
        return np.argmax(self.logits(x), axis=-1)


def default_targets(class_means: np.ndarray, x_min: float, x_max: float) -> np.ndarray:
    """Targets ``t_c`` evenly spaced inside ``[x_min, x_max]`` in the order of the class
    means (``d = 1``): the class of rank ``r`` goes to ``x_min + (r + 1) L / (K + 1)``."""
    m = np.asarray(class_means, dtype=float).ravel()
    K = m.size
    rank = np.empty(K, dtype=int)
    rank[np.argsort(m, kind="stable")] = np.arange(K)
    return x_min + (rank + 1) * (x_max - x_min) / (K + 1)


def target_head(targets: np.ndarray, width: float, gamma: float = 1.0) -> SoftmaxHead:
    """Head with logits ``-|x - t_c|^2 / (2 s^2)`` (``s = width``), written linearly in ``x``;
    ``targets`` is ``[K]`` (``d = 1``) or ``[K, d]``."""
    t = np.asarray(targets, dtype=float)
    if t.ndim == 1:
        t = t[:, None]
    s2 = float(width) ** 2
    return SoftmaxHead(t / s2, -0.5 * (t * t).sum(axis=1) / s2, gamma)


def fit_logistic(x: np.ndarray, y: np.ndarray, K: int, l2: float = 1e-3, gamma: float = 1.0,
                 maxiter: int = 2000) -> SoftmaxHead:
    """Multinomial logistic regression ``min mean_s CE_{y_s}(x_s) + l2/2 |W|^2`` on states
    ``x[s, d]`` (L-BFGS, exact gradient; deterministic): a :class:`SoftmaxHead` with loss
    weight ``gamma``. The biases of class 0 are pinned to 0 (the soft-max is invariant to
    a common shift)."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, d = x.shape
    Y = np.eye(K)[np.asarray(y, dtype=int)]

    def unpack(p):
        return p[:K * d].reshape(K, d), np.concatenate([[0.0], p[K * d:]])

    def f(p):
        W, b = unpack(p)
        z = x @ W.T + b
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        J = float((lse - (z * Y).sum(axis=1)).mean() + 0.5 * l2 * (W * W).sum())
        P = np.exp(z - lse[:, None])
        G = (P - Y) / n
        gW = G.T @ x + l2 * W
        gb = G.sum(axis=0)[1:]
        return J, np.concatenate([gW.ravel(), gb])

    r = minimize(f, np.zeros(K * d + K - 1), jac=True, method="L-BFGS-B",
                 options={"maxiter": maxiter, "gtol": 1e-10, "ftol": 0.0})
    W, b = unpack(r.x)
    return SoftmaxHead(W, b, gamma)


def quadratic_loss(points: np.ndarray, alpha: float, target: np.ndarray, K: int) -> np.ndarray:
    """``G_c(x_i) = alpha/2 |x_i - m|^2`` for every class, ``[c, *i]`` (``points[*i, d]``)."""
    g = 0.5 * alpha * ((points - np.asarray(target, dtype=float)) ** 2).sum(axis=-1)
    return np.broadcast_to(g, (K,) + g.shape).copy()


def softmax_loss(points: np.ndarray, head: SoftmaxHead) -> np.ndarray:
    """``G_c(x_i) = gamma CE_c(x_i)``, ``[c, *i]`` (``points[*i, d]``)."""
    shape = points.shape[:-1]
    ce = head.cross_entropy(points.reshape(-1, points.shape[-1]))  # [s, c]
    return head.gamma * np.moveaxis(ce.reshape(shape + (head.K,)), -1, 0)
