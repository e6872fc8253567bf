"""``mfc-hpc transport CONFIG --out DIR``: move the data density to a target density."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("transport")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transport", help="generative use: transport the data to a target density "
                                         "([loss] kind = 'kl' or 'bridge')",
                       description="Solve a transport configuration ([loss] kind = 'kl': gamma KL(rho(T) | q); "
                                   "kind = 'bridge': the Schroedinger bridge rho(T) = q), report the kinetic "
                                   "cost and the distance to the target, export the network (OUT/model.npz), "
                                   "sample the target by pushing samples of the data through it with noise, "
                                   "and write OUT/transport.json, OUT/summary.json (key 'transport') and "
                                   "OUT/density_flow.png.")
    p.add_argument("config", help="TOML configuration file with [loss] kind = 'kl' or 'bridge'")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--samples", type=int, default=2000,
                   help="samples per class pushed through the network (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and noise draws")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import EXIT_NOT_CONVERGED, BadInput
    from ..config import load_config
    from ..output import write_json
    from . import solve_gathered
    from ..transport import transport_report

    if args.samples < 2:
        raise BadInput("transport: --samples must be >= 2")
    cfg = load_config(args.config)
    if cfg.loss.kind not in ("kl", "bridge"):
        raise BadInput(f"transport: {args.config} has [loss] kind = '{cfg.loss.kind}'; "
                       "transport needs kind = 'kl' or 'bridge' with a target")
    Z, summary, rank = solve_gathered(cfg, args.out)
    if not summary["converged"]:
        log.error("did not converge: %s", summary["failure"])
        return EXIT_NOT_CONVERGED
    if rank != 0:
        return 0
    rep = transport_report(cfg, Z, summary, args.out, samples=args.samples, seed=args.seed,
                           plots=not args.no_plots)
    out = Path(args.out)
    write_json(out / "transport.json", rep)
    summary["transport"] = rep
    write_json(out / "summary.json", summary)
    log.info("%s: kinetic cost %.6g%s; %d Newton steps on the finest mesh, %.1f s", cfg.loss.kind,
             rep["kinetic_cost"], "" if rep["gamma"] is None else
             f", terminal gamma*KL {rep['terminal_cost']:.6g}", summary["newton_iterations_fine"],
             summary["timings"]["total"])
    for r in rep["classes"]:
        log.info("class %s: L1(rho(T), q) = %.3e (data %.3e), KL(rho(T) | q) = %.3e (data %.3e); "
                 "%d samples pushed with noise vs q: KS D = %.4f (5%% critical %.4f, p = %.3f)",
                 r["class"], r["l1_rhoN_target"], r["l1_rho0_target"], r["kl_rhoN_target"],
                 r["kl_rho0_target"], r["samples"], r["ks_D_pushed_vs_target"], r["critical_D_5pct"],
                 r["p_value"])
    log.info("wrote %s/model.npz, transport.json, summary.json%s", args.out,
             "" if args.no_plots else ", density_flow.png")
    return 0
