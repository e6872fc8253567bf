"""The fixed soft-max read-out at depth ``T`` (METHOD.md section 2).

Logits ``z_c(x) = w_c x + b_c``; a state at ``x`` with label ``c`` costs the cross-entropy
``CE_c(x) = log sum_k exp z_k(x) - z_c(x)`` and the terminal loss is
``G_c = gamma * CE_c``. The *target head* places class ``c`` at a target ``t_c`` with
logits ``-(x - t_c)^2 / (2 s^2)``, which up to the common term ``-x^2 / (2 s^2)`` is
``w_c = t_c / s^2``, ``b_c = -t_c^2 / (2 s^2)``: its decision boundaries are the midpoints
between neighbouring targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SoftmaxHead", "target_head", "default_targets"]


@dataclass(frozen=True)
class SoftmaxHead:
    """Soft-max read-out with logits ``weights[c] x + biases[c]`` and loss weight ``gamma``."""

    weights: np.ndarray
    biases: np.ndarray
    gamma: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", np.asarray(self.weights, dtype=float).ravel())
        object.__setattr__(self, "biases", np.asarray(self.biases, dtype=float).ravel())
        if self.weights.shape != self.biases.shape or self.weights.size < 2:
            raise ValueError("head: needs one weight and one bias per class (at least two classes)")

    @property
    def K(self) -> int:
        return self.weights.size

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``z[s, c] = w_c x_s + b_c``."""
        return np.asarray(x, dtype=float)[:, None] * self.weights + self.biases

    def cross_entropy(self, x: np.ndarray) -> np.ndarray:
        """``CE[s, c]``: the cross-entropy of label ``c`` at ``x_s`` (without ``gamma``)."""
        z = self.logits(x)
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
        return lse - z

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Soft-max class probabilities ``[s, c]``."""
        return np.exp(-self.cross_entropy(x))

    def dce_dx(self, x: np.ndarray) -> np.ndarray:
        """``d CE_c / dx`` at ``x_s``, ``[s, c]``: ``sum_k p_k w_k - w_c``."""
        p = self.probabilities(x)
        return (p @ self.weights)[:, None] - self.weights[None, :]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class of each state."""
        return np.argmax(self.logits(x), axis=1)


def default_targets(class_means: np.ndarray, x_min: float, x_max: float) -> np.ndarray:
    """Targets ``t_c`` evenly spaced inside ``[x_min, x_max]`` in the order of the class
    means: the class of rank ``r`` goes to ``x_min + (r + 1) L / (K + 1)``.

    A 1-D network is a monotone map, so it can move and sharpen classes but not reorder
    them: the head must keep the order of the data.
    """
    m = np.asarray(class_means, dtype=float)
    K = m.size
    rank = np.empty(K, dtype=int)
    rank[np.argsort(m, kind="stable")] = np.arange(K)
    return x_min + (rank + 1) * (x_max - x_min) / (K + 1)


def target_head(targets: np.ndarray, width: float, gamma: float = 1.0) -> SoftmaxHead:
    """Head with logits ``-(x - t_c)^2 / (2 s^2)`` (``s = width``), written linearly in ``x``."""
    t = np.asarray(targets, dtype=float)
    s2 = float(width) ** 2
    return SoftmaxHead(t / s2, -0.5 * t * t / s2, gamma)
