"""``mfc-hpc solve CONFIG --out DIR``: solve the optimality system of one configuration.

Checkpoints (:mod:`mfc_hpc.checkpoint`) go to ``DIR/checkpoints`` (``[checkpoint]`` section
or the ``--checkpoint-*`` options); ``--restart auto`` resumes from the newest good one.
On SIGTERM/SIGUSR1 the run writes a checkpoint at the next safe point and exits 75.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

log = logging.getLogger("solve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solve", help="solve the discrete optimality system of a TOML configuration",
                       description="Solve the discrete optimality system (METHOD.md section 4) on the "
                                   "whole depth-time mesh; writes OUT/summary.json and OUT/solution.h5. "
                                   "Exit status: 0 converged, 2 bad input, 3 not converged, 75 checkpointed "
                                   "on SIGTERM/SIGUSR1 (requeue with --restart auto).")
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--restart", metavar="FILE|auto",
                   help="resume from a checkpoint file, or 'auto': the newest good checkpoint in the "
                        "checkpoint directory (fresh start if there is none)")
    p.add_argument("--restart-interpolate", action="store_true",
                   help="accept a checkpoint of another mesh: interpolate it onto this mesh as the "
                        "starting guess (a coarse run seeds a fine one)")
    g = p.add_argument_group("checkpoints (override the [checkpoint] section)")
    g.add_argument("--checkpoint-dir", help="checkpoint directory (default OUT/checkpoints)")
    g.add_argument("--checkpoint-every-newton", type=int, metavar="K", help="every K Newton iterations (0 off)")
    g.add_argument("--checkpoint-every-minutes", type=float, metavar="X", help="every X minutes (0 off)")
    g.add_argument("--checkpoint-keep", type=int, metavar="K", help="keep the newest K checkpoints")
    g.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints, ignore signals")
    p.set_defaults(func=run)


def _settings(cfg, args: argparse.Namespace):
    from ..cli import BadInput
    from ..config import CheckpointConfig

    st = cfg.extra.get("checkpoint") or CheckpointConfig()
    ch = {}
    if args.checkpoint_every_newton is not None:
        if args.checkpoint_every_newton < 0:
            raise BadInput(f"--checkpoint-every-newton: must be >= 0, got {args.checkpoint_every_newton}")
        ch["every_newton"] = args.checkpoint_every_newton
    if args.checkpoint_every_minutes is not None:
        if not args.checkpoint_every_minutes >= 0:
            raise BadInput(f"--checkpoint-every-minutes: must be >= 0, got {args.checkpoint_every_minutes}")
        ch["every_minutes"] = args.checkpoint_every_minutes
    if args.checkpoint_keep is not None:
        if args.checkpoint_keep < 1:
            raise BadInput(f"--checkpoint-keep: must be >= 1, got {args.checkpoint_keep}")
        ch["keep"] = args.checkpoint_keep
    if args.no_checkpoint:
        ch["enabled"] = False
    return dataclasses.replace(st, **ch)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ..checkpoint import CheckpointAndExit, Checkpointer, write_xdmf
    from ..cli import EXIT_NOT_CONVERGED, EXIT_REQUEUE, BadInput
    from ..config import load_config
    from ..run import solve_config

    cfg = load_config(args.config)
    st = _settings(cfg, args)
    if args.restart_interpolate and not args.restart:
        raise BadInput("--restart-interpolate: needs --restart FILE|auto")
    ck = None
    if st.enabled or args.restart:
        ckdir = Path(args.checkpoint_dir) if args.checkpoint_dir else Path(args.out) / st.directory
        ck = Checkpointer(cfg, PETSc.COMM_WORLD, ckdir, st, restart=args.restart,
                          interpolate=args.restart_interpolate)
    try:
        ms, summary = solve_config(cfg, out_dir=args.out, checkpoint=ck)
    except CheckpointAndExit as e:
        log.warning("%s: exit %d, resubmit with --restart auto", e, EXIT_REQUEUE)
        return EXIT_REQUEUE
    finally:
        if ck is not None:
            ck.restore_signals()
    if st.xdmf and PETSc.COMM_WORLD.getRank() == 0:
        write_xdmf(Path(args.out) / "solution.h5", ms.d.M, ms.d.N, ms.d.K)
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
