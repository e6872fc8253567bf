"""``mfc-hpc train CONFIG --out DIR``: solve a classification, export and evaluate the network.

The solve is the one of ``mfc-hpc solve`` (collective, writes ``OUT/solution.h5`` and
``OUT/summary.json``; checkpoints as there); rank 0 then reads the solution file back
(the state is never gathered in memory), exports the network (``OUT/model.npz``,
``OUT/model.onnx``), evaluates it on the split against the baselines and writes
``OUT/evaluation.json`` (also under the key ``network`` of ``OUT/summary.json``) and the PNGs.
"""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("train")

#: the 2-D push-forward test keeps a (2n x 2n) distance matrix: 8000^2 doubles = 0.5 GB
MAX_ENERGY_SAMPLES = 4000


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .solve import add_checkpoint_options

    p = sub.add_parser("train", help="train a residual network on labelled data (a config with [data])",
                       description="Solve the optimality system of a configuration with a [data] section, "
                                   "export the residual network (OUT/model.npz and OUT/model.onnx), evaluate "
                                   "it on the test split against the head alone, logistic regression, (1-D) "
                                   "the best ordered thresholds and gradient descent on the same architecture, "
                                   "and write OUT/evaluation.json, OUT/summary.json (key 'network') and PNGs.")
    p.add_argument("config", help="TOML configuration file with a [data] section")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--gd-steps", type=int, default=2000,
                   help="Adam steps of each gradient-descent baseline (0: skip them; default 2000)")
    p.add_argument("--no-gd-noise-free", action="store_true",
                   help="train only the baseline with noise injection (not also the one without noise)")
    p.add_argument("--samples", "--ks-samples", dest="samples", type=int, default=1000,
                   help="samples per class of the push-forward test (KS in 1-D, energy test in 2-D; default 1000)")
    p.add_argument("--permutations", type=int, default=200,
                   help="permutations of the 2-D energy test's threshold (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the baselines")
    p.add_argument("--no-plots", action="store_true", help="do not write PNGs")
    p.add_argument("--no-onnx", action="store_true", help="do not write OUT/model.onnx")
    add_checkpoint_options(p)
    p.set_defaults(func=run)


def check_energy_samples(command: str, cfg, samples: int) -> None:
    """Refuse more push-forward samples than the 2-D energy test holds (:data:`MAX_ENERGY_SAMPLES`)."""
    from ...errors import BadInput

    if cfg.ndim == 2 and samples > MAX_ENERGY_SAMPLES:
        raise BadInput(f"{command}: --samples {samples}: the 2-D energy test holds the (2n)^2 distances of the "
                       f"pooled samples; at most {MAX_ENERGY_SAMPLES} per class")


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ...errors import BadInput
    from .solve import run_checked

    if args.gd_steps < 0 or args.samples < 2 or args.permutations < 19:
        raise BadInput("train: --gd-steps must be >= 0, --samples >= 2 and --permutations >= 19")

    def check(inputs) -> None:
        cfg = inputs.cfg
        if cfg.data is None:
            raise BadInput(f"train: {args.config} has no [data] section (use 'mfc-hpc solve' for given densities)")
        if inputs.problem.data.y_test.size == 0:
            raise BadInput(f"train: {args.config}: data.test_fraction = {cfg.data.test_fraction:g} leaves no "
                           "held-out samples to evaluate the network on (use 'mfc-hpc solve' to solve without "
                           "evaluating)")
        check_energy_samples("train", cfg, args.samples)

    return run_checked(args, PETSc.COMM_WORLD, check,
                       lambda inputs, summary: _evaluate(args, inputs.problem, summary, inputs.out))


def _evaluate(args: argparse.Namespace, problem, summary: dict, out) -> int:
    """Rank 0: read the solution back, build and test the network, write the reports."""
    from pathlib import Path

    from ...fileio.solution import read_solution
    from ...fileio.summary import write_json
    from ...learning.evaluate import comparison_table, evaluate_training
    from ...learning.network import state_from_solution

    out = Path(out)
    Z = state_from_solution(read_solution(out / "solution.h5"))
    net, rep = evaluate_training(problem, Z, summary, out, gd_steps=args.gd_steps, samples=args.samples,
                                 seed=args.seed, plots=not args.no_plots, onnx=not args.no_onnx,
                                 gd_noise_free=not args.no_gd_noise_free, permutations=args.permutations)
    write_json(out / "evaluation.json", rep)
    summary["network"] = rep
    write_json(out / "summary.json", summary)
    mf = rep["mean_field"]
    log.info("J_h = %.6g (zero network %.6g); network: %d blocks x %d ReLU units on %s, max(1 - det) %.3f",
             mf["J_h"], mf["zero_network_J_h"], net.N, net.M, net.grid.describe(), mf["compression"])
    print(comparison_table(rep), flush=True)
    for r in rep["pushforward"]["noisy_samples_vs_rhoN"]:
        if "ks_D" in r:
            log.info("push-forward with noise, class %s: KS D = %.4f (5%% critical %.4f, %d samples)",
                     r["class"], r["ks_D"], r["critical_D_5pct"], r["samples"])
        else:
            log.info("push-forward with noise, class %s: energy %.4g (5%% permutation threshold %.4g, p = %.3f; "
                     "without noise %.4g), %d samples each side, %d permutations", r["class"], r["energy"],
                     r["threshold_5pct"], r["p_value"], r["energy_without_noise"], r["samples"], r["permutations"])
    files = ["model.npz"] + (["model.onnx"] if "model_onnx" in rep else []) + ["evaluation.json", "summary.json"]
    log.info("wrote %s/%s%s", out, ", ".join(files),
             "" if args.no_plots else " and " + ", ".join(Path(p).name for p in rep.get("figures", [])))
    return 0
