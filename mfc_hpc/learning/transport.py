"""Transport (generative use): move the data density to a target density ``q``, and the
report of such a solve.

Two terminal conditions replace the fixed loss of METHOD.md section 2
(:mod:`mfc_hpc.numerics.terminal`); the scheme, the solver, the continuation and the
diagnostics are unchanged, in any state dimension.

**KL terminal cost** (:class:`~mfc_hpc.numerics.terminal.KLTerminal`): the mean-field
terminal cost ``gamma * KL(rho^N_c | q_c)`` per class, ``q_c`` of the class mass ``pi_c``:

    G[rho^N] = gamma sum_c sum_i w_i rho^N_{c,i} log(rho^N_{c,i} / q_{c,i}),
    phi^N_{c,i} = -dG/d(w_i rho^N_{c,i}) = -gamma (log(rho^N_{c,i} / q_{c,i}) + 1),
    d phi^N_{c,i} / d rho^N_{d,i} = -gamma delta_cd / rho^N_{c,i}

(``w_i`` the product weights). The loss weight ``s`` of the continuation multiplies
``gamma`` (``s = 0``: the uncontrolled flow).

**Schroedinger bridge** (:class:`~mfc_hpc.numerics.terminal.BridgeTerminal`): the hard
limit ``rho^N_c = q_c``. The unknowns stay the same; the terminal equations in the adjoint
slots of level ``N`` become ``rho^N_{c,i} = q_{c,i}``, written as
``w_i log(rho^N_{c,i} / q_{c,i}) = 0`` (same solutions; the logarithm makes the rows
scale-free where ``q`` is tiny, and below ``LOG_CUT q`` it is continued by its tangent line
so that any state gives finite rows). The density equations conserve mass
(``sum_i w_i rho^N_c = pi_c`` exactly), so with ``q_c`` of mass ``pi_c`` one of these
equations per class is redundant, and ``phi_c`` is defined up to an additive constant
(the scheme sees only differences of ``phi_c`` within a level and between levels). The
redundant equation at the *gauge node* ``g_c`` (where ``q_c`` peaks: the round-off of
the mass lands there, so it must not be in a tail) is replaced by ``w_g phi^N_{c,g} = 0``.
That fixes the same constant as the documented gauge ``sum_i w_i phi^N_{c,i} = 0`` but
touches one node of level ``N`` only, so it fits the box stencil;
:func:`~mfc_hpc.numerics.terminal.apply_gauge` shifts a solution to the documented gauge
afterwards (the exported network uses it; the drift does not change).

*Continuation for the bridge.* Its loss weight ``s in [0, 1]`` blends the rows
``w_i [(1 - s) phi^N_{c,i} + s log(rho^N_{c,i} / q_{c,i})] = 0`` (``i != g_c``): ``s = 0`` is
``phi^N = 0``, solved exactly by the uncontrolled flow; ``0 < s < 1`` the KL penalty
``lambda sum_{i != g} w_i (rho log(rho/q) - rho + q)`` with ``lambda = s/(1 - s)``; ``s = 1``
the bridge. The residual is linear in ``s``.

*Closed form* (:func:`gaussian_bridge`): one class, ``eta = 0``, Gaussian data and target
on the line. For product Gaussians in the plane the bridge is the product of the bridges
of the axes (the cost and the noise are sums over axes), so each marginal follows the 1-D
formula.

*Limits.* Newton follows the bridge continuation when the target's tails on the mesh are
not too thin relative to the uncontrolled flow's: give such targets a floor
(``[loss] floor``, uniform mixture, default 1e-4).

The report (:func:`transport_report`) works for ``d = 1`` and ``2``: L1 and KL distances
with the product weights, and the samples pushed through the noisy network tested against
``q`` and ``rho^N`` (one-sample Kolmogorov-Smirnov in 1-D, the two-sample energy test in
2-D, :mod:`mfc_hpc.learning.pushforward`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..numerics.terminal import BridgeTerminal, KLTerminal, apply_gauge, kl_divergence
from ..problem.build import Problem
from ..problem.losses import SoftmaxHead
from .network import ResidualNetwork, network_from_state
from .pushforward import compare_samples, sample_density

__all__ = ["gaussian_bridge", "transport_network", "transport_report", "kl_divergence", "apply_gauge"]


def gaussian_bridge(t, T: float, m0: float, s0: float, m1: float, s1: float, nu: float):
    """Mean and variance at depth ``t`` of the Schroedinger bridge from ``N(m0, s0)`` to
    ``N(m1, s1)`` (variances) over ``[0, T]`` for ``dX = u dt + sqrt(2 nu) dW`` on the line
    (minimal ``E int 1/2 u^2``): with ``tau = t/T``,

        mean = (1 - tau) m0 + tau m1,
        var  = (1 - tau)^2 s0 + tau^2 s1 + tau (1 - tau) sqrt(4 s0 s1 + (2 nu T)^2)

    (the 1-D case of the closed form of Bunne et al., AISTATS 2023; ``nu -> 0`` gives the
    displacement interpolation ``((1 - tau) sqrt(s0) + tau sqrt(s1))^2``)."""
    tau = np.asarray(t, dtype=float) / T
    D = np.sqrt(4.0 * s0 * s1 + (2.0 * nu * T) ** 2)
    return (1 - tau) * m0 + tau * m1, (1 - tau) ** 2 * s0 + tau ** 2 * s1 + tau * (1 - tau) * D


def _target(problem: Problem) -> np.ndarray:
    bd = problem.bd
    if not isinstance(bd, (KLTerminal, BridgeTerminal)):
        raise ConfigError(f"loss.kind: transport needs kind = 'kl' or 'bridge', not {problem.cfg.loss.kind!r}")
    return np.asarray(bd.target, dtype=float)


def transport_network(problem: Problem, Z: np.ndarray) -> ResidualNetwork:
    """The residual network of a transport solution ``Z[n, *i, a]`` (bridge: in the
    documented gauge). Transport has no read-out: the model carries a neutral head (all
    logits 0, ``gamma = 0``; two entries when there is one class, the second named ``"-"``)."""
    _target(problem)
    d = problem.d
    if problem.cfg.loss.kind == "bridge":
        Z = apply_gauge(Z, problem.grid.weights(), d.K)
    names = list(problem.class_names)
    if len(names) == 1:
        names.append("-")
    head = SoftmaxHead(np.zeros((len(names), d.ndim)), np.zeros(len(names)), 0.0)
    return network_from_state(Z, d, head, tuple(names), None, problem.resolved_config())


def transport_report(problem: Problem, Z: np.ndarray, summary: dict, out_dir=None, samples: int = 2000,
                     seed: int = 0, plots: bool = True, permutations: int = 200) -> dict:
    """Evaluate a converged transport solve (serial, rank 0): kinetic cost, distance of
    ``rho^N`` to the target (L1, KL; before: ``rho^0``), the exported network
    (``OUT/model.npz``), and ``samples`` draws of ``rho^0_c`` pushed through it with noise
    ``nu``, tested against ``q_c`` and ``rho^N_c`` (module docstring)."""
    q = _target(problem)
    d = problem.d
    grid = problem.grid
    w = grid.weights()
    K = d.K
    rho = np.moveaxis(Z[..., :K], -1, 1)  # [n, c, *i]
    net = transport_network(problem, Z)
    rng = np.random.default_rng(seed)
    cost = summary["diagnostics"]["cost"]
    loss = problem.cfg.loss
    rep: dict = {
        "kind": loss.kind,
        "dim": grid.ndim,
        "kinetic_cost": cost["kinetic"],
        "terminal_cost": cost["terminal"],
        "gamma": loss.gamma if loss.kind == "kl" else None,
        "classes": [],
        "network": {"blocks": net.N, "units_per_block": net.M, "dt_max_compression": net.compression()},
        "test": "ks" if grid.ndim == 1 else "energy",
    }
    pushed = []
    for c in range(K):
        x0 = sample_density(grid, rho[0, c], samples, rng)
        xN = net.forward(x0, noise=True, rng=rng)
        pushed.append((x0, xN))
        vs_q = compare_samples(xN, grid, q[c], seed, permutations)
        vs_rho = compare_samples(xN, grid, rho[-1, c], seed, permutations)
        no_noise = compare_samples(net.forward(x0), grid, q[c], seed, permutations)
        inp = compare_samples(x0, grid, q[c], seed, permutations)
        pi = float((w * q[c]).sum())
        r = {"class": net.class_names[c], "prior": pi,
             "l1_rhoN_target": float((w * np.abs(rho[-1, c] - q[c])).sum() / pi),
             "l1_rho0_target": float((w * np.abs(rho[0, c] - q[c])).sum() / pi),
             "kl_rhoN_target": float(kl_divergence(rho[-1, c], q[c], w) / pi),
             "kl_rho0_target": float(kl_divergence(rho[0, c], q[c], w) / pi),
             "samples": samples, "threshold_5pct": vs_q["threshold_5pct"], "p_value": vs_q["p_value"]}
        if grid.ndim == 1:  # the releases' keys
            r.update({"ks_D_pushed_vs_target": vs_q["statistic"], "ks_D_pushed_vs_rhoN": vs_rho["statistic"],
                      "ks_D_pushed_without_noise_vs_target": no_noise["statistic"],
                      "ks_D_input_vs_target": inp["statistic"], "critical_D_5pct": vs_q["threshold_5pct"]})
        else:
            r.update({"energy_pushed_vs_target": vs_q["statistic"], "energy_pushed_vs_rhoN": vs_rho["statistic"],
                      "threshold_pushed_vs_rhoN_5pct": vs_rho["threshold_5pct"],
                      "energy_pushed_without_noise_vs_target": no_noise["statistic"],
                      "energy_input_vs_target": inp["statistic"], "permutations": permutations})
        rep["classes"].append(r)
    if out_dir is not None:
        out = Path(out_dir)
        rep["model"] = str(net.save(out / "model.npz"))
        if plots:
            from .plots import transport_figure
            title = (f"{loss.kind}: kinetic cost {cost['kinetic']:.4g}, "
                     f"L1(rho(T), q) = {rep['classes'][0]['l1_rhoN_target']:.2e}")
            rep["figures"] = [str(transport_figure(out / "density_flow.png", net, rho, q, *pushed[0], title=title))]
    return rep
