"""``mfc-hpc transport CONFIG --out DIR``: move the data density to a target density
(:mod:`mfc_hpc.learning.transport`), in 1-D or 2-D."""
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
    p.add_argument("--permutations", type=int, default=200,
                   help="permutations of the 2-D energy test's threshold (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and noise draws")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG")
    from .solve import add_checkpoint_options
    add_checkpoint_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ...errors import BadInput
    from .solve import run_checked
    from .train import check_energy_samples

    if args.samples < 2 or args.permutations < 19:
        raise BadInput("transport: --samples must be >= 2 and --permutations >= 19")

    def check(inputs) -> None:
        cfg = inputs.cfg
        if cfg.loss.kind not in ("kl", "bridge"):
            raise BadInput(f"transport: {args.config} has [loss] kind = '{cfg.loss.kind}'; "
                           "transport needs kind = 'kl' or 'bridge' with a target")
        check_energy_samples("transport", cfg, args.samples)

    def failure_only(summary: dict, out) -> None:  # the transport report says the rest
        if not summary["converged"]:
            log.error("did not converge: %s", summary["failure"])

    return run_checked(args, PETSc.COMM_WORLD, check,
                       lambda inputs, summary: _report(args, inputs.cfg, inputs.problem, summary, inputs.out),
                       summarise=failure_only)


def _report(args: argparse.Namespace, cfg, problem, summary: dict, out) -> int:
    """Rank 0: read the solution back, export the network, test the pushed samples."""
    from pathlib import Path

    from ...fileio.solution import read_solution
    from ...fileio.summary import write_json
    from ...learning.network import state_from_solution
    from ...learning.transport import transport_report

    out = Path(out)
    Z = state_from_solution(read_solution(out / "solution.h5"))
    rep = transport_report(problem, Z, summary, out, samples=args.samples, seed=args.seed,
                           plots=not args.no_plots, permutations=args.permutations)
    write_json(out / "transport.json", rep)
    summary["transport"] = rep
    write_json(out / "summary.json", summary)
    log.info("%s: kinetic cost %.6g%s; %d Newton steps on the finest mesh, %.1f s", cfg.loss.kind,
             rep["kinetic_cost"], "" if rep["gamma"] is None else
             f", terminal gamma*KL {rep['terminal_cost']:.6g}", summary["newton_iterations_fine"],
             summary["timings"]["total"])
    for r in rep["classes"]:
        if rep["dim"] == 1:
            test = (f"KS D = {r['ks_D_pushed_vs_target']:.4f} (5% critical {r['critical_D_5pct']:.4f}, "
                    f"p = {r['p_value']:.3f})")
        else:
            test = (f"energy {r['energy_pushed_vs_target']:.4g} (5% permutation threshold {r['threshold_5pct']:.4g}, "
                    f"p = {r['p_value']:.3f})")
        log.info("class %s: L1(rho(T), q) = %.3e (data %.3e), KL(rho(T) | q) = %.3e (data %.3e); "
                 "%d samples pushed with noise vs q: %s", r["class"], r["l1_rhoN_target"], r["l1_rho0_target"],
                 r["kl_rhoN_target"], r["kl_rho0_target"], r["samples"], test)
    log.info("wrote %s/model.npz, transport.json, summary.json%s", out,
             "" if args.no_plots else ", density_flow.png")
    return 0
