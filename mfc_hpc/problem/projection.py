"""From table features to the network's state: standardise, project to ``d`` features
(``none``, ``pca``, ``lda``), standardise again, and the seeded stratified split.

``x = ((X - mean) / scale) @ direction``, then ``(x - offset) / spread`` per component, all
fitted on the training split only: the state of the network has mean 0 and standard
deviation 1 per axis on the training data. ``direction[:, k]`` is a unit vector (the
feature itself for ``none``; the ``k``-th principal or linear-discriminant component),
oriented so that the last class's mean lies above the first's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .tables import Samples, labelled_samples, table_columns

__all__ = ["Projection", "stratified_split", "PreparedData", "prepare"]


@dataclass(frozen=True)
class Projection:
    """The fitted map from raw features ``X[s, p]`` to states ``x[s, d]``."""

    kind: str
    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    direction: np.ndarray  # [p, d]
    offset: np.ndarray  # [d]
    spread: np.ndarray  # [d]

    @property
    def ndim(self) -> int:
        return self.direction.shape[1]

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
                "projection_standardise": np.stack([self.offset, self.spread])}

    @classmethod
    def from_arrays(cls, a: dict) -> "Projection":
        std = np.asarray(a["projection_standardise"], dtype=float)
        direction = np.asarray(a["projection_direction"], float)
        if direction.ndim == 1:  # a model file of a 1-D network: one component
            direction, std = direction[:, None], std.reshape(2, 1)
        return cls(str(a["projection_kind"]), tuple(str(s) for s in np.atleast_1d(a["projection_features"])),
                   np.asarray(a["projection_mean"], float), np.asarray(a["projection_scale"], float),
                   direction, std[0].copy(), std[1].copy())

    @classmethod
    def fit(cls, kind: str, X: np.ndarray, y: np.ndarray, K: int, feature_names: tuple[str, ...],
            ndim: int = 1) -> "Projection":
        """Fit on training samples ``X[s, f]``, labels ``y``."""
        X = np.asarray(X, dtype=float)
        p = X.shape[1]
        if kind == "none" and p != ndim:
            raise ConfigError(f"data.projection: 'none' needs exactly {ndim} feature column(s), got {p} "
                              f"({', '.join(feature_names)}); use 'pca' or 'lda'")
        if ndim > p:
            raise ConfigError(f"data.features: {ndim} features asked from a table of {p} feature column(s)")
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        if np.any(scale <= 0):
            raise ConfigError(f"data: feature {feature_names[int(np.argmin(scale))]!r} is constant on the training split")
        Z = (X - mean) / scale
        if kind == "none":
            V = np.eye(p)
        elif kind == "pca":
            _, vecs = np.linalg.eigh(np.cov(Z, rowvar=False).reshape(p, p))
            V = vecs[:, ::-1][:, :ndim]
        else:  # lda: largest generalised eigenvalues of S_b v = lambda S_w v
            import scipy.linalg as sla
            if ndim > K - 1:
                raise ConfigError(f"data.projection: 'lda' gives at most K - 1 = {K - 1} component(s) for {K} "
                                  f"classes, not {ndim}; use 'pca' or 'none'")
            mu = np.array([Z[y == c].mean(axis=0) for c in range(K)])
            cnt = np.bincount(y, minlength=K)
            Sb = ((mu - Z.mean(axis=0)).T * cnt) @ (mu - Z.mean(axis=0))
            R = Z - mu[y]
            Sw = R.T @ R
            Sw += 1e-10 * np.trace(Sw) * np.eye(p) / p
            _, vecs = sla.eigh(Sb, Sw)
            V = vecs[:, ::-1][:, :ndim]
        V = V / np.linalg.norm(V, axis=0)
        x = Z @ V
        for k in range(ndim):
            if x[y == K - 1, k].mean() < x[y == 0, k].mean():
                V[:, k], x[:, k] = -V[:, k], -x[:, k]
        return cls(kind, tuple(feature_names), mean, scale, V, x.mean(axis=0), x.std(axis=0))


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


@dataclass(frozen=True)
class PreparedData:
    """The projected, standardised, split samples of a ``[data]`` section."""

    x_train: np.ndarray  # [s, d]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    projection: Projection
    samples: Samples = field(repr=False)
    train_index: np.ndarray = field(repr=False, default=None)
    test_index: np.ndarray = field(repr=False, default=None)

    @property
    def K(self) -> int:
        return len(self.class_names)

    @property
    def ndim(self) -> int:
        return self.x_train.shape[1]

    @property
    def priors(self) -> np.ndarray:
        """``pi_c``: class shares of the training split."""
        return np.bincount(self.y_train, minlength=self.K) / self.y_train.size

    def class_means(self) -> np.ndarray:
        """``[K, d]`` means of the training states per class."""
        return np.array([self.x_train[self.y_train == c].mean(axis=0) for c in range(self.K)])


def prepare(dc, base: str = ".") -> PreparedData:
    """Read the table of a :class:`~mfc_hpc.config.DataConfig`, split it (seeded,
    stratified), fit the projection on the training split and project both splits."""
    cols, path = table_columns(dc.file, base)
    s = labelled_samples(path, dc.label, dc.columns, dc.classes,
                         min_per_class=2 if dc.test_fraction == 0 else 3, cols=cols)
    tr, te = stratified_split(s.y, dc.test_fraction, dc.seed)
    proj = Projection.fit(dc.projection, s.X[tr], s.y[tr], s.K, s.feature_names, dc.features)
    return PreparedData(proj(s.X[tr]), s.y[tr], proj(s.X[te]), s.y[te], s.class_names, proj, s, tr, te)
