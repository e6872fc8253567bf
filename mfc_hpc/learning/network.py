"""The trained residual network, extracted from a solution of the optimality system.

Block ``n = 0..N-1`` is ``x -> x + dt U_n(x)`` on ``R^d`` (``d = 1, 2``), where ``U_n`` is
the layer drift ``b^(k)_i`` of METHOD.md section 8 (:func:`mfc_hpc.numerics.quantities.drift`)
evaluated at the midpoint ``z^{n+1/2}`` and interpolated piecewise-linearly on the Kuhn
triangulation of the grid (:mod:`mfc_hpc.learning.cpwl`; in 1-D the cells, in 2-D each
cell split along its diagonal ``i -> i+e_1+e_2``), constant along the outward normals
outside the box (``x`` clipped per axis). The triangles are those of
:func:`~mfc_hpc.numerics.quantities.cell_det_excess`, so a block is invertible on the box
exactly when ``det(I + dt grad U_n) > 0`` on every triangle (:meth:`ResidualNetwork.compression`
below 1). With noise, each block adds ``sqrt(2 nu dt) xi`` (``xi ~ N(0, I)``) and reflects
at the walls, axis by axis: the Euler-Maruyama step of ``dX = u dt + sqrt(2 nu) dW`` with
no-flux walls.

A CPWL function is a ReLU network (:mod:`mfc_hpc.learning.cpwl`). What is stored is the
*nodal form*: the drift values ``b[n, k, *i]`` on the grid, which are the output weights
of the hat-function ReLU network (whose hidden weights are fixed by the grid); the ONNX
export writes that ReLU network out (:mod:`mfc_hpc.learning.onnx_export`). In 1-D the file
also carries the one-hidden-layer ReLU form of the 1-D releases,

    U_n(x) = sum_i c_{n,i} relu(x - x_i) + b_{n,0},
    c_{n,0} = s_{n,0},  c_{n,i} = s_{n,i} - s_{n,i-1} (0 < i < M-1),  c_{n,M-1} = -s_{n,M-2},

with cell slopes ``s_{n,i} = (b_{n,i+1} - b_{n,i}) / h`` (hidden weights 1, hidden biases
``-x_i``, output weights ``c``, output bias ``b_{n,0}``), and the 1-D forward pass uses it,
as the releases did (same numbers).

Model file (NPZ, format ``mfc_hpc.network`` version 2; every array named here):

============================  ===============  ============================================
name                          shape            meaning
============================  ===============  ============================================
``format``                    ()               ``"mfc_hpc.network"``
``format_version``            ()               ``2``
``dim``                       ()               state dimension ``d``
``grid_lower``/``grid_upper`` (d,)             the box ``prod_k [x_{L,k}, x_{R,k}]``
``grid_nodes``                (d,)             ``M_k`` nodes per axis
``interpolant``               ()               ``"kuhn"`` (the triangulation above)
``drift``                     (N, d, *M)       ``b^{n+1/2}[k, i]``
``dt``, ``nu``                ()               layer step, noise
``head_weights``              (K, d)           soft-max logits ``w_c . x + b_c`` ...
``head_biases``               (K,)             ... of the read-out
``gamma``                     ()               loss weight ``G_c = gamma CE_c``
``class_names``               (K,)             labels
``nodes``                     (M,)             1-D only: ``x_i``
``hidden_weight``             (N, M)           1-D only: ``W1[n, i]`` (all 1)
``hidden_bias``               (N, M)           1-D only: ``B1[n, i] = -x_i``
``output_weight``             (N, M)           1-D only: ``W2[n, i] = c_{n,i}``
``output_bias``               (N,)             1-D only: ``B2[n] = b_{n,0}``
``projection_*``              various          optional: raw features -> ``x``
                                               (:class:`mfc_hpc.problem.projection.Projection`)
``config``                    ()               optional: the run's configuration as JSON
============================  ===============  ============================================

Version 1 (the 1-D releases: ``nodes``, ``drift`` ``(N, M)``, the ReLU form, head
``(K,)``) is read too. :meth:`ResidualNetwork.load` checks format, shapes and finiteness,
and that the 1-D ReLU form agrees with the drift.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..numerics.depth import layers, split
from ..numerics.grid import BoxGeometry, StateGrid
from ..numerics.model import Discretisation
from ..numerics.quantities import cell_det_excess, compression, drift
from ..problem.losses import SoftmaxHead
from ..problem.projection import Projection
from .cpwl import grid_simplices, interpolate, locate, simplex_cover

__all__ = ["ModelError", "ResidualNetwork", "network_from_state", "layer_drift", "relu_parameters", "reflect",
           "classification_report", "evaluate", "state_from_solution", "NETWORK_FORMAT", "NETWORK_VERSION"]

NETWORK_FORMAT = "mfc_hpc.network"
NETWORK_VERSION = 2


class ModelError(BadInput):
    """A model file that cannot be used; the message (one line) names the problem."""


def relu_parameters(nodes: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Hidden weights/biases and output weights/bias of the 1-D ReLU form of ``b[n, i]``."""
    nodes = np.asarray(nodes, dtype=float)
    b = np.atleast_2d(np.asarray(b, dtype=float))
    s = np.diff(b, axis=1) / np.diff(nodes)  # cell slopes [n, M-1]
    c = np.zeros_like(b)
    c[:, 0] = s[:, 0]
    c[:, 1:-1] = np.diff(s, axis=1)
    c[:, -1] = -s[:, -1]
    W1 = np.ones_like(b)
    B1 = np.broadcast_to(-nodes, b.shape).copy()
    return W1, B1, c, b[:, 0].copy()


