"""Do samples pushed through the noisy network follow the solved densities? Samplers of
the discrete densities, and the tests that compare them with pushed samples.

*Densities.* A nodal density ``rho[*i]`` is read as the continuous piecewise-linear
density on the Kuhn triangulation of the grid (:mod:`mfc_hpc.learning.cpwl`; negative
nodal values in far tails count as 0). :func:`sample_density` draws from it exactly.

*1-D*: one-sample Kolmogorov-Smirnov against the CDF of that density (as in the 1-D
releases; 5 % critical value ``1.358 / sqrt(n)``).

*2-D*: the two-sample energy test (Szekely and Rizzo): with ``n`` pushed samples ``X`` and
``n`` samples ``Y`` of the solved density,

    E = 2 mean |X - Y| - mean |X - X'| - mean |Y - Y'|      (V-statistic, Euclidean norm),

and the 5 % threshold is the 95 % quantile of ``E`` over ``permutations`` random
relabellings of the pooled samples (p-value ``(1 + #{E_perm >= E}) / (1 + permutations)``).
``E >= 0`` and it vanishes only for equal laws, so the test is consistent against every
alternative; it is computed from the pooled distance matrix with one matrix product for
all permutations.
"""
from __future__ import annotations

import numpy as np

from ..numerics.grid import StateGrid
from .cpwl import grid_simplices, sample_simplicial_density

__all__ = ["sample_density", "density_cdf", "ks_statistic", "energy_test", "compare_samples",
           "pushforward_check", "KS_CRITICAL_5PCT"]

#: the asymptotic 5 % critical value of ``sqrt(n) D`` (one-sample Kolmogorov-Smirnov)
KS_CRITICAL_5PCT = 1.358


