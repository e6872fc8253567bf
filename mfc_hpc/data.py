"""Labelled samples for classification: read, project to one feature, split, make classes.

A table of samples (CSV with a header row, NPZ or HDF5 with one 1-D array per column)
has a label column and numeric feature columns. The features are standardised, projected
to one dimension (the feature itself, the first principal component, or the first
linear-discriminant component), and the projection is standardised again on the training
split, so the state ``x`` of the network has mean 0 and standard deviation 1 on the
training data. Each class ``c`` becomes a ``[[classes]]`` entry with prior ``pi_c``
(its share of the training samples) and the training samples of the class, whose
density is a Gaussian kernel estimate (``problem.class_densities`` adds the floor).

The ``[data]`` section of a configuration:

=================  ============  ========================================================
key                default       meaning
=================  ============  ========================================================
``file``           (required)    table path (relative to the configuration), or
                                 ``"builtin:iris"`` for the shipped Fisher iris data
``label``          ``"label"``   name of the label column
``features``       all others    feature columns (all must be numeric)
``classes``        all           labels to keep, in this order (default: order of first
                                 appearance)
``projection``     ``"lda"``     ``"none"`` (one feature), ``"pca"`` or ``"lda"``
``test_fraction``  ``0.3``       share of each class held out for testing (stratified)
``seed``           ``0``         seed of the split
``bandwidth``      Silverman     ``"silverman"`` (``0.9 min(sd, IQR/1.34) n^(-1/5)``),
                                 ``"scott"`` (``1.06 sd n^(-1/5)``), each at least the
                                 node spacing ``h``; or a number (used as given)
``gamma``          ``1.0``       loss weight of the default head
``targets``        evenly        head targets ``t_c`` per class (default: evenly spaced
                                 inside the mesh interval in the order of the class means)
``head_width``     half spacing  ``s`` of the head logits ``-(x - t_c)^2 / (2 s^2)``
=================  ============  ========================================================

Without a ``[loss]`` section the loss is the target head of :mod:`mfc_hpc.head`
(``G_c = gamma * CE_c``); with one, the user's head is used and the head keys here
must be left out.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import (ClassConfig, ConfigError, LossConfig, MeshConfig, _int, _num, _nums, _str,
                     _table)
from .head import SoftmaxHead, default_targets, target_head

__all__ = ["DataConfig", "DataSection", "Samples", "Projection", "PreparedData", "SHIPPED",
           "resolve_path", "read_table", "labelled_samples", "stratified_split", "prepare",
           "kde_bandwidth", "parse_data_section", "default_head"]

#: data sets shipped in ``mfc_hpc/data``: ``file = "builtin:NAME"``
SHIPPED = {"iris": "iris.csv"}

_PROJECTIONS = ("none", "pca", "lda")


def resolve_path(file: str, base: Path | str = ".") -> Path:
    """``builtin:NAME`` -> the shipped file; a relative path is taken from ``base``."""
    if file.startswith("builtin:"):
        name = file.split(":", 1)[1]
        if name not in SHIPPED:
            raise ConfigError(f"data.file: no shipped data set {name!r} (shipped: {', '.join(SHIPPED)})")
        return Path(__file__).parent / "data" / SHIPPED[name]
    p = Path(file)
    return p if p.is_absolute() else Path(base) / p


# ---------------------------------------------------------------------------- reading

def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a table: CSV (header row), NPZ or HDF5 (one 1-D array per column).

    Values stay as read (strings for CSV); :func:`labelled_samples` converts them.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data: no such file: {path}")
    suf = path.suffix.lower()
    try:
        if suf == ".npz":
            with np.load(path, allow_pickle=False) as f:
                cols = {k: np.asarray(f[k]) for k in f.files}
        elif suf in (".h5", ".hdf5"):
            import h5py
            with h5py.File(path, "r") as f:
                cols = {k: np.asarray(f[k][()]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        else:
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
            if not rows:
                raise ConfigError(f"data: {path} is empty")
            header = [h.strip() for h in rows[0]]
            for k, r in enumerate(rows[1:], start=2):
                if len(r) != len(header):
                    raise ConfigError(f"data: {path} line {k}: expected {len(header)} fields, got {len(r)}")
            body = np.array([[c.strip() for c in r] for r in rows[1:]], dtype=str).reshape(-1, len(header))
            cols = {h: body[:, j] for j, h in enumerate(header)}
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"data: cannot read {path}: {str(e).splitlines()[0]}") from None
    for k, v in cols.items():
        if v.ndim != 1:
            raise ConfigError(f"data: column {k!r} of {path} must be 1-D, got shape {v.shape}")
    n = {v.shape[0] for v in cols.values()}
    if len(n) > 1:
        raise ConfigError(f"data: the columns of {path} have different lengths {sorted(n)}")
    return cols


def _numeric(name: str, v: np.ndarray, path: Path) -> np.ndarray:
    if v.dtype.kind in "biuf":
        a = v.astype(float)
    else:
        s = np.char.decode(v) if v.dtype.kind == "S" else v.astype(str)
        try:
            a = np.array([float(x) if x != "" else math.nan for x in s])
        except ValueError:
            bad = next(x for x in s if not _isfloat(x))
            raise ConfigError(f"data: column {name!r} of {path} is not numeric (value {bad!r})") from None
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ConfigError(f"data: column {name!r} of {path} has a missing or non-finite value "
                          f"in sample {bad[0] + 1} ({bad.size} in all)")
    return a


def _isfloat(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _labels(v: np.ndarray) -> np.ndarray:
    if v.dtype.kind == "S":
        return np.char.decode(v)
    if v.dtype.kind == "f" and np.all(v == np.round(v)):
        v = v.astype(int)
    return v.astype(str)


@dataclass(frozen=True)
class Samples:
    """Labelled samples: features ``X[s, f]``, labels ``y[s]`` in ``0..K-1``."""

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def K(self) -> int:
        return len(self.class_names)


def labelled_samples(path: str | Path, label: str, features: tuple[str, ...] = (),
                     classes: tuple[str, ...] = (), min_per_class: int = 2) -> Samples:
    """Features and integer labels of a table; ``classes`` selects and orders the labels."""
    path = Path(path)
    cols = read_table(path)
    if label not in cols:
        raise ConfigError(f"data.label: no column {label!r} in {path} (columns: {', '.join(cols)})")
    feats = tuple(features) or tuple(k for k in cols if k != label)
    if not feats:
        raise ConfigError(f"data.features: {path} has no feature column besides {label!r}")
    for f in feats:
        if f not in cols:
            raise ConfigError(f"data.features: no column {f!r} in {path} (columns: {', '.join(cols)})")
        if f == label:
            raise ConfigError(f"data.features: {f!r} is the label column")
    lab = _labels(cols[label])
    if np.any(np.char.strip(lab) == ""):
        k = int(np.flatnonzero(np.char.strip(lab) == "")[0])
        raise ConfigError(f"data: column {label!r} of {path} has a missing label in sample {k + 1}")
    names = tuple(classes) or tuple(dict.fromkeys(lab.tolist()))
    keep = np.isin(lab, names)
    X = np.column_stack([_numeric(f, cols[f][keep], path)
                         for f in feats])
    lab = lab[keep]
    y = np.full(lab.shape, -1)
    for c, n in enumerate(names):
        y[lab == n] = c
    counts = np.bincount(y, minlength=len(names))
    for n, m in zip(names, counts):
        if m == 0:
            raise ConfigError(f"data.classes: class {n!r} has no samples in {path}")
        if m < min_per_class:
            raise ConfigError(f"data: class {n!r} of {path} has {m} sample(s); at least {min_per_class} needed")
    if len(names) < 2:
        raise ConfigError(f"data: {path} has {len(names)} class(es) in column {label!r}; at least two needed")
    return Samples(X, y, names, feats)


# ---------------------------------------------------------------------------- projection

@dataclass(frozen=True)
class Projection:
    """``x = ((X - mean) / scale) . direction`` then ``(x - offset) / spread``.

    ``mean``, ``scale``: the feature standardisation; ``direction``: unit vector of the
    first principal or linear-discriminant component (the feature itself for ``none``),
    oriented so that the last class's mean lies above the first's; ``offset``,
    ``spread``: mean and standard deviation of the projected training samples.
    """

    kind: str
    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    direction: np.ndarray
    offset: float
    spread: float

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.mean.size:
            raise ConfigError(f"data: expected {self.mean.size} feature column(s) "
                              f"({', '.join(self.feature_names)}), got shape {X.shape}")
        return (((X - self.mean) / self.scale) @ self.direction - self.offset) / self.spread

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for a model file (``projection_*``)."""
        return {"projection_kind": np.array(self.kind), "projection_features": np.array(self.feature_names),
                "projection_mean": self.mean, "projection_scale": self.scale,
                "projection_direction": self.direction,
                "projection_standardise": np.array([self.offset, self.spread])}

    @classmethod
    def from_arrays(cls, a: dict) -> "Projection":
        off, spr = np.asarray(a["projection_standardise"], dtype=float)
        return cls(str(a["projection_kind"]), tuple(str(s) for s in np.atleast_1d(a["projection_features"])),
                   np.asarray(a["projection_mean"], float), np.asarray(a["projection_scale"], float),
                   np.asarray(a["projection_direction"], float), float(off), float(spr))

    @classmethod
    def fit(cls, kind: str, X: np.ndarray, y: np.ndarray, K: int,
            feature_names: tuple[str, ...]) -> "Projection":
        """Fit on training samples ``X[s, f]``, labels ``y``."""
        X = np.asarray(X, dtype=float)
        p = X.shape[1]
        if kind == "none" and p != 1:
            raise ConfigError(f"data.projection: 'none' needs exactly one feature, got {p} "
                              f"({', '.join(feature_names)}); use 'pca' or 'lda'")
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        if np.any(scale <= 0):
            raise ConfigError(f"data: feature {feature_names[int(np.argmin(scale))]!r} is constant on the training split")
        Z = (X - mean) / scale
        if kind == "none":
            v = np.ones(1)
        elif kind == "pca":
            _, vecs = np.linalg.eigh(np.cov(Z, rowvar=False).reshape(p, p))
            v = vecs[:, -1]
        else:  # lda: largest generalised eigenvalue of S_b v = lambda S_w v
            import scipy.linalg as sla
            mu = np.array([Z[y == c].mean(axis=0) for c in range(K)])
            cnt = np.bincount(y, minlength=K)
            Sb = ((mu - Z.mean(axis=0)).T * cnt) @ (mu - Z.mean(axis=0))
            R = Z - mu[y]
            Sw = R.T @ R
            Sw += 1e-10 * np.trace(Sw) * np.eye(p) / p
            _, vecs = sla.eigh(Sb, Sw)
            v = vecs[:, -1]
        v = v / np.linalg.norm(v)
        x = Z @ v
        if x[y == K - 1].mean() < x[y == 0].mean():
            v, x = -v, -x
        return cls(kind, tuple(feature_names), mean, scale, v, float(x.mean()), float(x.std()))


