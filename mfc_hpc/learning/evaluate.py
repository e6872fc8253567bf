"""After a classification solve: export the network, evaluate it on the split, compare
with the baselines (serial post-processing on rank 0).

For a converged solution ``Z[n, *i, a]`` of a problem with a ``[data]`` section:

* the exported network (:mod:`mfc_hpc.learning.network`, ``model.npz`` and ``model.onnx``)
  and its accuracy / cross-entropy on the training and test splits;
* the head without a network; logistic regression on the same features and on all the
  table's features; in 1-D the best ordered thresholds (the ceiling of any 1-D network);
* gradient descent on the same architecture (:func:`mfc_hpc.learning.baseline.train_gd`)
  with noise injection ``nu`` (as the releases) and without, on the sample cost ``J_S``,
  which is also evaluated on the exported network (same parameter space);
* push-forward checks (:mod:`mfc_hpc.learning.pushforward`): samples of the discrete
  ``rho^0_c`` pushed through the network with noise ``nu`` against ``rho^N_c`` (KS in 1-D,
  the energy test in 2-D), and the training samples pushed through each network.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..problem.build import Problem
from .baseline import fit_thresholds, logistic_baselines, sample_cost, threshold_predict, train_gd
from .network import ResidualNetwork, classification_report, evaluate, network_from_state
from .pushforward import compare_samples, pushforward_check, sample_density

__all__ = ["export_network", "evaluate_training", "comparison_table", "sweep_accuracy", "class_densities",
           "GD_STEPS", "PUSHFORWARD_SAMPLES"]

log = logging.getLogger(__name__.split(".")[-1])

#: default Adam steps of the gradient-descent baselines
GD_STEPS = 2000
#: default samples per class of the push-forward check
PUSHFORWARD_SAMPLES = 1000


def export_network(problem: Problem, Z: np.ndarray) -> ResidualNetwork:
    """The residual network of a solution, with head, class names, projection and the
    resolved configuration."""
    if problem.head is None:
        raise ConfigError("loss.kind: exporting a classifier needs the softmax head")
    return network_from_state(Z, problem.d, problem.head, problem.class_names,
                              problem.data.projection if problem.data is not None else None,
                              problem.resolved_config())


def class_densities(Z: np.ndarray, K: int) -> np.ndarray:
    """``rho[n, c, *i]`` of a whole state ``Z[n, *i, a]``."""
    return np.moveaxis(Z[..., :K], -1, 1)


def _gd_report(problem: Problem, gd, nu: float, data, seed: int) -> dict:
    d, head = problem.d, problem.head
    g = problem.grid
    net = gd.net
    return {
        "steps": gd.steps, "noise_nu": nu, "optimizer": f"Adam (lr {gd.lr:g}, full batch)",
        "parameters": "c, B2 of the 1-D ReLU form (nodes fixed)" if g.ndim == 1 else
        "nodal values b[n, k, i] of the CPWL blocks",
        "train": classification_report(head, net.forward(data.x_train), data.y_train),
        "test": classification_report(head, net.forward(data.x_test), data.y_test),
        "J_S": sample_cost(net, data.x_train, data.y_train, head, g, d.eta),
        "J_S_noisy": sample_cost(net, data.x_train, data.y_train, head, g, d.eta, nu=d.nu, draws=100, seed=seed),
        "J_S_test": sample_cost(net, data.x_test, data.y_test, head, g, d.eta),
        "wall": gd.wall, "cost_history": gd.cost,
    }


@dataclass(frozen=True)
class Split:
    """The samples of the split in the states the network takes (flat ``x[s]`` in 1-D)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _states(x: np.ndarray, ndim: int) -> np.ndarray:
    """The 1-D code paths of the releases work on flat states ``x[s]``."""
    return x[:, 0] if ndim == 1 else x