def _cells(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 0.5 * (p[1:] + p[:-1]) * np.diff(x)


def _sample_line(x: np.ndarray, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """1-D: a cell by its mass, then the inverse of the quadratic cell CDF (the releases'
    sampler, kept for their numbers)."""
    p = np.maximum(np.asarray(p, dtype=float), 0.0)
    m = _cells(x, p)
    k = rng.choice(m.size, size=n, p=m / m.sum())
    h = np.diff(x)[k]
    p0, p1 = p[k], p[k + 1]
    u = rng.random(n) * 0.5 * (p0 + p1) * h  # mass to reach inside the cell
    a = (p1 - p0) / h  # density slope
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(np.abs(a) * h > 1e-12 * (p0 + p1),
                     2.0 * u / (p0 + np.sqrt(np.maximum(p0 * p0 + 2.0 * a * u, 0.0))),
                     u / np.maximum(0.5 * (p0 + p1), 1e-300))
    return x[k] + np.clip(s, 0.0, h)


def sample_density(grid: StateGrid, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the CPWL density with nodal values ``p[*i]``: ``[n]`` in 1-D,
    ``[n, d]`` otherwise."""
    if grid.ndim == 1:
        return _sample_line(grid.axis(0), np.asarray(p).ravel(), n, rng)
    pts = grid.points().reshape(-1, grid.ndim)
    return sample_simplicial_density(pts, p, grid_simplices(grid.nodes), n, rng)


def density_cdf(x: np.ndarray, p: np.ndarray):
    """1-D: the CDF of the normalised piecewise-linear density ``p`` on nodes ``x`` (a callable)."""
    p = np.maximum(np.asarray(p, dtype=float), 0.0)
    c = np.concatenate([[0.0], np.cumsum(_cells(x, p))])

    def F(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        k = np.clip(np.searchsorted(x, t) - 1, 0, x.size - 2)
        h = x[k + 1] - x[k]
        s = np.clip(t - x[k], 0.0, h)
        return (c[k] + p[k] * s + 0.5 * (p[k + 1] - p[k]) / h * s * s) / c[-1]

    return F


def ks_statistic(samples: np.ndarray, cdf) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov statistic ``D`` and p-value."""
    from scipy import stats

    r = stats.kstest(np.asarray(samples).ravel(), cdf)
    return float(r.statistic), float(r.pvalue)


def energy_test(X: np.ndarray, Y: np.ndarray, permutations: int = 200, seed: int = 0) -> dict:
    """Two-sample energy test of ``X[n, d]`` against ``Y[m, d]`` (module docstring):
    statistic, 5 % permutation threshold, p-value."""
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    n, m = len(X), len(Y)
    P = np.concatenate([X, Y])
    sq = (P * P).sum(axis=1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * P @ P.T, 0.0))
    np.fill_diagonal(D, 0.0)
    total = D.sum()
    rng = np.random.default_rng(seed)
    Z = np.zeros((n + m, permutations + 1))
    Z[:n, 0] = 1.0
    for k in range(permutations):
        Z[rng.permutation(n + m)[:n], k + 1] = 1.0
    DZ = D @ Z
    zDz = (Z * DZ).sum(axis=0)
    zD1 = DZ.sum(axis=0)
    xy = zD1 - zDz
    yy = total - 2.0 * zD1 + zDz
    E = 2.0 * xy / (n * m) - zDz / n ** 2 - yy / m ** 2
    stat, perm = float(E[0]), E[1:]
    return {"statistic": stat, "threshold_5pct": float(np.quantile(perm, 0.95)),
            "p_value": float((1 + np.count_nonzero(perm >= stat)) / (1 + permutations)),
            "samples": [n, m], "permutations": permutations}


def compare_samples(samples: np.ndarray, grid: StateGrid, p: np.ndarray, seed: int = 0,
                    permutations: int = 200) -> dict:
    """Samples against the solved density ``p[*i]``: KS in 1-D, the energy test in 2-D
    (against as many samples drawn from ``p``, seeded)."""
    n = len(samples)
    if grid.ndim == 1:
        D, pv = ks_statistic(samples, density_cdf(grid.axis(0), np.asarray(p).ravel()))
        return {"test": "ks", "samples": n, "statistic": D, "p_value": pv,
                "threshold_5pct": KS_CRITICAL_5PCT / np.sqrt(n)}
    Y = sample_density(grid, p, n, np.random.default_rng(seed + 7919))
    r = energy_test(samples, Y, permutations, seed)
    return {"test": "energy", **r, "samples": n}


def pushforward_check(net, rho: np.ndarray, n: int, seed: int = 0, permutations: int = 200) -> list[dict]:
    """Per class: ``n`` samples of ``rho^0_c`` pushed through the network with noise ``nu``,
    against ``rho^N_c`` (``rho[n, c, *i]``), and the same samples pushed without noise.

    1-D keys as in the releases (``ks_D``, ``p_value``, ``ks_D_without_noise``,
    ``critical_D_5pct``); 2-D: ``energy``, ``threshold_5pct``, ``p_value``,
    ``energy_without_noise`` (and its threshold), ``permutations``."""
    rng = np.random.default_rng(seed)
    g = net.grid
    out = []
    for c in range(rho.shape[1]):
        x0 = sample_density(g, rho[0, c], n, rng)
        xN = net.forward(x0, noise=True, rng=rng)
        if g.ndim == 1:
            D, pv = ks_statistic(xN, density_cdf(net.nodes, rho[-1, c]))
            D0, _ = ks_statistic(net.forward(x0), density_cdf(net.nodes, rho[-1, c]))
            out.append({"class": net.class_names[c], "samples": n, "ks_D": D, "p_value": pv,
                        "ks_D_without_noise": D0, "critical_D_5pct": KS_CRITICAL_5PCT / np.sqrt(n)})
            continue
        Y = sample_density(g, rho[-1, c], n, rng)
        r = energy_test(xN, Y, permutations, seed + c)
        r0 = energy_test(net.forward(x0), Y, permutations, seed + c)
        out.append({"class": net.class_names[c], "samples": n, "energy": r["statistic"],
                    "threshold_5pct": r["threshold_5pct"], "p_value": r["p_value"],
                    "energy_without_noise": r0["statistic"], "threshold_without_noise_5pct": r0["threshold_5pct"],
                    "p_value_without_noise": r0["p_value"], "permutations": permutations})
    return out
