"""``mfc-hpc solve CONFIG --out DIR``: solve the optimality system of one configuration."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("solve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solve", help="solve the discrete optimality system of a TOML configuration",
                       description="Solve the discrete optimality system (METHOD.md section 4) on the "
                                   "whole depth-time mesh; writes OUT/summary.json and OUT/solution.h5.")
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import EXIT_NOT_CONVERGED
    from ..config import load_config
    from ..run import solve_config

    cfg = load_config(args.config)
    ms, summary = solve_config(cfg, out_dir=args.out)
    diag = summary["diagnostics"]
    c = diag["cost"]
    if summary["converged"]:
        log.info("converged: %d Newton steps on the finest mesh, %.2f s", summary["newton_iterations_fine"],
                 summary["timings"]["total"])
    else:
        log.error("did not converge: %s", summary["failure"])
    log.info("J_h = %.6g (kinetic %.4g, running %.4g, terminal %.4g); zero network %s",
             c["total"], c["kinetic"], c["running"], c["terminal"],
             "n/a" if summary["zero_network_cost"] is None else f"{summary['zero_network_cost']['total']:.6g}")
    log.info("mass error %.2e, Hamiltonian deviation %.2e, min density %.3e, dt*max outflow %.3f, "
             "dt*max compression %.3f", diag["mass_error_max"], diag["hamiltonian_dev_mean"],
             diag["min_density"], diag["dt_max_outflow_rate"], diag["dt_max_compression"])
    log.info("wrote %s/summary.json and %s/solution.h5", args.out, args.out)
    ms.destroy()
    return 0 if summary["converged"] else EXIT_NOT_CONVERGED