def reflect(x: np.ndarray, lo, hi) -> np.ndarray:
    """Fold states back into ``[lo_k, hi_k]`` per axis (reflecting walls, any overshoot)."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    L = hi - lo
    y = np.mod(x - lo, 2.0 * L)
    return lo + np.where(y > L, 2.0 * L - y, y)


@dataclass
class ResidualNetwork:
    """``N`` residual blocks ``x -> x + dt U_n(x)`` on ``R^d`` and a soft-max head.

    ``drift[n, k, *i]`` are the nodal values of ``U_n`` on ``grid``. Build with
    :func:`network_from_state` or :meth:`load`; see the module docstring. States are
    ``x[s, d]``; in 1-D a flat ``x[s]`` is accepted and kept flat.
    """

    grid: StateGrid
    drift: np.ndarray
    dt: float
    nu: float
    head: SoftmaxHead
    class_names: tuple[str, ...]
    projection: Projection | None = None
    config: dict | None = None
    W1: np.ndarray | None = field(init=False, repr=False, default=None)
    B1: np.ndarray | None = field(init=False, repr=False, default=None)
    W2: np.ndarray | None = field(init=False, repr=False, default=None)
    B2: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.drift = np.asarray(self.drift, dtype=float)
        d = self.grid.ndim
        if self.drift.ndim != 2 + d or self.drift.shape[1] != d or self.drift.shape[2:] != self.grid.nodes:
            raise ValueError(f"network: drift {self.drift.shape} does not match the grid {self.grid.nodes}")
        if d == 1:
            self.W1, self.B1, self.W2, self.B2 = relu_parameters(self.grid.axis(0), self.drift[:, 0])

    # ------------------------------------------------------------------ shape
    @property
    def N(self) -> int:
        return self.drift.shape[0]

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def M(self) -> int:
        """Hidden units per block: one per node."""
        return self.grid.size

    @property
    def K(self) -> int:
        return self.head.K

    @property
    def T(self) -> float:
        return self.N * self.dt

    @property
    def nodes(self) -> np.ndarray:
        """The nodes of a 1-D network (``x_i``)."""
        return self.grid.axis(0)

    # ------------------------------------------------------------------ evaluation
    def _flat(self, x: np.ndarray) -> bool:
        return self.ndim == 1 and np.ndim(x) == 1

    def velocity(self, n: int, x: np.ndarray) -> np.ndarray:
        """``U_n(x)``: 1-D the ReLU form ``W2 . relu(W1 x + B1) + B2``; 2-D the Kuhn
        interpolant (same shape as ``x``)."""
        x = np.asarray(x, dtype=float)
        if self.ndim == 1:
            flat = x.ndim == 1
            z = x if flat else x[:, 0]
            a = np.maximum(z[..., None] * self.W1[n] + self.B1[n], 0.0)
            u = a @ self.W2[n] + self.B2[n]
            return u if flat else u[:, None]
        s = locate(x, self.grid.lower, self.grid.h, self.grid.nodes)
        return interpolate(self.drift[n], s).T

    def forward(self, x: np.ndarray, noise: bool = False, rng: np.random.Generator | int | None = None,
                path: bool = False) -> np.ndarray:
        """Push states ``x`` through the ``N`` blocks; with ``noise`` each block adds
        ``sqrt(2 nu dt) xi`` and reflects at the walls. Returns ``x_N`` or, with ``path``,
        the whole trajectory ``[n, s(, d)]``."""
        x = np.array(x, dtype=float, copy=True)
        rng = np.random.default_rng(rng) if noise else None
        lo, hi = np.array(self.grid.lower), np.array(self.grid.upper)
        if self._flat(x):
            lo, hi = lo[0], hi[0]
        sig = np.sqrt(2.0 * self.nu * self.dt)
        out = [x.copy()] if path else None
        for n in range(self.N):
            x = x + self.dt * self.velocity(n, x)
            if noise:
                x = x + sig * rng.standard_normal(x.shape)
                x = reflect(x, lo, hi)
            if path:
                out.append(x.copy())
        return np.array(out) if path else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class of each state after the network (deterministic blocks)."""
        return self.head.predict(self.forward(x))

    def det_excess(self) -> np.ndarray:
        """``det(I + dt grad U_n) - 1`` per block and simplex (METHOD.md 8)."""
        return cell_det_excess(self.drift, self.grid.h, self.dt)

    def compression(self) -> float:
        """``max(1 - det(I + dt grad U_n))`` over blocks and simplices (< 1: every block is
        invertible on the box); ``dt max(-d_x U_n)`` in 1-D."""
        return compression(self.drift, self.grid.h, self.dt)

    def block_image(self, n: int) -> np.ndarray:
        """The images ``[T, d+1, d]`` of the simplices of the grid under block ``n`` (the block
        is affine on each simplex, so its image is the simplex of the mapped vertices)."""
        pts = self.grid.points().reshape(-1, self.ndim)
        moved = pts + self.dt * self.drift[n].reshape(self.ndim, -1).T
        return moved[grid_simplices(self.grid.nodes)]

    def inverse_block(self, n: int, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preimages in the box of states ``y[s, d]`` under block ``n``: ``(x, count)`` with
        ``count[s]`` the number of simplices whose image contains ``y_s`` (1 for every point
        of the image when the block is invertible, :meth:`compression` < 1) and ``x_s`` the
        preimage found in the first (NaN where there is none). Brute force over the
        simplices (tests and small grids)."""
        S = grid_simplices(self.grid.nodes)
        pts = self.grid.points().reshape(-1, self.ndim)
        count, first, lam = simplex_cover(self.block_image(n), np.asarray(y, dtype=float).reshape(len(y), -1))
        x = np.full((len(y), self.ndim), np.nan)
        ok = first >= 0
        x[ok] = np.einsum("sv,svd->sd", lam[ok], pts[S[first[ok]]])
        return x, count

    # ------------------------------------------------------------------ files
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the model file (layout in the module docstring)."""
        g = self.grid
        W = self.head.weights
        a = {
            "format": np.array(NETWORK_FORMAT), "format_version": np.array(NETWORK_VERSION),
            "dim": np.array(g.ndim), "grid_lower": np.array(g.lower), "grid_upper": np.array(g.upper),
            "grid_nodes": np.array(g.nodes, dtype=np.int64), "interpolant": np.array("kuhn"),
            "drift": self.drift, "dt": np.array(self.dt), "nu": np.array(self.nu),
            "head_weights": W, "head_biases": self.head.biases, "gamma": np.array(self.head.gamma),
            "class_names": np.array(self.class_names, dtype=str),
        }
        if g.ndim == 1:
            a.update({"nodes": g.axis(0), "hidden_weight": self.W1, "hidden_bias": self.B1,
                      "output_weight": self.W2, "output_bias": self.B2})
        if self.projection is not None:
            a.update(self.projection.to_arrays())
        if self.config is not None:
            a["config"] = np.array(json.dumps(self.config, default=_jsonable))
        return a

    def save(self, path: str | Path) -> Path:
        """Write the model file atomically (temporary, fsync, rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **self.to_arrays())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            from ..errors import OutputError
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ResidualNetwork":
        """Read a model file (version 1 or 2); a missing, damaged or inconsistent file
        raises :class:`ModelError`."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model: no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as f:
                a = {k: f[k] for k in f.files}
        except Exception as e:  # noqa: BLE001 - zip/npz internals raise assorted errors on damaged files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"model: {path} is not a readable NPZ model file ({msg})") from None
        try:
            return cls._from_arrays(a, path)
        except ModelError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ModelError(f"model: {path}: {' '.join(str(e).split())}") from None

    @classmethod
    def _from_arrays(cls, a: dict, path: Path) -> "ResidualNetwork":
        if str(a.get("format", "")) != NETWORK_FORMAT:
            raise ModelError(f"model: {path} is not an {NETWORK_FORMAT} file (no 'format' entry)")
        ver = int(a.get("format_version", -1))
        if ver not in (1, 2):
            raise ModelError(f"model: {path} has format_version {a.get('format_version')}, this reads 1 and 2")
        need = ["drift", "dt", "nu", "head_weights", "head_biases", "gamma", "class_names"]
        need += ["nodes", "hidden_weight", "hidden_bias", "output_weight", "output_bias"] if ver == 1 else \
            ["dim", "grid_lower", "grid_upper", "grid_nodes"]
        miss = [k for k in need if k not in a]
        if miss:
            raise ModelError(f"model: {path} lacks {', '.join(miss)}")
        b = np.asarray(a["drift"], dtype=float)
        if ver == 1:
            nodes = np.asarray(a["nodes"], dtype=float)
            if nodes.ndim != 1 or b.ndim != 2 or b.shape[1] != nodes.size or nodes.size < 2:
                raise ModelError(f"model: {path}: drift {b.shape} does not match nodes {nodes.shape}")
            if not (np.all(np.isfinite(nodes)) and np.all(np.diff(nodes) > 0)):
                raise ModelError(f"model: {path}: nodes must increase and all values be finite")
            h = (nodes[-1] - nodes[0]) / (nodes.size - 1)
            if not np.allclose(np.diff(nodes), h, rtol=1e-9, atol=0.0):
                raise ModelError(f"model: {path}: nodes must be evenly spaced")
            grid = StateGrid.line(float(nodes[0]), float(nodes[-1]), nodes.size)
            b = b[:, None, :]
        else:
            dim = int(a["dim"])
            lo, hi = np.atleast_1d(a["grid_lower"]).astype(float), np.atleast_1d(a["grid_upper"]).astype(float)
            M = np.atleast_1d(a["grid_nodes"]).astype(int)
            if dim not in (1, 2) or lo.size != dim or hi.size != dim or M.size != dim:
                raise ModelError(f"model: {path}: dim {dim} with grid_lower {lo.shape}, grid_upper {hi.shape}, "
                                 f"grid_nodes {M.shape} (d = 1 or 2, one entry per axis)")
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo) and np.all(M >= 2)):
                raise ModelError(f"model: {path}: the grid needs finite grid_lower < grid_upper and >= 2 nodes per axis")
            if str(a.get("interpolant", "kuhn")) != "kuhn":
                raise ModelError(f"model: {path}: unknown interpolant {str(a['interpolant'])!r} (this reads 'kuhn')")
            grid = StateGrid(tuple(lo), tuple(hi), tuple(int(m) for m in M))
            if b.shape != (b.shape[0], dim) + grid.nodes or b.shape[0] < 1:
                raise ModelError(f"model: {path}: drift {b.shape} does not match the grid "
                                 f"(N, {dim}, {', '.join(map(str, grid.nodes))})")
        if not np.all(np.isfinite(b)):
            raise ModelError(f"model: {path}: the drift holds non-finite values")
        dt, nu = float(a["dt"]), float(a["nu"])
        if not (np.isfinite(dt) and dt > 0 and np.isfinite(nu) and nu >= 0):
            raise ModelError(f"model: {path}: dt must be > 0 and nu >= 0, got dt {dt}, nu {nu}")
        W = np.asarray(a["head_weights"], dtype=float)
        if W.ndim == 1:
            W = W[:, None]
        if W.ndim != 2 or W.shape[1] != grid.ndim:
            raise ModelError(f"model: {path}: head_weights {W.shape} for a {grid.ndim}-D state")
        try:
            head = SoftmaxHead(W, a["head_biases"], float(a["gamma"]))
        except ValueError as e:
            raise ModelError(f"model: {path}: {e}") from None
        if not (np.all(np.isfinite(head.weights)) and np.all(np.isfinite(head.biases))):
            raise ModelError(f"model: {path}: the head holds non-finite values")
        names = tuple(str(s) for s in np.atleast_1d(a["class_names"]))
        if len(names) != head.K:
            raise ModelError(f"model: {path}: {len(names)} class names for a head of {head.K} classes")
        proj = None
        if "projection_direction" in a:
            proj = Projection.from_arrays(a)
            if proj.ndim != grid.ndim:
                raise ModelError(f"model: {path}: the projection gives {proj.ndim} feature(s) for a "
                                 f"{grid.ndim}-D state")
        cfg = None
        if "config" in a:
            try:
                cfg = json.loads(str(a["config"]))
            except json.JSONDecodeError:
                raise ModelError(f"model: {path}: the 'config' entry is not JSON") from None
        net = cls(grid, b, dt, nu, head, names, proj, cfg)
        if grid.ndim == 1 and "output_weight" in a:
            for k, mine in (("hidden_weight", net.W1), ("hidden_bias", net.B1), ("output_weight", net.W2),
                            ("output_bias", net.B2)):
                if k not in a:
                    raise ModelError(f"model: {path} lacks {k}")
                if a[k].shape != mine.shape or not np.allclose(a[k], mine, rtol=1e-12, atol=1e-12):
                    raise ModelError(f"model: {path}: {k} disagrees with the drift (edited file?)")
        return net


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def state_from_solution(sol: dict) -> np.ndarray:
    """The whole state ``Z[n, *i, a]`` of a :func:`mfc_hpc.fileio.solution.read_solution`
    result (``rho``, ``phi`` stored as ``(N+1, K, *nodes)``)."""
    rho = np.moveaxis(np.asarray(sol["rho"], dtype=float), 1, -1)
    phi = np.moveaxis(np.asarray(sol["phi"], dtype=float), 1, -1)
    return np.concatenate([rho, phi], axis=-1)


