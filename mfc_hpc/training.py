"""After a classification solve: export the network, evaluate it, compare with baselines.

Serial (rank 0) post-processing of a converged solution ``Z[n, i, a]`` of a configuration
with a ``[data]`` section:

* the exported network (:mod:`mfc_hpc.network`) and its accuracy / cross-entropy on the
  training and test splits;
* the same head without a network, and the best ordered thresholds on the same feature
  (the ceiling of any 1-D network, :func:`mfc_hpc.baseline.fit_thresholds`);
* the gradient-descent baseline (:func:`mfc_hpc.baseline.train_gd`) on the sample cost
  ``J_S``, which is also evaluated on the exported network (same parameter space);
* push-forward checks: samples drawn from the discrete ``rho^0_c`` and pushed through the
  network with noise ``nu`` against ``rho^N_c`` (one-sample Kolmogorov-Smirnov), and the
  training samples pushed through each network against ``rho^N_c``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .baseline import GDNetwork, fit_thresholds, sample_cost, threshold_predict, train_gd
from .config import Config, ConfigError
from .data import PreparedData, prepare
from .head import SoftmaxHead
from .network import ResidualNetwork, classification_report, evaluate, network_from_state
from .problem import discretisation

__all__ = ["head_of", "export_network", "sample_density", "density_cdf", "ks_statistic",
           "pushforward_check", "evaluate_training", "comparison_table", "sweep_accuracy"]

log = logging.getLogger(__name__.split(".")[-1])


def head_of(cfg: Config) -> SoftmaxHead:
    """The soft-max head of a configuration's loss."""
    if cfg.loss.kind != "softmax":
        raise ConfigError("loss.kind: classification needs the softmax head")
    return SoftmaxHead(cfg.loss.weights, cfg.loss.biases, cfg.loss.gamma)


def export_network(cfg: Config, Z: np.ndarray, data: PreparedData | None = None) -> ResidualNetwork:
    """The residual network of a solution, with head, class names and projection."""
    names = data.class_names if data else tuple(c.name or f"class{k}" for k, c in enumerate(cfg.classes))
    cfgd = cfg.to_dict()
    for c in cfgd["classes"]:
        c.pop("values", None)  # the samples stay in the data file
    return network_from_state(Z, discretisation(cfg), head_of(cfg), names,
                              data.projection if data else None, cfgd)


# ---------------------------------------------------------------------------- densities

