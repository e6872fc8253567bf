"""``mfc-hpc solve CONFIG --out DIR``: solve the optimality system of one configuration.

Checkpoints go to ``DIR/checkpoints`` (``[checkpoint]`` section or the ``--checkpoint-*``
options); ``--restart auto`` resumes from the newest good one. On SIGTERM/SIGUSR1 the run
writes a checkpoint at the next safe point and exits 75.
"""
from __future__ import annotations

import argparse
import logging

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


def overrides(args: argparse.Namespace):
    """The ``--checkpoint-*`` options as :class:`~mfc_hpc.jobs.inputs.CheckpointOverrides`."""
    from ...jobs.inputs import CheckpointOverrides

    return CheckpointOverrides(directory=getattr(args, "checkpoint_dir", None),
                               every_newton=getattr(args, "checkpoint_every_newton", None),
                               every_minutes=getattr(args, "checkpoint_every_minutes", None),
                               keep=getattr(args, "checkpoint_keep", None),
                               disabled=bool(getattr(args, "no_checkpoint", False)))


def checkpoint_settings(cfg, args: argparse.Namespace):
    """The ``[checkpoint]`` section with the command-line overrides."""
    return overrides(args).apply(cfg.checkpoint)


def check_inputs(args: argparse.Namespace, comm):
    """The input boundary of this command (:func:`mfc_hpc.jobs.inputs.check_solve_inputs`):
    configuration, PETSc options, data, output and checkpoint directories, locks."""
    from ...jobs.inputs import check_solve_inputs

    return check_solve_inputs(args.config, args.out, comm, overrides(args), restart=getattr(args, "restart", None),
                              interpolate=bool(getattr(args, "restart_interpolate", False)))


def make_checkpointer(inputs, comm):
    """The :class:`~mfc_hpc.fileio.restart.Checkpointer` of a checked run, or ``None``."""
    from ...fileio.restart import Checkpointer

    if not (inputs.checkpoint.enabled or inputs.restart):
        return None
    return Checkpointer(comm, inputs.checkpoint_dir, inputs.checkpoint, restart=inputs.restart,
                        interpolate=inputs.interpolate)


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


def run_checked(args: argparse.Namespace, comm, check=None, after=None, summarise=None) -> int:
    """The run of a command that solves one configuration (``solve``, ``train``,
    ``transport``): the input boundary (the output directories stay locked until the
    end), ``check(inputs)`` for what only the command needs, the solve with its
    checkpointer, ``summarise(summary, out)`` (default :func:`log_result`), and on rank 0 of
    a converged run ``after(inputs, summary)``, whose value is the exit status."""
    from ...errors import EXIT_NOT_CONVERGED, EXIT_REQUEUE
    from ...fileio.restart import CheckpointAndExit
    from ...jobs.solve import solve

    inputs = check_inputs(args, comm)  # every input checked, the output directories locked
    ck = None
    try:
        if check is not None:
            check(inputs)
        ck = make_checkpointer(inputs, comm)
        try:
            res = solve(inputs.problem, comm, out_dir=inputs.out, observers=[ck] if ck else [])
        except CheckpointAndExit as e:
            log.warning("%s: exit %d, resubmit with --restart auto", e, EXIT_REQUEUE)
            return EXIT_REQUEUE
        (summarise or log_result)(res.summary, inputs.out)
        res.ms.destroy()
        if not res.converged:
            return EXIT_NOT_CONVERGED
        if after is None or comm.getRank() != 0:
            return 0
        return after(inputs, res.summary)
    finally:  # every exit path (0, 2, 3, 74, 75, an exception) releases the locks
        if ck is not None:
            ck.restore_signals()
        inputs.release()


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    return run_checked(args, PETSc.COMM_WORLD)
