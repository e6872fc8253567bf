"""Config -> the discrete problem: the grid (domain chosen from the data if not given),
the :class:`~mfc_hpc.numerics.model.Discretisation`, the class densities and the terminal
condition. This is where a ``[data]`` table is read, split, projected and turned into
densities: once per run (:func:`build_problem`); other meshes of the same run
(:meth:`Problem.on_mesh`: grid sequencing, sweeps) reuse the samples in memory.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..config import Config, LossConfig
from ..errors import ConfigError
from ..numerics.grid import BoxGeometry, StateGrid
from ..numerics.model import Discretisation, RunningCost
from ..numerics.terminal import BoundaryData, BridgeTerminal, KLTerminal
from .densities import gaussian_density, kde_bandwidth, kde_density, normalise
from .losses import SoftmaxHead, default_targets, fit_logistic, quadratic_loss, softmax_loss, target_head
from .projection import PreparedData, prepare

__all__ = ["ClassData", "Problem", "build_problem", "read_samples", "DATA_MARGIN"]

#: the domain chosen from the data: the training states' range widened by this many
#: kernel widths (and at least 1.5 standard deviations) on each side
DATA_MARGIN = 3.0


@dataclass(frozen=True)
class ClassData:
    """One class: its prior and its data (Gaussian mean/covariance or samples + widths)."""

    name: str
    prior: float
    mean: np.ndarray | None = None
    cov: np.ndarray | None = None
    samples: np.ndarray | None = None  # [s, d]
    bandwidth: tuple[float, ...] | None = None
    key: str = "classes[0]"

    def density(self, grid: StateGrid) -> tuple[np.ndarray, float]:
        if self.samples is None:
            return gaussian_density(grid, self.mean, self.cov)
        return kde_density(grid, self.samples, self.bandwidth)


def read_samples(path: str, ndim: int, key: str = "samples") -> np.ndarray:
    """``ndim`` columns of finite numbers from ``.npy``, ``.csv`` or ``.txt``: ``[s, d]``."""
    try:
        if path.endswith(".npy"):
            a = np.load(path, allow_pickle=False)
        else:
            a = np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=2 if ndim > 1 else 1)
    except (OSError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{key}: cannot read {path}: {msg}") from None
    if np.iscomplexobj(a):
        raise ConfigError(f"{key}: {path} does not hold real numbers (complex values)")
    try:
        a = np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {path} does not hold numbers") from None
    if ndim == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if (ndim == 1 and a.ndim != 1) or (ndim > 1 and (a.ndim != 2 or a.shape[1] != ndim)):
        raise ConfigError(f"{key}: {path} must hold {ndim} column(s), got shape {a.shape}")
    if a.shape[0] < 2:
        raise ConfigError(f"{key}: {path} holds fewer than two samples")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{key}: {path} holds non-finite values")
    if np.abs(a).max() > 1e150:
        raise ConfigError(f"{key}: {path} holds values of magnitude {np.abs(a).max():.3g} (beyond 1e150)")
    return a.reshape(a.shape[0], ndim)


@dataclass
class Problem:
    """A configuration made concrete on its mesh (every rank holds the same one).

    ``d`` and ``bd`` are the discrete problem at loss weight 1; ``classes`` the class data
    (kept to evaluate densities on other meshes); ``head`` the soft-max read-out of a
    classification; ``data`` the prepared samples of a ``[data]`` section.
    """

    cfg: Config
    grid: StateGrid
    d: Discretisation
    bd: BoundaryData
    classes: tuple[ClassData, ...]
    head: SoftmaxHead | None = None
    data: PreparedData | None = None
    targets: tuple[ClassData, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def K(self) -> int:
        return len(self.classes)

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def boundary_data(self, scale: float = 1.0) -> BoundaryData:
        """Fresh boundary data (its own arrays) at loss weight ``scale``."""
        return _boundary(self.cfg, self.grid, self.classes, self.targets, self.head, scale)

    def on_mesh(self, nodes: tuple[int, ...] | int | None = None, layers: int | None = None) -> "Problem":
        """The same problem on another node mesh and number of layers (same domain, data,
        head): densities and losses evaluated anew on the nodes."""
        nodes = self.grid.nodes if nodes is None else (tuple(nodes) if isinstance(nodes, (tuple, list))
                                                       else (int(nodes),) * self.ndim)
        layers = self.d.N if layers is None else int(layers)
        grid = self.grid.with_nodes(nodes)
        cfg = self.cfg.replace(mesh={"nodes": nodes, "layers": layers, "x_min": self.grid.lower,
                                     "x_max": self.grid.upper})
        d = dataclasses.replace(self.d, grid=grid, N=layers)
        return dataclasses.replace(self, cfg=cfg, grid=grid, d=d,
                                   bd=_boundary(cfg, grid, self.classes, self.targets, self.head, 1.0))

    def with_model(self, **changes) -> "Problem":
        """The same problem with other model constants (``nu``, ``eta``, ...)."""
        d = dataclasses.replace(self.d, **changes)
        cfg = self.cfg.replace(model={k: v for k, v in changes.items() if k in ("nu", "eta")})
        return dataclasses.replace(self, d=d, cfg=cfg)

    def resolved_config(self) -> dict:
        """The configuration as run: the given one plus what building resolved (the domain,
        the classes of a table, the head, the floor), JSON-ready."""
        out = self.cfg.to_dict()
        n = self.ndim
        one = (lambda v: v[0]) if n == 1 else list
        out["mesh"].update(x_min=one(self.grid.lower), x_max=one(self.grid.upper))
        out["model"]["floor"] = self.cfg.floor_for(self.K)
        if self.cfg.data is not None:
            out["classes"] = [{"name": c.name, "prior": c.prior, "samples": int(c.samples.shape[0]),
                               "bandwidth": one(c.bandwidth)} for c in self.classes]
        if self.head is not None and not self.cfg.user_loss:
            out["loss"] = {"kind": "softmax", "weights": [w[0] if n == 1 else list(w) for w in self.head.weights.tolist()],
                           "biases": self.head.biases.tolist(), "gamma": self.head.gamma}
        return out


def _boundary(cfg: Config, grid: StateGrid, classes, targets, head, scale: float) -> BoundaryData:
    K = len(classes)
    geom = BoxGeometry(grid, (0,) * grid.ndim, grid.nodes)
    w = geom.w
    pri = np.array([c.prior for c in classes], dtype=float)
    pri = pri / pri.sum()
    floor = cfg.floor_for(K)
    rho0 = np.empty((K,) + grid.nodes)
    for k, c in enumerate(classes):
        p, lost = c.density(grid)
        rho0[k] = normalise(p, lost, w, grid.volume, pri[k], floor, c.key, grid)
    loss = cfg.loss
    if loss.kind in ("kl", "bridge"):
        tg = targets if len(targets) == K else targets * K
        q = np.empty_like(rho0)
        for k, t in enumerate(tg):
            p, lost = t.density(grid)
            q[k] = normalise(p, lost, w, grid.volume, pri[k], loss.floor, t.key, grid)
            if np.any(q[k] <= 0):
                raise ConfigError(f"{t.key}: the target density vanishes at some nodes; set loss.floor > 0")
        if loss.kind == "kl":
            return KLTerminal(rho0, q, loss.gamma, scale)
        return BridgeTerminal(rho0, q, scale)
    pts = grid.points()
    if loss.kind == "quadratic":
        G = quadratic_loss(pts, loss.alpha, loss.target, K)
    else:
        G = softmax_loss(pts, head)
    return BoundaryData(rho0, scale * G)


def _class_data(cfg: Config, c, k: int, key: str, ndim: int) -> ClassData:
    if c.samples is not None:
        s = read_samples(c.samples, ndim, f"{key}.samples")
        bw = kde_bandwidth(s, c.bandwidth if c.bandwidth is not None else "silverman")
        return ClassData(c.name or f"class{k}", c.prior, samples=s, bandwidth=bw, key=key)
    return ClassData(c.name or f"class{k}", c.prior, mean=np.asarray(c.mean, dtype=float),
                     cov=c.covariance(ndim), key=key)


def _data_domain(data: PreparedData, bw: list[tuple[float, ...]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = np.concatenate([data.x_train, data.x_test])
    b = np.max(np.array(bw), axis=0)
    sd = data.x_train.std(axis=0)
    pad = np.maximum(DATA_MARGIN * b, 1.5 * sd)
    lo, hi = x.min(axis=0) - pad, x.max(axis=0) + pad
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def build_problem(cfg: Config) -> Problem:
    """Build the problem of a configuration (reads the data; call on every rank, or on one
    and share: it is deterministic)."""
    ndim = cfg.ndim
    notes: list[str] = []
    data = None
    head = None
    if cfg.data is not None:
        dc = cfg.data
        data = prepare(dc, cfg.base)
        if data.ndim != ndim:
            raise ConfigError(f"data.features: the table gives {data.ndim} state axes, the mesh has {ndim}")
        pri = data.priors
        xcs = [data.x_train[data.y_train == c] for c in range(data.K)]
        # the kernel widths: at least the node spacing of the given (or a first-guess) mesh
        lo = cfg.mesh.x_min
        if lo is None:
            bw0 = [kde_bandwidth(xc, dc.bandwidth) for xc in xcs]
            lo, hi = _data_domain(data, bw0)
            notes.append("mesh: domain chosen from the data: " + ", ".join(
                f"[{a:.4g}, {b:.4g}]" for a, b in zip(lo, hi)))
        else:
            hi = cfg.mesh.x_max
        grid = StateGrid(lo, hi, cfg.mesh.nodes)
        classes = tuple(ClassData(name, float(pri[c]), samples=xcs[c],
                                  bandwidth=kde_bandwidth(xcs[c], dc.bandwidth, grid.h), key=f"data class {name!r}")
                        for c, name in enumerate(data.class_names))
        outside = ((np.concatenate([data.x_train, data.x_test]) < np.array(lo)) |
                   (np.concatenate([data.x_train, data.x_test]) > np.array(hi))).any(axis=1)
        if outside.mean() > 0.05:
            raise ConfigError(f"mesh.x_min: {100 * outside.mean():.3g} % of the samples of {dc.file} lie outside "
                              f"the mesh {grid.describe()} (at most 5 % may); widen the mesh or leave "
                              f"x_min/x_max out to choose them from the data")
        if cfg.user_loss:
            if cfg.loss.kind != "softmax":
                raise ConfigError(f"loss.kind: a [data] classification needs the softmax head, not {cfg.loss.kind!r}")
            if len(cfg.loss.weights) != data.K:
                raise ConfigError(f"loss.weights: needs one weight per class ({data.K} in {dc.file}), "
                                  f"got {len(cfg.loss.weights)}")
            head = SoftmaxHead(np.array(cfg.loss.weights), np.array(cfg.loss.biases), cfg.loss.gamma)
        else:
            head = _default_head(data, dc, grid)
    else:
        if cfg.mesh.x_min is None:
            raise ConfigError("mesh.x_min: required without a [data] section")
        grid = StateGrid(cfg.mesh.x_min, cfg.mesh.x_max, cfg.mesh.nodes)
        classes = tuple(_class_data(cfg, c, k, f"classes[{k}]", ndim) for k, c in enumerate(cfg.classes))
        if cfg.loss.kind == "softmax":
            if len(cfg.loss.weights) != len(classes):
                raise ConfigError(f"loss.weights: needs one weight per class ({len(classes)}), "
                                  f"got {len(cfg.loss.weights)}")
            head = SoftmaxHead(np.array(cfg.loss.weights), np.array(cfg.loss.biases), cfg.loss.gamma)
    K = len(classes)
    if K > 1 and cfg.model.eta == 0.0:
        raise ConfigError("model.eta: must be > 0 with several classes (the shared control is singular where "
                          "the density vanishes)")
    targets: tuple[ClassData, ...] = ()
    if cfg.loss.kind in ("kl", "bridge"):
        if cfg.loss.kind == "bridge" and K != 1:
            raise ConfigError(f"loss.kind: the bridge needs exactly one class (a shared control cannot steer "
                              f"{K} class densities onto independent targets); use kind = 'kl'")
        if len(cfg.loss.targets) not in (1, K):
            raise ConfigError(f"loss.targets: needs one target per class ({K}), got {len(cfg.loss.targets)}")
        one = len(cfg.loss.targets) == 1
        targets = tuple(_class_data(cfg, t, k, "loss.target" if one else f"loss.targets[{k}]", ndim)
                        for k, t in enumerate(cfg.loss.targets))
    m = cfg.model
    d = Discretisation(grid=grid, K=K, N=cfg.mesh.layers, T=cfg.mesh.depth, nu=m.nu, eta=m.eta,
                       running=RunningCost(m.running, m.kappa), scheme=m.scheme)
    cfg = cfg.replace(mesh={"x_min": grid.lower, "x_max": grid.upper})
    if cfg.data is not None and not cfg.user_loss:  # the data's head is the loss
        W = head.weights
        cfg = dataclasses.replace(cfg, loss=LossConfig(kind="softmax", weights=tuple(tuple(map(float, w)) for w in W),
                                                       biases=tuple(map(float, head.biases)), gamma=float(head.gamma)))
    bd = _boundary(cfg, grid, classes, targets, head, 1.0)
    return Problem(cfg, grid, d, bd, classes, head, data, targets, notes)


def _default_head(data: PreparedData, dc, grid: StateGrid) -> SoftmaxHead:
    """The head of a ``[data]`` section without ``[loss]`` (:mod:`mfc_hpc.problem.losses`)."""
    K, n = data.K, data.ndim
    if dc.head_kind == "fitted":
        return fit_logistic(data.x_train, data.y_train, K, gamma=dc.gamma)
    if dc.targets:
        if len(dc.targets) != K:
            raise ConfigError(f"data.targets: needs one target per class ({K}), got {len(dc.targets)}")
        t = np.asarray(dc.targets, dtype=float)
        if n == 1:
            m = data.class_means()[:, 0]
            if np.any(np.diff(t[np.argsort(m)]) <= 0):
                raise ConfigError("data.targets: must increase in the order of the class means "
                                  "(a 1-D network cannot reorder classes)")
    elif n == 1:
        t = default_targets(data.class_means()[:, 0], grid.lower[0], grid.upper[0])
    else:
        raise ConfigError("data.targets: the 'targets' head in 2-D needs one target point per class "
                          "(data.targets = [[x1, x2], ...]) or data.head = 'fitted'")
    tt = t.reshape(K, -1)
    sep = min(np.linalg.norm(tt[a] - tt[b]) for a in range(K) for b in range(a + 1, K))
    if sep <= 0:
        raise ConfigError("data.targets: two classes share a target")
    width = dc.head_width or 0.5 * float(sep)
    return target_head(t, width, dc.gamma)
