"""``mfc-hpc stability CONFIG --out DIR``: layers for nodes, a priori and a posteriori.

Before solving it estimates the bounds of METHOD.md section 6 from the data and the loss
(:func:`mfc_hpc.stability.a_priori`): ``dt * max outflow rate <= 2`` (Markov layer maps,
non-negative densities) and ``dt * max compression < 1`` (monotone, invertible layers),
and prints the smallest number of layers for the configuration's nodes and the largest
number of nodes for its layers. Then (unless ``--no-solve``) it solves and checks the same
bounds on the solution (a posteriori) and what the run shows (converged, non-negative,
monotone). Writes ``DIR/stability.json`` and ``DIR/stability.png`` (the a priori boundary in
the (M, N) plane with this run, and the frozen-coefficient amplification factor).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("stability")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stability", help="a priori and a posteriori stability bounds (layers vs nodes)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--no-solve", action="store_true", help="a priori only: do not solve")
    p.add_argument("--positivity-tol", type=float, default=1e-8,
                   help="densities down to -tol * max density count as non-negative (default 1e-8)")
    p.add_argument("--max-nodes-cap", type=int, default=1 << 14,
                   help="search the largest stable node count up to this (default 16384)")
    p.add_argument("--no-plot", action="store_true", help="do not draw stability.png")
    p.set_defaults(func=run)


def prediction(cfg, max_nodes_cap: int = 1 << 14) -> dict:
    """A priori verdict, smallest stable N for M and largest stable M for N (no solve)."""
    from ..problem import boundary_data, discretisation
    from ..stability import a_priori, max_nodes, min_layers

    d, bd = discretisation(cfg), boundary_data(cfg)
    pre = a_priori(d, bd)
    pre["min_layers"] = min_layers(d, bd)
    pre["max_nodes"] = max_nodes(d, lambda M: boundary_data(cfg.replace(mesh={"nodes": M})), max_nodes_cap)
    pre["max_nodes_cap"] = max_nodes_cap
    return pre


def run_point(cfg, comm=None, positivity_tol: float = 1e-8,
              accuracy: Callable | None = None) -> dict:
    """Predict, solve (collective) and check one configuration; the record is on every rank.

    ``accuracy(cfg, Z) -> float`` (optional) scores the trained network of the solution
    ``Z[n, i, a]`` (e.g. test accuracy of the extracted residual network).
    """
    from ..problem import boundary_data, discretisation
    from ..run import solve_config
    from ..stability import a_posteriori, a_priori, min_layers, observed

    d, bd = discretisation(cfg), boundary_data(cfg)
    rec: dict = {"nodes": cfg.mesh.nodes, "layers": cfg.mesh.layers, "a_priori": a_priori(d, bd)}
    rec["a_priori"]["min_layers"] = min_layers(d, bd)
    ms, summary = solve_config(cfg, comm)
    try:
        ok = bool(summary["converged"])
        diag = summary["diagnostics"]
        Z = ms.state()
        rho_max = float(Z[..., :d.K].max())
        rec["newton"] = {"converged": ok, "iterations": summary["newton_iterations_fine"],
                         "failure": summary["failure"]}
        rec["min_density"] = diag["min_density"]
        rec["max_density"] = rho_max
        rec["a_posteriori"] = a_posteriori(diag) if ok else None
        rec["observed"] = observed(ok, diag, rho_max, positivity_tol)
        rec["observed"]["dt_outflow_rate"] = diag["dt_max_outflow_rate"]
        rec["observed"]["dt_compression"] = diag["dt_max_compression"]
        acc = accuracy(cfg, Z) if (accuracy is not None and ok) else None
        rec["test_accuracy"] = None if acc is None else float(acc)
    finally:
        ms.destroy()
    return rec


def table(pre: dict, rec: dict | None) -> str:
    f = pre["frozen"]
    lines = [
        f"mesh: M = {pre['nodes']} nodes (h = {pre['h']:.4g}), N = {pre['layers']} layers (dt = {pre['dt']:.4g})",
        f"frozen adjoint phi = -G: max |b| = {f['velocity']:.4g}, max |G'| = {f['loss_gradient']:.4g}, "
        f"cell Peclet |G'| h/nu = {f['cell_peclet']:.3g}",
        f"{'bound':40s} {'a priori':>10s} {'a posteriori':>13s} {'limit':>7s}",
        f"{'dt * max outflow rate (Markov)':40s} {pre['dt_outflow_rate']:10.4g} "
        f"{'-' if not rec or not rec.get('a_posteriori') else format(rec['a_posteriori']['dt_outflow_rate'], '.4g'):>13s} "
        f"{'<= 2':>7s}",
        f"{'dt * max compression (monotone layers)':40s} {pre['dt_compression']:10.4g} "
        f"{'-' if not rec or not rec.get('a_posteriori') else format(rec['a_posteriori']['dt_compression'], '.4g'):>13s} "
        f"{'< 1':>7s}",
        f"{'simple bound dt (2 nu/h^2 + |b|/h)':40s} {pre['simple_bound']:10.4g} {'':>13s} {'<= 2':>7s}",
        f"{'nu dt / h^2':40s} {pre['parabolic']:10.4g}",
        f"{'frozen-coefficient max |G|':40s} {pre['amplification']['max_abs']:10.4g} {'':>13s} {'<= 1':>7s}",
        f"{'sawtooth factor G(pi)':40s} {pre['amplification']['sawtooth']:10.4g} {'':>13s} {'>= 0':>7s}",
        f"a priori verdict: {'stable' if pre['stable'] else 'UNSTABLE'}; "
        f"smallest stable N for M = {pre['nodes']}: {pre['min_layers']}; largest stable M for N = {pre['layers']}: "
        f"{pre['max_nodes'] if pre['max_nodes'] is not None else 'none'}"
        + (" (the search cap)" if pre['max_nodes'] == pre['max_nodes_cap'] else ""),
    ]
    if rec is not None:
        o = rec["observed"]
        lines.append(
            f"solve: Newton {'converged' if rec['newton']['converged'] else 'FAILED'} "
            f"({rec['newton']['iterations']} iterations), min density {rec['min_density']:.3g}"
            + ("" if not rec.get("a_posteriori") else
               f"; a posteriori verdict: {'stable' if rec['a_posteriori']['stable'] else 'UNSTABLE'}")
            + f"; observed: {'stable' if o['stable'] else 'UNSTABLE'} (positive {o['positive']}, monotone {o['monotone']})")
    return "\n".join(lines)


def plot(cfg, pre: dict, rec: dict | None, path: Path) -> None:
    """The a priori (M, N) boundary with this run, and |G(theta)| / G(pi) of the linearised scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..problem import boundary_data, discretisation
    from ..stability import amplification, min_layers

    M0 = cfg.mesh.nodes
    Ms = np.unique(np.geomspace(9, max(4 * (M0 - 1) + 1, 65), 24).astype(int))
    Nmin = [min_layers(discretisation(cfg.replace(mesh={"nodes": int(m)})),
                       boundary_data(cfg.replace(mesh={"nodes": int(m)}))) for m in Ms]
    Nmin = [np.nan if v is None else v for v in Nmin]  # None: rates overflow on that mesh
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    ax[0].loglog(Ms, Nmin, "k-", label="a priori smallest stable N")
    ax[0].fill_between(Ms, 1, Nmin, color="C3", alpha=0.15, label="predicted unstable")
    mark = "o" if (rec is None or rec["observed"]["stable"]) else "x"
    ax[0].loglog([M0], [cfg.mesh.layers], mark, color="C0", ms=10,
                 label="this run" + ("" if rec is None else (" (observed stable)" if rec["observed"]["stable"]
                                                            else " (observed unstable)")))
    ax[0].set(xlabel="nodes per layer M", ylabel="layers N", title="layers for nodes (a priori)")
    ax[0].legend(fontsize=8)
    ax[0].grid(True, which="both", alpha=0.3)
    th = np.linspace(0, np.pi, 361)
    d = discretisation(cfg)
    U = pre["frozen"]["loss_gradient"]
    for scheme, c in (("midpoint", "C0"), ("euler", "C3")):
        G = amplification(th, d.dt, U, d.h, d.nu, scheme)
        ax[1].plot(th, np.abs(G), "-", color=c, label=f"|G| {scheme}")
        ax[1].plot(th, G.real, "--", color=c, label=f"Re G {scheme}")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(xlabel="theta = k h", ylabel="G", title=f"frozen-coefficient amplification (U = {U:.3g})")
    ax[1].legend(fontsize=8)
    ax[1].grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ..cli import BadInput, EXIT_NOT_CONVERGED
    from ..config import load_config
    from ..output import versions, write_json

    if not args.positivity_tol >= 0:
        raise BadInput(f"--positivity-tol: must be >= 0, got {args.positivity_tol}")
    if args.max_nodes_cap < 3:
        raise BadInput(f"--max-nodes-cap: must be >= 3, got {args.max_nodes_cap}")
    cfg = load_config(args.config)
    comm = PETSc.COMM_WORLD
    pre = prediction(cfg, args.max_nodes_cap)
    rec = None if args.no_solve else run_point(cfg, comm, args.positivity_tol)
    if comm.getRank() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(table(pre, rec), flush=True)
        write_json(out / "stability.json", {"config": cfg.to_dict(), "versions": versions(),
                                            "a_priori": pre, "run": rec})
        if not args.no_plot:
            plot(cfg, pre, rec, out / "stability.png")
        log.info("wrote %s/stability.json%s", out, "" if args.no_plot else f" and {out}/stability.png")
    if rec is not None and not rec["newton"]["converged"]:
        return EXIT_NOT_CONVERGED
    return 0