def evaluate_training(problem: Problem, Z: np.ndarray, summary: dict, out_dir: str | Path | None = None,
                      gd_steps: int = GD_STEPS, samples: int = PUSHFORWARD_SAMPLES, seed: int = 0,
                      plots: bool = True, onnx: bool = True, gd_noise_free: bool = True,
                      permutations: int = 200) -> tuple[ResidualNetwork, dict]:
    """Export, evaluate and compare (serial); with ``out_dir`` writes ``model.npz``,
    ``model.onnx`` and the PNGs there. Returns the network and the report."""
    if problem.data is None:
        raise ConfigError("data: the configuration has no [data] section (nothing to evaluate on)")
    pdata = problem.data
    d, grid, head = problem.d, problem.grid, problem.head
    n = grid.ndim
    net = export_network(problem, Z)
    K = d.K
    rho = class_densities(Z, K)

    data = Split(_states(pdata.x_train, n), pdata.y_train, _states(pdata.x_test, n), pdata.y_test)
    diag = summary.get("diagnostics", {})
    dc = problem.cfg.data
    rep: dict = {"data": {"file": dc.file, "classes": list(pdata.class_names), "projection": dc.projection,
                          "features": n, "train": int(pdata.y_train.size), "test": int(pdata.y_test.size)}}
    rep["mean_field"] = {
        "train": classification_report(head, net.forward(data.x_train), data.y_train),
        "test": classification_report(head, net.forward(data.x_test), data.y_test),
        "J_h": diag.get("cost", {}).get("total"),
        "zero_network_J_h": (summary.get("zero_network_cost") or {}).get("total"),
        "J_S": sample_cost(net, data.x_train, data.y_train, head, grid, d.eta),
        "J_S_noisy": sample_cost(net, data.x_train, data.y_train, head, grid, d.eta, nu=d.nu, draws=100,
                                 seed=seed),
        "J_S_test": sample_cost(net, data.x_test, data.y_test, head, grid, d.eta),
        "wall": summary.get("timings", {}).get("total"),
        "compression": net.compression(),
        "invertible": bool(net.compression() < 1.0),
        "max_abs_drift": float(np.abs(net.drift).max()),
    }
    rep["head_only"] = {"train": classification_report(head, data.x_train, data.y_train),
                        "test": classification_report(head, data.x_test, data.y_test)}
    rep["logistic"] = logistic_baselines(pdata)
    if n == 1:
        order = np.argsort(pdata.class_means()[:, 0])
        th = fit_thresholds(data.x_train, data.y_train, order)
        th_or = fit_thresholds(data.x_test, data.y_test, order)
        rep["thresholds"] = {
            "order": [pdata.class_names[c] for c in order], "values": th.tolist(),
            "train_accuracy": float((threshold_predict(data.x_train, th, order) == data.y_train).mean()),
            "test_accuracy": float((threshold_predict(data.x_test, th, order) == data.y_test).mean()),
            "test_oracle_accuracy": float((threshold_predict(data.x_test, th_or, order) == data.y_test).mean()),
        }
    t0 = time.perf_counter()
    rep["pushforward"] = {"noisy_samples_vs_rhoN": pushforward_check(net, rho, samples, seed, permutations)}

    def pushed(xN: np.ndarray) -> list[dict]:
        return [compare_samples(xN[data.y_train == c], grid, rho[-1, c], seed, permutations) for c in range(K)]

    train_push = {"mean_field": pushed(net.forward(data.x_train))}
    gd = gd0 = None
    if gd_steps > 0:
        gd = train_gd(data.x_train, data.y_train, head, grid, d.N, d.T, d.eta, nu=d.nu, steps=gd_steps,
                      seed=seed, class_names=net.class_names)
        rep["gradient_descent"] = _gd_report(problem, gd, d.nu, data, seed)
        train_push["gradient_descent"] = pushed(gd.net.forward(data.x_train))
        if gd_noise_free:
            gd0 = train_gd(data.x_train, data.y_train, head, grid, d.N, d.T, d.eta, nu=0.0, steps=gd_steps,
                           seed=seed, class_names=net.class_names)
            rep["gradient_descent_no_noise"] = _gd_report(problem, gd0, 0.0, data, seed)
    if n == 1:  # the releases' key: the KS D of each class
        rep["pushforward"]["train_samples_vs_rhoN_D"] = {k: [r["statistic"] for r in v] for k, v in train_push.items()}
    else:
        rep["pushforward"]["train_samples_vs_rhoN"] = train_push
    rep["evaluation_wall"] = time.perf_counter() - t0
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        net.save(out / "model.npz")
        rep["model"] = str(out / "model.npz")
        if onnx:
            from .onnx_export import save_onnx
            rep["model_onnx"] = str(save_onnx(net, out / "model.onnx"))
        if plots:
            from .plots import training_figures
            gdn = gd.net if gd is not None else None
            rep["figures"] = [str(p) for p in training_figures(out, net, rho, data, gdn)]
    return net, rep


