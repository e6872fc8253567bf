"""``mfc-hpc solve CONFIG --out DIR``: solve the optimality system of one configuration.

Checkpoints go to ``DIR/checkpoints`` (``[checkpoint]`` section or the ``--checkpoint-*``
options); ``--restart auto`` resumes from the newest good one. On SIGTERM/SIGUSR1 the run
writes a checkpoint at the next safe point and exits 75.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

log = logging.getLogger("solve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solve", help="solve the discrete optimality system of a TOML configuration",
                       description="Solve the discrete optimality system (METHOD.md sections 4, 8) on the "
                                   "whole depth-time mesh; writes OUT/summary.json and OUT/solution.h5. "
                                   "Exit status: 0 converged, 2 bad input, 3 not converged, 74 I/O error, "
                                   "75 checkpointed on SIGTERM/SIGUSR1 (requeue with --restart auto).")
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    add_checkpoint_options(p)
    p.set_defaults(func=run)


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
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


def checkpoint_settings(cfg, args: argparse.Namespace):
    """The ``[checkpoint]`` section with the command-line overrides."""
    import math

    from ...errors import BadInput

    st = cfg.checkpoint
    ch = {}
    if getattr(args, "checkpoint_every_newton", None) is not None:
        if args.checkpoint_every_newton < 0:
            raise BadInput(f"--checkpoint-every-newton: must be >= 0, got {args.checkpoint_every_newton}")
        ch["every_newton"] = args.checkpoint_every_newton
    if getattr(args, "checkpoint_every_minutes", None) is not None:
        v = args.checkpoint_every_minutes
        if not (v >= 0 and math.isfinite(v)):
            raise BadInput(f"--checkpoint-every-minutes: must be a number >= 0, got {v}")
        ch["every_minutes"] = v
    if getattr(args, "checkpoint_keep", None) is not None:
        if args.checkpoint_keep < 1:
            raise BadInput(f"--checkpoint-keep: must be >= 1, got {args.checkpoint_keep}")
        ch["keep"] = args.checkpoint_keep
    if getattr(args, "no_checkpoint", False):
        ch["enabled"] = False
    return dataclasses.replace(st, **ch)


def make_checkpointer(cfg, args: argparse.Namespace, comm):
    """The :class:`~mfc_hpc.fileio.restart.Checkpointer` of a run, or ``None``."""
    from ...errors import BadInput
    from ...fileio.restart import Checkpointer

    st = checkpoint_settings(cfg, args)
    restart = getattr(args, "restart", None)
    if getattr(args, "restart_interpolate", False) and not restart:
        raise BadInput("--restart-interpolate: needs --restart FILE|auto")
    if restart is not None and not str(restart).strip():
        raise BadInput("--restart: needs a checkpoint file or 'auto'")
    if not (st.enabled or restart):
        return None
    ckdir = Path(args.checkpoint_dir) if getattr(args, "checkpoint_dir", None) else Path(args.out) / st.directory
    if getattr(args, "checkpoint_dir", None) is not None and not str(args.checkpoint_dir).strip():
        raise BadInput("--checkpoint-dir: the directory name is empty")
    if ckdir.exists() and not ckdir.is_dir():
        raise BadInput(f"checkpoint directory {ckdir} exists and is not a directory")
    return Checkpointer(comm, ckdir, st, restart=restart, interpolate=getattr(args, "restart_interpolate", False))


def log_result(summary: dict, out) -> None:
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
    if out is not None:
        log.info("wrote %s/summary.json and %s/solution.h5", out, out)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ...config import load_config
    from ...errors import EXIT_NOT_CONVERGED, EXIT_REQUEUE
    from ...fileio.restart import CheckpointAndExit
    from ...jobs.solve import prepare_out_dir, shared_problem, solve

    comm = PETSc.COMM_WORLD
    cfg = load_config(args.config)
    problem = shared_problem(cfg, comm)
    prepare_out_dir(args.out, comm)
    ck = make_checkpointer(cfg, args, comm)
    try:
        res = solve(problem, comm, out_dir=args.out, observers=[ck] if ck else [])
    except CheckpointAndExit as e:
        log.warning("%s: exit %d, resubmit with --restart auto", e, EXIT_REQUEUE)
        return EXIT_REQUEUE
    finally:
        if ck is not None:
            ck.restore_signals()
    log_result(res.summary, args.out)
    res.ms.destroy()
    return 0 if res.converged else EXIT_NOT_CONVERGED
