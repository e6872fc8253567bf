"""The trained residual network, extracted from a solution of the optimality system.

Block ``n = 0..N-1`` is ``x -> x + dt U_n(x)`` where ``U_n`` is the piecewise-linear
interpolation of the layer drift ``b^{n+1/2}_i`` (METHOD.md section 4, evaluated at the
midpoint ``z^{n+1/2}``) on the nodes ``x_i``, held constant outside ``[x_0, x_{M-1}]``.
Written as one hidden ReLU layer with a unit per node:

    U_n(x) = sum_i c_{n,i} relu(x - x_i) + b_{n,0},
    c_{n,0} = s_{n,0},  c_{n,i} = s_{n,i} - s_{n,i-1} (0 < i < M-1),  c_{n,M-1} = -s_{n,M-2},

with cell slopes ``s_{n,i} = (b_{n,i+1} - b_{n,i}) / h``: hidden weights 1, hidden biases
``-x_i``, output weights ``c_{n,i}``, output bias ``b_{n,0}``. With noise, each block adds
``sqrt(2 nu dt) xi`` (``xi ~ N(0, 1)``) and reflects at the walls ``x_L, x_R``, which is
the Euler-Maruyama step of ``dX = u dt + sqrt(2 nu) dW`` with no-flux ends.

Model file (NPZ, format ``mfc_hpc.network`` version 1; every array named here):

==========================  ==========  =================================================
name                        shape       meaning
==========================  ==========  =================================================
``format``                  ()          ``"mfc_hpc.network"``
``format_version``          ()          ``1``
``nodes``                   (M,)        ``x_i``
``drift``                   (N, M)      ``b^{n+1/2}_i``
``dt``, ``nu``              ()          layer step, noise
``hidden_weight``           (N, M)      ``W1[n, i]`` (all 1)
``hidden_bias``             (N, M)      ``B1[n, i] = -x_i``
``output_weight``           (N, M)      ``W2[n, i] = c_{n,i}``
``output_bias``             (N,)        ``B2[n] = b_{n,0}``
``head_weights``            (K,)        soft-max logits ``w_c x + b_c`` ...
``head_biases``             (K,)        ... of the read-out
``gamma``                   ()          loss weight ``G_c = gamma CE_c``
``class_names``             (K,)        labels
``projection_*``            various     optional: raw features -> ``x`` (see
                                        :class:`mfc_hpc.data.Projection`)
``config``                  ()          optional: the run's configuration as JSON
==========================  ==========  =================================================

``forward`` uses the ReLU form (the network as stored), vectorised over samples.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .head import SoftmaxHead
from .scheme import Discretisation, _layers, _split, drift

__all__ = ["ModelError", "ResidualNetwork", "network_from_state", "relu_parameters",
           "evaluate", "NETWORK_FORMAT"]

NETWORK_FORMAT = "mfc_hpc.network"


class ModelError(ValueError):
    """A model file that cannot be used; the message names the problem."""


def relu_parameters(nodes: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Hidden weights/biases and output weights/bias of the ReLU form of ``b[n, i]``."""
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