def comparison_table(rep: dict) -> str:
    """The comparison table (text) of an evaluation report."""
    rows = [("method", "J_S (nu=0)", "J_S (noise nu)", "train acc", "test acc", "wall s")]

    def row(name: str, r: dict | None) -> None:
        if r:
            rows.append((name, f"{r['J_S']:.4f}" if "J_S" in r else "-",
                         f"{r['J_S_noisy']:.4f}" if "J_S_noisy" in r else "-",
                         f"{r['train']['accuracy']:.3f}", f"{r['test']['accuracy']:.3f}",
                         "-" if r.get("wall") is None else f"{r['wall']:.1f}"))

    row("mean-field (whole-mesh Newton)", rep.get("mean_field"))
    gd = rep.get("gradient_descent")
    row(f"gradient descent (Adam, noise nu = {gd['noise_nu']:g})" if gd else "", gd)
    row("gradient descent (Adam, no noise)", rep.get("gradient_descent_no_noise"))
    row("head without network", rep.get("head_only"))
    lg = rep.get("logistic") or {}
    if lg:
        row(f"logistic regression, same {lg['same_features']['features']} feature(s)", lg["same_features"])
        row(f"logistic regression, all {lg['all_features']['features']} features", lg["all_features"])
    t = rep.get("thresholds")
    if t:
        rows.append(("best ordered thresholds", "-", "-", f"{t['train_accuracy']:.3f}", f"{t['test_accuracy']:.3f}",
                     "-"))
    w = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w[k]) for k, c in enumerate(r)) for r in rows]
    lines.insert(1, "-|-".join("-" * x for x in w))
    return "\n".join(lines)


def sweep_accuracy(problem: Problem, Z: np.ndarray, samples: int = 2000, seed: int = 0) -> float | None:
    """Test accuracy of the network extracted from a solution ``Z[n, *i, a]``, for the
    stability sweeps.

    With a ``[data]`` section: the held-out split. Otherwise (classes given as densities):
    ``samples`` points per class drawn (seeded) from the initial class densities
    ``rho_c(0, .)`` on the nodes, pushed through the deterministic network and read by the
    head. ``None`` for a loss without a soft-max head.
    """
    if problem.head is None or problem.cfg.loss.kind != "softmax":
        return None
    d = problem.d
    net = export_network(problem, Z)
    if problem.data is not None:
        if problem.data.y_test.size == 0:  # test_fraction = 0: nothing held out
            return None
        return float(evaluate(net, _states(problem.data.x_test, d.ndim), problem.data.y_test)["accuracy"])
    rng = np.random.default_rng(seed)
    rho0 = class_densities(Z, d.K)[0]
    x = np.concatenate([sample_density(d.grid, rho0[c], samples, rng) for c in range(d.K)])
    y = np.repeat(np.arange(d.K), samples)
    return float(evaluate(net, x, y)["accuracy"])
