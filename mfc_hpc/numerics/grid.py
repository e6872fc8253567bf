"""The state grid: the only object that knows the state dimension ``d`` (METHOD.md 4, 8).

Nodes ``x_i`` for a multi-index ``i = (i_1, .., i_d)``, ``i_k = 0..M_k-1``, spacing
``h_k = (x_{R,k} - x_{L,k}) / (M_k - 1)`` on the box ``prod_k [x_{L,k}, x_{R,k}]``
(reflecting walls). Weights are products of the 1-D trapezoid weights,
``w_i = prod_k w^(k)_{i_k}`` (``w^(k) = h_k`` inside, ``h_k/2`` at the walls); the face
factor of an edge along axis ``k`` is ``a^(k)_i = prod_{l != k} w^(l)_{i_l}`` (1 when
``d = 1``).

Array convention of every kernel: node axes come in axis order ``1..d`` after any leading
axes (level, class), so a per-level density is ``rho[l, c, i_1, .., i_d]``; C order then
makes the last state axis the fastest, as in the DMDA (its x direction).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["StateGrid", "BoxGeometry", "axis_weights"]


def axis_weights(h: float, M: int, first: int = 0, count: int | None = None) -> np.ndarray:
    """1-D trapezoid weights ``w_i`` (``h`` inside, ``h/2`` at the walls) of global nodes
    ``first .. first+count-1`` of an axis with ``M`` nodes."""
    count = M - first if count is None else count
    gi = np.arange(first, first + count)
    w = np.full(count, h)
    w[(gi == 0) | (gi == M - 1)] = 0.5 * h
    return w


@dataclass(frozen=True)
class StateGrid:
    """Uniform nodes on the box ``prod_k [lower_k, upper_k]`` with ``nodes[k]`` per axis."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    nodes: tuple[int, ...]

    def __post_init__(self) -> None:
        lo, up, nd = (tuple(float(v) for v in self.lower), tuple(float(v) for v in self.upper),
                      tuple(int(v) for v in self.nodes))
        if not (len(lo) == len(up) == len(nd) >= 1):
            raise ValueError(f"StateGrid: lower, upper and nodes need one entry per axis, got {lo}, {up}, {nd}")
        if any(m < 2 for m in nd) or any(b <= a for a, b in zip(lo, up)):
            raise ValueError(f"StateGrid: need nodes >= 2 and upper > lower, got {lo}, {up}, {nd}")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", up)
        object.__setattr__(self, "nodes", nd)

    @classmethod
    def line(cls, x_min: float, x_max: float, M: int) -> "StateGrid":
        """The 1-D grid of ``M`` nodes on ``[x_min, x_max]``."""
        return cls((x_min,), (x_max,), (M,))

    # ------------------------------------------------------------------ sizes
    @property
    def ndim(self) -> int:
        return len(self.nodes)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.nodes

    @property
    def size(self) -> int:
        return int(np.prod(self.nodes))

    @property
    def h(self) -> tuple[float, ...]:
        return tuple((b - a) / (m - 1) for a, b, m in zip(self.lower, self.upper, self.nodes))

    @property
    def lengths(self) -> tuple[float, ...]:
        return tuple(b - a for a, b in zip(self.lower, self.upper))

    @property
    def volume(self) -> float:
        return float(np.prod(self.lengths))

    def axis(self, k: int) -> np.ndarray:
        """Coordinates of the nodes along axis ``k``."""
        return self.lower[k] + self.h[k] * np.arange(self.nodes[k])

    def axes(self) -> list[np.ndarray]:
        return [self.axis(k) for k in range(self.ndim)]

    def points(self) -> np.ndarray:
        """Coordinates of every node, ``[*nodes, d]``."""
        return np.stack(np.meshgrid(*self.axes(), indexing="ij"), axis=-1)

    def weights(self) -> np.ndarray:
        """Product weights ``w_i`` of all nodes, shape ``nodes``."""
        return BoxGeometry(self, (0,) * self.ndim, self.nodes).w

    def with_nodes(self, nodes: tuple[int, ...]) -> "StateGrid":
        return StateGrid(self.lower, self.upper, tuple(nodes))

    def transposed(self, perm: tuple[int, ...]) -> "StateGrid":
        """The grid with its axes permuted (axis ``k`` of the result is axis ``perm[k]``)."""
        return StateGrid(tuple(self.lower[p] for p in perm), tuple(self.upper[p] for p in perm),
                         tuple(self.nodes[p] for p in perm))

    def describe(self) -> str:
        return " x ".join(f"{m} on [{a:g}, {b:g}]" for a, b, m in zip(self.lower, self.upper, self.nodes))


class BoxGeometry:
    """Weights and face factors of a box of nodes ``start .. start+count-1`` of a grid.

    ``w``: product weights, shape ``count``; ``w1d[k]``: the 1-D weights along axis ``k``;
    ``face[k]``: ``a^(k)`` of the edges along axis ``k``, shaped ``count`` with axis ``k``
    of length 1 (the factor is the same at both ends of an edge, so it broadcasts over the
    edges ``(i, i + e_k)`` of the box).
    """

    def __init__(self, grid: StateGrid, start: tuple[int, ...], count: tuple[int, ...]) -> None:
        self.grid = grid
        self.start = tuple(int(s) for s in start)
        self.count = tuple(int(c) for c in count)
        d = grid.ndim
        self.h = grid.h
        self.w1d = [axis_weights(self.h[k], grid.nodes[k], self.start[k], self.count[k]) for k in range(d)]

    def _outer(self, skip: int | None) -> np.ndarray:
        d = self.grid.ndim
        out = np.ones([1 if k == skip else self.count[k] for k in range(d)])
        for k in range(d):
            if k != skip:
                out = out * self.w1d[k].reshape([-1 if l == k else 1 for l in range(d)])
        return out

    @cached_property
    def w(self) -> np.ndarray:
        if self.grid.ndim == 1:
            return self.w1d[0]
        return self._outer(None)

    @cached_property
    def face(self) -> list[np.ndarray]:
        return [self._outer(k) for k in range(self.grid.ndim)]

    def w_axis(self, k: int) -> np.ndarray:
        """``w^(k)_{i_k}`` broadcast over the box (axis ``k`` full, the others of length 1)."""
        d = self.grid.ndim
        return self.w1d[k].reshape([-1 if l == k else 1 for l in range(d)])

    def sub(self, start: tuple[int, ...], count: tuple[int, ...]) -> "BoxGeometry":
        """The geometry of a sub-box (global ``start``)."""
        return BoxGeometry(self.grid, start, count)