def layer_drift(Z: np.ndarray, d: Discretisation) -> np.ndarray:
    """The drift ``b^{n+1/2}[n, k, *i]`` of every layer of a whole state ``Z[n, *i, a]``
    (:func:`mfc_hpc.numerics.quantities.drift` at the midpoints ``z^{n+1/2}``)."""
    rho, phi = split(layers(Z, 0.5), d.K)
    geom = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)
    return drift(rho, phi, geom, d)


def network_from_state(Z: np.ndarray, d: Discretisation, head: SoftmaxHead,
                       class_names: tuple[str, ...] | None = None, projection: Projection | None = None,
                       config: dict | None = None) -> ResidualNetwork:
    """The network of a whole solution ``Z[n, *i, a]``: the drift of every layer."""
    if Z.shape != d.state_shape:
        raise ValueError(f"network_from_state: state {Z.shape} is not {d.state_shape}")
    names = tuple(class_names) if class_names else tuple(f"class{c}" for c in range(d.K))
    return ResidualNetwork(d.grid, layer_drift(Z, d), d.dt, d.nu, head, names, projection, config)


def classification_report(head: SoftmaxHead, xN: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy (without ``gamma``) and confusion matrix
    ``[true, predicted]`` of the head applied to states ``xN``."""
    y = np.asarray(y, dtype=int)
    pred = head.predict(xN)
    ce = head.cross_entropy(xN)[np.arange(y.size), y]
    conf = np.zeros((head.K, head.K), dtype=int)
    np.add.at(conf, (y, pred), 1)
    return {"samples": int(y.size), "accuracy": float((pred == y).mean()) if y.size else float("nan"),
            "cross_entropy": float(ce.mean()) if y.size else float("nan"),
            "confusion": conf.tolist()}


def evaluate(net: ResidualNetwork, x: np.ndarray, y: np.ndarray) -> dict:
    """:func:`classification_report` of the network on states ``x`` with labels ``y``."""
    return classification_report(net.head, net.forward(x), y)
