"""Seeded synthetic data sets made by the package itself (``data.file = "builtin:NAME"``):
two interleaved half-moons and two spirals, in the plane, as tables ``x1, x2, label``.

``moons``: the classic construction (as in scikit-learn's ``make_moons``): class 0 on the
upper half circle ``(cos t, sin t)``, class 1 on the shifted lower one
``(1 - cos t, 1/2 - sin t)``, ``t`` uniform on ``[0, pi]``, plus Gaussian noise of
standard deviation ``noise``. ``spirals``: two interleaved Archimedean spirals
``r (cos(t + c pi), sin(t + c pi))``, ``r = t / (2 pi)`` for ``t`` uniform on
``[pi/2, turns 2 pi]``, plus noise. Both are reproducible from their seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["moons", "spirals", "make_table", "write_csv", "DEFAULTS"]

#: the parameters of ``builtin:moons`` and ``builtin:spirals``
DEFAULTS = {"moons": {"samples": 1000, "noise": 0.15, "seed": 0},
            "spirals": {"samples": 1000, "noise": 0.08, "seed": 0, "turns": 1.25}}


def moons(samples: int = 1000, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-moons: ``X[s, 2]`` and labels ``y[s]`` (half each)."""
    rng = np.random.default_rng(seed)
    n0 = samples // 2
    n1 = samples - n0
    t0 = rng.uniform(0.0, np.pi, n0)
    t1 = rng.uniform(0.0, np.pi, n1)
    X = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    X += noise * rng.standard_normal(X.shape)
    y = np.repeat([0, 1], [n0, n1])
    p = rng.permutation(samples)
    return X[p], y[p]


def spirals(samples: int = 1000, noise: float = 0.08, seed: int = 0, turns: float = 1.25
            ) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals: ``X[s, 2]`` and labels ``y[s]`` (half each)."""
    rng = np.random.default_rng(seed)
    n = [samples // 2, samples - samples // 2]
    Xs = []
    for c in (0, 1):
        t = rng.uniform(0.5 * np.pi, turns * 2.0 * np.pi, n[c])
        r = t / (2.0 * np.pi)
        Xs.append(np.stack([r * np.cos(t + c * np.pi), r * np.sin(t + c * np.pi)], 1))
    X = np.concatenate(Xs) + noise * rng.standard_normal((samples, 2))
    y = np.repeat([0, 1], n)
    p = rng.permutation(samples)
    return X[p], y[p]


def make_table(name: str, **kw) -> dict[str, np.ndarray]:
    """The columns ``x1, x2, label`` of a synthetic set (labels ``"0"``, ``"1"``)."""
    params = dict(DEFAULTS[name], **kw)
    X, y = (moons if name == "moons" else spirals)(**params)
    return {"x1": X[:, 0], "x2": X[:, 1], "label": y.astype(str)}


def write_csv(name: str, path: str | Path, **kw) -> Path:
    """Write a synthetic set as CSV (``x1,x2,label``), atomically."""
    import os

    cols = make_table(name, **kw)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write("x1,x2,label\n")
        for a, b, c in zip(cols["x1"], cols["x2"], cols["label"]):
            f.write(f"{a!r},{b!r},{c}\n")
    os.replace(tmp, path)
    return path