def _cells(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 0.5 * (p[1:] + p[:-1]) * np.diff(x)


def sample_density(x: np.ndarray, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the piecewise-linear density with nodal values ``p`` on nodes ``x``
    (a cell by its mass, then the inverse of the quadratic cell CDF)."""
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


def density_cdf(x: np.ndarray, p: np.ndarray):
    """CDF of the normalised piecewise-linear density ``p`` on ``x`` (a callable)."""
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

    r = stats.kstest(np.asarray(samples), cdf)
    return float(r.statistic), float(r.pvalue)


def pushforward_check(net: ResidualNetwork, rho: np.ndarray, n: int, seed: int = 0) -> list[dict]:
    """Per class: ``n`` samples of ``rho^0_c`` pushed through the network with noise
    ``nu``, against ``rho^N_c`` (KS ``D``, p-value, and the 5% critical ``D``)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(rho.shape[1]):
        x0 = sample_density(net.nodes, rho[0, c], n, rng)
        xN = net.forward(x0, noise=True, rng=rng)
        D, pv = ks_statistic(xN, density_cdf(net.nodes, rho[-1, c]))
        D0, _ = ks_statistic(net.forward(x0), density_cdf(net.nodes, rho[-1, c]))
        out.append({"class": net.class_names[c], "samples": n, "ks_D": D, "p_value": pv,
                    "ks_D_without_noise": D0, "critical_D_5pct": 1.358 / np.sqrt(n)})
    return out


def _pushed_train_ks(xN: np.ndarray, y: np.ndarray, nodes: np.ndarray, rho: np.ndarray) -> list[float]:
    return [ks_statistic(xN[y == c], density_cdf(nodes, rho[-1, c]))[0] for c in range(rho.shape[1])]


# ---------------------------------------------------------------------------- evaluation

def evaluate_training(cfg: Config, Z: np.ndarray, summary: dict, out_dir: str | Path | None = None,
                      gd_steps: int = 2000, ks_samples: int = 1000, seed: int = 0,
                      plots: bool = True) -> tuple[ResidualNetwork, dict]:
    """Export, evaluate and compare (serial); writes ``model.npz`` and PNGs to ``out_dir``."""
    dc = cfg.extra.get("data")
    if dc is None:
        raise ConfigError("data: the configuration has no [data] section (nothing to evaluate on)")
    data = prepare(dc)
    d = discretisation(cfg)
    net = export_network(cfg, Z, data)
    head = net.head
    K = d.K
    rho = np.moveaxis(Z[..., :K], 2, 1)  # [n, c, i]
    order = np.argsort(data.class_means())
    diag = summary.get("diagnostics", {})
    rep: dict = {"data": {"file": dc.file, "classes": list(data.class_names), "projection": dc.projection,
                          "train": int(data.y_train.size), "test": int(data.y_test.size)}}

    mf_wall = summary.get("timings", {}).get("total")
    mf_det = GDNetwork(net.W2, net.B2, -net.B1, net.dt)
    rep["mean_field"] = {
        "train": classification_report(head, net.forward(data.x_train), data.y_train),
        "test": classification_report(head, net.forward(data.x_test), data.y_test),
        "J_h": diag.get("cost", {}).get("total"),
        "zero_network_J_h": (summary.get("zero_network_cost") or {}).get("total"),
        "J_S": sample_cost(mf_det, data.x_train, data.y_train, head, d.x, d.eta),
        "J_S_noisy": sample_cost(mf_det, data.x_train, data.y_train, head, d.x, d.eta, nu=d.nu,
                                 draws=100, seed=seed),
        "wall": mf_wall,
        "compression": net.compression(),
        "max_abs_drift": float(np.abs(net.drift).max()),
    }
    rep["head_only"] = {"train": classification_report(head, data.x_train, data.y_train),
                        "test": classification_report(head, data.x_test, data.y_test)}
    th = fit_thresholds(data.x_train, data.y_train, order)
    th_or = fit_thresholds(data.x_test, data.y_test, order)
    rep["thresholds"] = {
        "order": [data.class_names[c] for c in order], "values": th.tolist(),
        "train_accuracy": float((threshold_predict(data.x_train, th, order) == data.y_train).mean()),
        "test_accuracy": float((threshold_predict(data.x_test, th, order) == data.y_test).mean()),
        "test_oracle_accuracy": float((threshold_predict(data.x_test, th_or, order) == data.y_test).mean()),
    }
    rep["pushforward"] = {"noisy_samples_vs_rhoN": pushforward_check(net, rho, ks_samples, seed),
                          "train_samples_vs_rhoN_D": {"mean_field": _pushed_train_ks(
                              net.forward(data.x_train), data.y_train, d.x, rho)}}
    gd = None
    if gd_steps > 0:
        t0 = time.perf_counter()
        gd = train_gd(data.x_train, data.y_train, head, d.x, d.N, d.T, d.eta, nu=d.nu, steps=gd_steps,
                      seed=seed)
        wall = time.perf_counter() - t0
        rep["gradient_descent"] = {
            "steps": gd.steps, "noise_nu": d.nu, "optimizer": "Adam (lr 0.02, full batch)",
            "train": classification_report(head, gd.net.forward(data.x_train), data.y_train),
            "test": classification_report(head, gd.net.forward(data.x_test), data.y_test),
            "J_S": sample_cost(gd.net, data.x_train, data.y_train, head, d.x, d.eta),
            "J_S_noisy": sample_cost(gd.net, data.x_train, data.y_train, head, d.x, d.eta, nu=d.nu,
                                     draws=100, seed=seed),
            "wall": wall, "cost_history": gd.cost,
        }
        rep["pushforward"]["train_samples_vs_rhoN_D"]["gradient_descent"] = _pushed_train_ks(
            gd.net.forward(data.x_train), data.y_train, d.x, rho)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        net.save(out / "model.npz")
        rep["model"] = str(out / "model.npz")
        if plots:
            from .plots import training_figures
            rep["figures"] = [str(p) for p in training_figures(out, net, rho, data, gd.net if gd else None)]
    return net, rep


def comparison_table(rep: dict) -> str:
    """The mean-field vs gradient-descent table (text) of an evaluation report."""
    rows = [("method", "J_S (nu=0)", "J_S (noise nu)", "train acc", "test acc", "wall s")]

    def row(name: str, r: dict | None) -> None:
        if r:
            rows.append((name, f"{r['J_S']:.4f}" if "J_S" in r else "-",
                         f"{r['J_S_noisy']:.4f}" if "J_S_noisy" in r else "-",
                         f"{r['train']['accuracy']:.3f}", f"{r['test']['accuracy']:.3f}",
                         "-" if r.get("wall") is None else f"{r['wall']:.1f}"))

    row("mean-field (whole-mesh Newton)", rep.get("mean_field"))
    row("gradient descent (Adam)", rep.get("gradient_descent"))
    row("head without network", rep.get("head_only"))
    t = rep["thresholds"]
    rows.append(("best ordered thresholds", "-", "-", f"{t['train_accuracy']:.3f}", f"{t['test_accuracy']:.3f}", "-"))
    w = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w[k]) for k, c in enumerate(r)) for r in rows]
    lines.insert(1, "-|-".join("-" * x for x in w))
    return "\n".join(lines)


def sweep_accuracy(cfg: Config, Z: np.ndarray, samples: int = 2000, seed: int = 0) -> float | None:
    """Test accuracy of the network extracted from a solution ``Z[n, i, a]``, for sweeps
    (``scripts/stability_sweep.py --accuracy mfc_hpc.training:sweep_accuracy``).

    With a ``[data]`` section: the held-out split. Otherwise (classes given as densities):
    ``samples`` points per class drawn (seeded) from the initial class densities
    ``rho_c(0, .)`` on the nodes, pushed through the deterministic network and read by the
    head. ``None`` for a loss without a soft-max head.
    """
    if cfg.loss.kind != "softmax":
        return None
    dc = cfg.extra.get("data")
    if dc is not None:
        data = prepare(dc)
        return float(evaluate(export_network(cfg, Z, data), data.x_test, data.y_test)["accuracy"])
    d = discretisation(cfg)
    net = export_network(cfg, Z)
    rng = np.random.default_rng(seed)
    rho0 = np.moveaxis(Z[0, :, :d.K], 1, 0)  # [c, i]
    x = np.concatenate([sample_density(d.x, rho0[c], samples, rng) for c in range(d.K)])
    y = np.repeat(np.arange(d.K), samples)
    return float(evaluate(net, x, y)["accuracy"])