# ---------------------------------------------------------------------------- split

def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices; each class keeps ``round(test_fraction n_c)`` samples for
    testing (at least one when ``test_fraction > 0``, at least one left for training)."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(test_fraction * idx.size))
        if test_fraction > 0:
            k = min(max(k, 1), idx.size - 1)
        te.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class DataConfig:
    """``[data]``: see the module docstring; ``file`` is resolved to a path."""

    file: str
    label: str = "label"
    features: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    projection: str = "lda"
    test_fraction: float = 0.3
    seed: int = 0
    bandwidth: str | float = "silverman"
    gamma: float = 1.0
    targets: tuple[float, ...] = ()
    head_width: float | None = None

    @classmethod
    def parse(cls, v: Any, base: Path, user_loss: bool = False) -> "DataConfig":
        names = {f for f in cls.__dataclass_fields__}
        v = _table("data", v, names)
        if "file" not in v:
            raise ConfigError("data.file: required (a CSV, NPZ or HDF5 table, or 'builtin:iris')")
        file = _str("data.file", v["file"])
        path = resolve_path(file, base)
        if not path.is_file():
            raise ConfigError(f"data.file: no such file: {path}")
        head_keys = {"gamma", "targets", "head_width"} & set(v)
        if user_loss and head_keys:
            raise ConfigError(f"data.{sorted(head_keys)[0]}: a [loss] section gives the head; "
                              "leave the head keys of [data] out")

        def strs(key: str) -> tuple[str, ...]:
            x = v.get(key, [])
            if not isinstance(x, list) or not all(isinstance(s, (str, int)) for s in x):
                raise ConfigError(f"data.{key}: must be a list of names, got {x!r}")
            return tuple(str(s) for s in x)

        bw = v.get("bandwidth", "silverman")
        if isinstance(bw, str):
            bw = _str("data.bandwidth", bw, ("silverman", "scott"))
        else:
            bw = _num("data.bandwidth", bw, lo=0.0, lo_open=True)
        hw = v.get("head_width")
        return cls(
            file=str(path), label=_str("data.label", v.get("label", "label")),
            features=strs("features"), classes=strs("classes"),
            projection=_str("data.projection", v.get("projection", "lda"), _PROJECTIONS),
            test_fraction=_num("data.test_fraction", v.get("test_fraction", 0.3), lo=0.0, hi=0.9),
            seed=_int("data.seed", v.get("seed", 0), lo=0),
            bandwidth=bw,
            gamma=_num("data.gamma", v.get("gamma", 1.0), lo=0.0, lo_open=True),
            targets=_nums("data.targets", v.get("targets", [])),
            head_width=None if hw is None else _num("data.head_width", hw, lo=0.0, lo_open=True),
        )


