"""Class densities on the grid: Gaussians, kernel estimates of samples, floors (METHOD.md 7).

``rho_c(0, x_i)`` is the data density of class ``c`` mixed with a uniform background (the
floor, a fraction of the class mass) and normalised so that ``sum_i w_i rho_{c,i} = pi_c``.
A Gaussian class with covariance ``C`` has the unnormalised density
``exp(-(x - m)^T C^{-1} (x - m) / 2)``; samples become a sum of Gaussian kernels with
per-axis widths ``b_k`` (separable, so in 2-D the sum over samples is one matrix product).

Mass outside the box is lost: the share of each class's density that falls outside is
bounded above by the sum over axes of its marginals' mass outside ``[x_{L,k}, x_{R,k}]``
(exact in 1-D; computed with the normal CDF for a Gaussian and for every kernel of a
sample), reported, and refused beyond :data:`MAX_MASS_LOST` (a mesh that misses the data is
an input error, not a problem to solve).
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError
from ..numerics.grid import StateGrid

__all__ = ["silverman_bandwidth", "kde_bandwidth", "gaussian_density", "kde_density", "normalise",
           "MAX_MASS_LOST", "WARN_MASS_LOST"]

log = logging.getLogger(__name__.split(".")[-1])

#: a class (or target) density that loses more than this share of its mass outside the
#: box is refused
MAX_MASS_LOST = 0.05
#: ... and a warning names any that loses more than this
WARN_MASS_LOST = 1e-3


def silverman_bandwidth(s: np.ndarray) -> float:
    """Silverman's rule ``0.9 min(std, IQR/1.34) n^(-1/5)`` for 1-D samples."""
    iqr = np.subtract(*np.percentile(s, [75, 25]))
    spread = min(np.std(s, ddof=1), iqr / 1.34) if iqr > 0 else np.std(s, ddof=1)
    return 0.9 * spread * s.size ** -0.2


def kde_bandwidth(x: np.ndarray, rule, h: tuple[float, ...] = ()) -> tuple[float, ...]:
    """Kernel widths per axis for samples ``x[s, d]``: given numbers, or a rule, each at
    least the node spacing ``h_k`` (a narrower kernel is not resolved on the nodes).

    ``d = 1``: Silverman's ``0.9 min(sd, IQR/1.34) n^(-1/5)`` or Scott's
    ``1.06 sd n^(-1/5)``. ``d >= 2`` (per axis, the normal-reference rules):
    Silverman's ``(4/(d+2))^(1/(d+4)) min(sd_k, IQR_k/1.34) n^(-1/(d+4))`` or Scott's
    ``sd_k n^(-1/(d+4))``.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n, d = x.shape
    h = tuple(h) or (0.0,) * d
    if not isinstance(rule, str):
        bw = tuple(float(b) for b in np.broadcast_to(np.asarray(rule, dtype=float), (d,)))
        return bw
    out = []
    for k in range(d):
        s = x[:, k]
        sd = float(np.std(s, ddof=1))
        if d == 1:
            b = silverman_bandwidth(s) if rule == "silverman" else 1.06 * sd * n ** -0.2
        else:
            iqr = float(np.subtract(*np.percentile(s, [75, 25])))
            spread = min(sd, iqr / 1.34) if iqr > 0 else sd
            b = ((4.0 / (d + 2)) ** (1.0 / (d + 4)) * spread if rule == "silverman" else sd) * n ** (-1.0 / (d + 4))
        out.append(max(float(b), h[k]))
    if any(not np.isfinite(b) or b <= 0 for b in out):
        raise ConfigError(f"bandwidth: the samples give no kernel width ({out}); set a bandwidth")
    return tuple(out)


def _outside(grid: StateGrid, m: np.ndarray, sd: np.ndarray) -> float:
    """Upper bound of the mass outside the box of Gaussians ``N(m[s], diag(sd^2))`` (rows
    ``m[s, d]``, averaged over ``s``): the sum over axes of the marginal masses outside."""
    from scipy.special import ndtr

    lo, hi = np.array(grid.lower), np.array(grid.upper)
    out = ndtr((lo - m) / sd) + ndtr((m - hi) / sd)  # [s, d]
    return float(np.clip(out.sum(axis=1), 0.0, 1.0).mean())


def gaussian_density(grid: StateGrid, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, float]:
    """``exp(-(x - m)^T C^{-1} (x - m) / 2)`` on the nodes and the share of its mass that
    lies outside the box (an upper bound, :func:`_outside`)."""
    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    if grid.ndim == 1:
        x = grid.axis(0)
        p = np.exp(-(x - mean[0]) ** 2 / (2.0 * cov[0, 0]))
    else:
        dx = grid.points() - mean
        q = np.einsum("...k,kl,...l->...", dx, np.linalg.inv(cov), dx)
        p = np.exp(-0.5 * q)
    return p, _outside(grid, mean[None, :], np.sqrt(np.diag(cov))[None, :])


def kde_density(grid: StateGrid, samples: np.ndarray, bw: tuple[float, ...]) -> tuple[np.ndarray, float]:
    """Sum of Gaussian kernels ``prod_k exp(-((x_k - s_k)/b_k)^2 / 2)`` over the samples
    ``[s, d]`` on the nodes, and the share of its mass outside the box (an upper bound)."""
    s = np.asarray(samples, dtype=float)
    if s.ndim == 1:
        s = s[:, None]
    n, d = s.shape
    total = _outside(grid, s, np.asarray(bw, dtype=float)[None, :])
    if d == 1:
        x = grid.axis(0)
        out = np.zeros_like(x)
        for k in range(0, n, 4096):  # vectorised over (node, sample) in chunks of samples
            out += np.exp(-0.5 * ((x[:, None] - s[None, k:k + 4096, 0]) / bw[0]) ** 2).sum(axis=1)
        return out, total
    out = np.zeros(grid.nodes)
    for k in range(0, n, 4096):
        blk = s[k:k + 4096]
        fac = [np.exp(-0.5 * ((grid.axis(a)[:, None] - blk[None, :, a]) / bw[a]) ** 2) for a in range(d)]
        if d == 2:
            out += fac[0] @ fac[1].T
        else:
            out += np.einsum("is,js,ks->ijk", *fac) if d == 3 else 0.0
    return out, total


def normalise(p: np.ndarray, lost: float, w: np.ndarray, volume: float, prior: float, floor: float,
              key: str, grid: StateGrid) -> np.ndarray:
    """``pi (1 - floor) p / mass + pi floor / |Omega|`` normalised to ``sum_i w_i rho_i = pi``;
    refuses a density that misses the box (``lost``: its share outside; module docstring)."""
    mass = float((w * p).sum())
    if not np.isfinite(mass) or mass <= 1e-300 or not lost <= MAX_MASS_LOST:
        lost = 1.0 if not np.isfinite(mass) or mass <= 1e-300 else lost
        raise ConfigError(f"{key}: {100 * min(max(lost, 0.0), 1.0):.3g} % of its mass lies outside the mesh "
                          f"{grid.describe()} (at most {100 * MAX_MASS_LOST:g} % may): widen mesh.x_min/x_max")
    if lost > WARN_MASS_LOST:
        log.warning("%s: %.3g %% of its mass lies outside the mesh (%s)", key, 100 * lost, grid.describe())
    p = (1.0 - floor) * p / mass + floor / volume
    return prior * p / (w * p).sum()