@dataclass
class ResidualNetwork:
    """``N`` residual blocks with one hidden ReLU layer of ``M`` units each, and a head.

    Build with :func:`network_from_state` or :meth:`load`; see the module docstring.
    """

    nodes: np.ndarray
    drift: np.ndarray
    dt: float
    nu: float
    head: SoftmaxHead
    class_names: tuple[str, ...]
    projection: object | None = None
    config: dict | None = None
    W1: np.ndarray = field(init=False, repr=False)
    B1: np.ndarray = field(init=False, repr=False)
    W2: np.ndarray = field(init=False, repr=False)
    B2: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nodes = np.asarray(self.nodes, dtype=float)
        self.drift = np.atleast_2d(np.asarray(self.drift, dtype=float))
        self.W1, self.B1, self.W2, self.B2 = relu_parameters(self.nodes, self.drift)

    # ------------------------------------------------------------------ shape
    @property
    def N(self) -> int:
        return self.drift.shape[0]

    @property
    def M(self) -> int:
        return self.nodes.size

    @property
    def K(self) -> int:
        return self.head.K

    @property
    def T(self) -> float:
        return self.N * self.dt

    @property
    def domain(self) -> tuple[float, float]:
        return float(self.nodes[0]), float(self.nodes[-1])

    # ------------------------------------------------------------------ evaluation
    def velocity(self, n: int, x: np.ndarray) -> np.ndarray:
        """``U_n(x)`` from the ReLU layer: ``W2 . relu(W1 x + B1) + B2``."""
        x = np.asarray(x, dtype=float)
        a = np.maximum(x[..., None] * self.W1[n] + self.B1[n], 0.0)
        return a @ self.W2[n] + self.B2[n]

    def forward(self, x: np.ndarray, noise: bool = False, rng: np.random.Generator | int | None = None,
                path: bool = False) -> np.ndarray:
        """Push states ``x`` through the ``N`` blocks; with ``noise`` each block adds
        ``sqrt(2 nu dt) xi`` and reflects at the walls. Returns ``x_N`` or, with
        ``path``, the whole trajectory ``[n, s]``."""
        x = np.array(x, dtype=float, copy=True)
        rng = np.random.default_rng(rng) if noise else None
        lo, hi = self.domain
        sig = np.sqrt(2.0 * self.nu * self.dt)
        out = [x.copy()] if path else None
        for n in range(self.N):
            x = x + self.dt * self.velocity(n, x)
            if noise:
                x = x + sig * rng.standard_normal(x.shape)
                x = _reflect(x, lo, hi)
            if path:
                out.append(x.copy())
        return np.array(out) if path else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class of each state after the network (deterministic blocks)."""
        return self.head.predict(self.forward(x))

    def compression(self) -> float:
        """``dt max(-d_x U_n)`` over blocks and cells (< 1: the network is invertible)."""
        return float(self.dt * np.max(-np.diff(self.drift, axis=1) / np.diff(self.nodes)))

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the model file (layout in the module docstring)."""
        path = Path(path)
        arrays = {
            "format": np.array(NETWORK_FORMAT), "format_version": np.array(1),
            "nodes": self.nodes, "drift": self.drift, "dt": np.array(self.dt), "nu": np.array(self.nu),
            "hidden_weight": self.W1, "hidden_bias": self.B1, "output_weight": self.W2,
            "output_bias": self.B2, "head_weights": self.head.weights, "head_biases": self.head.biases,
            "gamma": np.array(self.head.gamma), "class_names": np.array(self.class_names, dtype=str),
        }
        if self.projection is not None:
            arrays.update(self.projection.to_arrays())
        if self.config is not None:
            arrays["config"] = np.array(json.dumps(self.config, default=_jsonable))
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ResidualNetwork":
        """Read a model file; a missing or inconsistent file raises :class:`ModelError`."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model: no such file: {path}")
        try:
            with np.load(path, allow_pickle=False) as f:
                a = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ModelError(f"model: {path} is not an NPZ model file ({str(e).splitlines()[0]})") from None
        if str(a.get("format", "")) != NETWORK_FORMAT:
            raise ModelError(f"model: {path} is not an {NETWORK_FORMAT} file (no 'format' entry)")
        if int(a.get("format_version", -1)) != 1:
            raise ModelError(f"model: {path} has format_version {a.get('format_version')}, this reads 1")
        need = ("nodes", "drift", "dt", "nu", "hidden_weight", "hidden_bias", "output_weight",
                "output_bias", "head_weights", "head_biases", "gamma", "class_names")
        miss = [k for k in need if k not in a]
        if miss:
            raise ModelError(f"model: {path} lacks {', '.join(miss)}")
        nodes, b = a["nodes"], a["drift"]
        if nodes.ndim != 1 or b.ndim != 2 or b.shape[1] != nodes.size or nodes.size < 2:
            raise ModelError(f"model: {path}: drift {b.shape} does not match nodes {nodes.shape}")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(nodes)) and np.all(np.diff(nodes) > 0)):
            raise ModelError(f"model: {path}: nodes must increase and all values be finite")
        try:
            head = SoftmaxHead(a["head_weights"], a["head_biases"], float(a["gamma"]))
        except ValueError as e:
            raise ModelError(f"model: {path}: {e}") from None
        names = tuple(str(s) for s in np.atleast_1d(a["class_names"]))
        if len(names) != head.K:
            raise ModelError(f"model: {path}: {len(names)} class names for a head of {head.K} classes")
        proj = None
        if "projection_direction" in a:
            from .data import Projection
            proj = Projection.from_arrays(a)
        cfg = json.loads(str(a["config"])) if "config" in a else None
        net = cls(nodes, b, float(a["dt"]), float(a["nu"]), head, names, proj, cfg)
        for k, mine in (("hidden_weight", net.W1), ("hidden_bias", net.B1), ("output_weight", net.W2),
                        ("output_bias", net.B2)):
            if a[k].shape != mine.shape or not np.allclose(a[k], mine, rtol=1e-12, atol=1e-12):
                raise ModelError(f"model: {path}: {k} disagrees with the drift (edited file?)")
        return net


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold states back into ``[lo, hi]`` (reflecting walls, any overshoot)."""
    L = hi - lo
    y = np.mod(x - lo, 2.0 * L)
    return lo + np.where(y > L, 2.0 * L - y, y)


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def network_from_state(Z: np.ndarray, d: Discretisation, head: SoftmaxHead,
                       class_names: tuple[str, ...] | None = None, projection=None,
                       config: dict | None = None) -> ResidualNetwork:
    """The network of a solution ``Z[n, i, a]``: drift ``b^{n+1/2}`` of every layer."""
    rho, phi = _split(_layers(Z, 0.5), d.K)
    b = drift(rho, phi, d)
    names = tuple(class_names) if class_names else tuple(f"class{c}" for c in range(d.K))
    return ResidualNetwork(d.x, b, d.dt, d.nu, head, names, projection, config)


def evaluate(net: ResidualNetwork, x: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy (without ``gamma``) and confusion matrix
    ``[true, predicted]`` of the network on states ``x`` with labels ``y``."""
    xN = net.forward(x)
    return classification_report(net.head, xN, y)


def classification_report(head: SoftmaxHead, xN: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, cross-entropy and confusion matrix of the head applied to ``xN``."""
    y = np.asarray(y, dtype=int)
    pred = head.predict(xN)
    ce = head.cross_entropy(xN)[np.arange(y.size), y]
    conf = np.zeros((head.K, head.K), dtype=int)
    np.add.at(conf, (y, pred), 1)
    return {"samples": int(y.size), "accuracy": float((pred == y).mean()) if y.size else float("nan"),
            "cross_entropy": float(ce.mean()) if y.size else float("nan"),
            "confusion": conf.tolist()}