@dataclass(frozen=True)
class PreparedData:
    """The projected, standardised, split samples of a :class:`DataConfig`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    projection: Projection
    samples: Samples = field(repr=False)

    @property
    def K(self) -> int:
        return len(self.class_names)

    @property
    def priors(self) -> np.ndarray:
        """``pi_c``: class shares of the training split."""
        return np.bincount(self.y_train, minlength=self.K) / self.y_train.size

    def class_means(self) -> np.ndarray:
        return np.array([self.x_train[self.y_train == c].mean() for c in range(self.K)])


def prepare(dc: DataConfig) -> PreparedData:
    """Read, split (seeded, stratified), fit the projection on the training split, project."""
    s = labelled_samples(dc.file, dc.label, dc.features, dc.classes,
                         min_per_class=2 if dc.test_fraction == 0 else 3)
    tr, te = stratified_split(s.y, dc.test_fraction, dc.seed)
    proj = Projection.fit(dc.projection, s.X[tr], s.y[tr], s.K, s.feature_names)
    return PreparedData(proj(s.X[tr]), s.y[tr], proj(s.X[te]), s.y[te], s.class_names, proj, s)


def kde_bandwidth(x: np.ndarray, rule: str | float, h: float = 0.0) -> float:
    """Kernel width: a number, or a rule, Silverman's ``0.9 min(sd, IQR/1.34) n^(-1/5)``
    or Scott's ``1.06 sd n^(-1/5)``, never below the node spacing ``h`` (a narrower
    kernel is not resolved on the nodes)."""
    from .problem import silverman_bandwidth

    if not isinstance(rule, str):
        return float(rule)
    if rule == "silverman":
        return max(float(silverman_bandwidth(x)), h)
    return max(float(1.06 * np.std(x, ddof=1) * x.size ** -0.2), h)


def default_head(data: PreparedData, dc: DataConfig, mesh: MeshConfig) -> SoftmaxHead:
    """The target head of ``dc`` (targets evenly spaced in the order of the class means)."""
    K = data.K
    if dc.targets:
        if len(dc.targets) != K:
            raise ConfigError(f"data.targets: needs one target per class ({K}), got {len(dc.targets)}")
        t = np.asarray(dc.targets)
        m = data.class_means()
        if np.any(np.diff(t[np.argsort(m)]) <= 0):
            raise ConfigError("data.targets: must increase in the order of the class means "
                              "(a 1-D network cannot reorder classes)")
    else:
        t = default_targets(data.class_means(), mesh.x_min, mesh.x_max)
    width = dc.head_width or 0.5 * float(np.diff(np.sort(t)).min())
    return target_head(t, width, dc.gamma)


@dataclass(frozen=True)
class DataSection:
    """What a ``[data]`` section gives a configuration."""

    config: DataConfig
    classes: tuple[ClassConfig, ...]
    loss: LossConfig


def parse_data_section(v: Any, base: Path, mesh: MeshConfig, user_loss: bool = False) -> DataSection:
    """Classes (prior, training samples, bandwidth) and default loss of a ``[data]`` section."""
    dc = DataConfig.parse(v, Path(base), user_loss)
    data = prepare(dc)
    pri = data.priors
    h = (mesh.x_max - mesh.x_min) / (mesh.nodes - 1)
    classes = []
    for c, name in enumerate(data.class_names):
        xc = data.x_train[data.y_train == c]
        classes.append(ClassConfig(prior=float(pri[c]), samples=None, name=name,
                                   bandwidth=kde_bandwidth(xc, dc.bandwidth, h),
                                   values=tuple(float(a) for a in xc)))
    head = default_head(data, dc, mesh)
    loss = LossConfig(kind="softmax", weights=tuple(map(float, head.weights)),
                      biases=tuple(map(float, head.biases)), gamma=head.gamma)
    return DataSection(dc, tuple(classes), loss)
