"""From a :class:`~mfc_hpc.config.Config` to the discrete problem: mesh constants,
initial class densities ``rho_c(0, x_i)`` and terminal losses ``G_c(x_i)``."""
from __future__ import annotations

import numpy as np

from .config import Config, ConfigError, ClassConfig, LossConfig
from .scheme import BoundaryData, Discretisation, RunningCost, node_weights

__all__ = ["discretisation", "class_densities", "loss_values", "boundary_data",
           "read_samples", "silverman_bandwidth", "target_densities"]


def discretisation(cfg: Config) -> Discretisation:
    """The :class:`Discretisation` of a configuration."""
    m = cfg.model
    return Discretisation(
        K=cfg.K, M=cfg.mesh.nodes, N=cfg.mesh.layers, x_min=cfg.mesh.x_min,
        x_max=cfg.mesh.x_max, T=cfg.mesh.depth, nu=m.nu, eta=m.eta,
        running=RunningCost(m.running, m.kappa), scheme=m.scheme)


def read_samples(path: str) -> np.ndarray:
    """One column of finite numbers from ``.npy``, ``.csv`` or ``.txt``."""
    try:
        if path.endswith(".npy"):
            a = np.load(path, allow_pickle=False)
        else:
            a = np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=1)
    except (OSError, ValueError) as e:
        raise ConfigError(f"samples: cannot read {path}: {str(e).splitlines()[0]}") from None
    a = np.asarray(a, dtype=float)
    if a.ndim != 1:
        raise ConfigError(f"samples: {path} must hold one column, got shape {a.shape}")
    if a.size < 2:
        raise ConfigError(f"samples: {path} holds fewer than two samples")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"samples: {path} holds non-finite values")
    return a


def silverman_bandwidth(s: np.ndarray) -> float:
    """Silverman's rule ``0.9 min(std, IQR/1.34) n^(-1/5)``."""
    iqr = np.subtract(*np.percentile(s, [75, 25]))
    spread = min(np.std(s, ddof=1), iqr / 1.34) if iqr > 0 else np.std(s, ddof=1)
    return 0.9 * spread * s.size ** -0.2


def _density(c: ClassConfig, x: np.ndarray) -> np.ndarray:
    if c.samples is None and c.values is None:
        return np.exp(-(x - c.mean) ** 2 / (2.0 * c.var))
    s = np.asarray(c.values, dtype=float) if c.values is not None else read_samples(c.samples)
    bw = c.bandwidth or silverman_bandwidth(s)
    # sum of Gaussian kernels, vectorised over (node, sample) in chunks of samples
    out = np.zeros_like(x)
    for k in range(0, s.size, 4096):
        out += np.exp(-0.5 * ((x[:, None] - s[None, k:k + 4096]) / bw) ** 2).sum(axis=1)
    return out


def class_densities(cfg: Config) -> np.ndarray:
    """``rho_c(0, x_i)``, ``[c, i]``: data densities mixed with a uniform floor
    (fraction ``cfg.floor`` of the class mass) and normalised so that
    ``sum_i w_i rho_{c,i} = pi_c`` with the priors normalised to sum 1."""
    d = discretisation(cfg)
    x, w = d.x, node_weights(d.h, d.M)
    pri = np.array([c.prior for c in cfg.classes])
    pri = pri / pri.sum()
    rho = np.empty((cfg.K, d.M))
    for k, c in enumerate(cfg.classes):
        p = _density(c, x)
        mass = (w * p).sum()
        if not np.isfinite(mass) or mass <= 1e-300:
            raise ConfigError(f"classes[{k}]: its data put no mass on [{d.x_min:g}, {d.x_max:g}]")
        p = (1.0 - cfg.floor) * p / mass + cfg.floor / (d.x_max - d.x_min)
        rho[k] = pri[k] * p / (w * p).sum()
    return rho


def loss_values(loss: LossConfig, K: int, x: np.ndarray) -> np.ndarray:
    """``G_c(x_i)``, ``[c, i]``: quadratic ``alpha/2 (x - target)^2`` or
    ``gamma * CE_c`` of the soft-max read-out with logits ``w_k x + b_k``."""
    if loss.kind == "quadratic":
        return np.tile(0.5 * loss.alpha * (x - loss.target) ** 2, (K, 1))
    z = np.outer(loss.weights, x) + np.asarray(loss.biases)[:, None]  # logits [k, i]
    zmax = z.max(axis=0)
    lse = zmax + np.log(np.exp(z - zmax).sum(axis=0))
    return loss.gamma * (lse[None, :] - z)


def target_densities(cfg: Config) -> np.ndarray:
    """``q_c(x_i)``, ``[c, i]``, of a transport loss (``kind = "kl"`` or ``"bridge"``): the
    target (Gaussian or kernel estimate of samples; one shared or one per class) mixed
    with the uniform ``loss.floor`` and normalised to the class priors like the data."""
    loss = cfg.loss
    if loss.kind not in ("kl", "bridge"):
        raise ConfigError(f"loss.kind: {loss.kind!r} has no target density (kl and bridge do)")
    d = discretisation(cfg)
    x, w = d.x, node_weights(d.h, d.M)
    pri = np.array([c.prior for c in cfg.classes])
    pri = pri / pri.sum()
    tg = loss.targets if len(loss.targets) == cfg.K else loss.targets * cfg.K
    q = np.empty((cfg.K, d.M))
    for k, t in enumerate(tg):
        key = "loss.target" if len(loss.targets) == 1 else f"loss.targets[{k}]"
        p = _density(t, x)
        mass = (w * p).sum()
        if not np.isfinite(mass) or mass <= 1e-300:
            raise ConfigError(f"{key}: the target puts no mass on [{d.x_min:g}, {d.x_max:g}]")
        p = (1.0 - loss.floor) * p / mass + loss.floor / (d.x_max - d.x_min)
        if np.any(p <= 0):
            raise ConfigError(f"{key}: the target density vanishes at some nodes; set loss.floor > 0")
        q[k] = pri[k] * p / (w * p).sum()
    return q


def boundary_data(cfg: Config, loss_scale: float = 1.0) -> BoundaryData:
    """Initial densities and the terminal condition ``phi^N = -s G`` (``s = loss_scale``);
    for ``kind = "kl"`` a :class:`~mfc_hpc.transport.KLTerminal` (``s`` multiplies
    ``gamma``), for ``kind = "bridge"`` a :class:`~mfc_hpc.transport.BridgeTerminal`
    (``s`` blends the uncontrolled flow into the bridge)."""
    d = discretisation(cfg)
    if cfg.loss.kind == "kl":
        from .transport import KLTerminal
        return KLTerminal(class_densities(cfg), target_densities(cfg), cfg.loss.gamma, loss_scale)
    if cfg.loss.kind == "bridge":
        from .transport import BridgeTerminal
        return BridgeTerminal(class_densities(cfg), target_densities(cfg), loss_scale)
    return BoundaryData(class_densities(cfg), loss_scale * loss_values(cfg.loss, cfg.K, d.x))
