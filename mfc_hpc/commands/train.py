"""``mfc-hpc train CONFIG --out DIR``: solve a classification, export and evaluate the network."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a residual network on labelled data (a config with [data])",
                       description="Solve the optimality system of a configuration with a [data] section, "
                                   "export the residual network (OUT/model.npz), evaluate it on the test "
                                   "split against the head alone, the best ordered thresholds and a "
                                   "gradient-descent baseline, and write OUT/summary.json (key 'network'), "
                                   "OUT/evaluation.json and PNGs.")
    p.add_argument("config", help="TOML configuration file with a [data] section")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--gd-steps", type=int, default=2000,
                   help="Adam steps of the gradient-descent baseline (0: skip it; default 2000)")
    p.add_argument("--ks-samples", type=int, default=1000,
                   help="samples per class for the push-forward Kolmogorov-Smirnov check (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the baseline")
    p.add_argument("--no-plots", action="store_true", help="do not write PNGs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import EXIT_NOT_CONVERGED, BadInput
    from ..config import load_config
    from ..output import write_json
    from . import solve_gathered
    from ..training import comparison_table, evaluate_training

    if args.gd_steps < 0 or args.ks_samples < 2:
        raise BadInput("train: --gd-steps must be >= 0 and --ks-samples >= 2")
    cfg = load_config(args.config)
    if "data" not in cfg.extra:
        raise BadInput(f"train: {args.config} has no [data] section (use 'mfc-hpc solve' for given densities)")
    Z, summary, rank = solve_gathered(cfg, args.out)
    if not summary["converged"]:
        log.error("did not converge: %s", summary["failure"])
        return EXIT_NOT_CONVERGED
    if rank != 0:
        return 0
    net, rep = evaluate_training(cfg, Z, summary, args.out, gd_steps=args.gd_steps,
                                 ks_samples=args.ks_samples, seed=args.seed, plots=not args.no_plots)
    out = Path(args.out)
    write_json(out / "evaluation.json", rep)
    summary["network"] = rep
    write_json(out / "summary.json", summary)
    mf = rep["mean_field"]
    log.info("J_h = %.6g (zero network %.6g); network: %d blocks x %d ReLU units, dt*max compression %.3f",
             mf["J_h"], mf["zero_network_J_h"], net.N, net.M, mf["compression"])
    print(comparison_table(rep), flush=True)
    for r in rep["pushforward"]["noisy_samples_vs_rhoN"]:
        log.info("push-forward with noise, class %s: KS D = %.4f (5%% critical %.4f, %d samples)",
                 r["class"], r["ks_D"], r["critical_D_5pct"], r["samples"])
    log.info("wrote %s/model.npz, evaluation.json, summary.json%s", args.out,
             "" if args.no_plots else " and " + ", ".join(Path(p).name for p in rep.get("figures", [])))
    return 0
