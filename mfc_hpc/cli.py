"""``mfc-hpc``: the command line.

``mfc-hpc COMMAND [args] [PETSc options]``: arguments the command does not know and that
start with ``-`` go to PETSc (``-mfc_snes_monitor``, ``-mfc_ksp_type gmres``,
``-options_file opts.txt``, ``-log_view``). Exit status: 0 success, 2 bad input
(configuration, files, arguments), 3 a solve that did not converge (its diagnostics are
still written), 75 checkpointed on a signal: requeue me.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

__all__ = ["main", "COMMANDS", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED", "EXIT_REQUEUE"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpoint written on SIGTERM/SIGUSR1, resubmit with --restart auto

#: sub-command -> "module:function" building its parser; the function
#: ``add_parser(subparsers)`` registers the command and sets ``func`` (args -> exit code)
COMMANDS: dict[str, str] = {
    "solve": "mfc_hpc.commands.solve:add_parser",
    "train": "mfc_hpc.commands.train:add_parser",
    "predict": "mfc_hpc.commands.predict:add_parser",
    "plan": "mfc_hpc.commands.plan:add_parser",
    "structure": "mfc_hpc.commands.structure:add_parser",
    "stability": "mfc_hpc.commands.stability:add_parser",
    "inspect": "mfc_hpc.commands.inspect:add_parser",
    "transport": "mfc_hpc.commands.transport:add_parser",
}


class BadInput(Exception):
    """Bad input detected by a command: message shown as one line, exit status 2."""


def _init_petsc(petsc_args: list[str]) -> None:
    import petsc4py

    argv = [sys.argv[0]] + petsc_args
    if petsc_args and "-options_left" not in petsc_args:
        argv.append("-options_left")  # report options nobody used (a typo is not silent)
    petsc4py.init(argv)
    from petsc4py import PETSc

    PETSc.Log.begin()  # phase timings for summary.json (cheap)


def _rank() -> int:
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank()


def _error(msg: str) -> None:
    if _rank() == 0:
        print(f"mfc-hpc: error: {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfc-hpc",
        description="Deep residual networks as mean-field control: a parallel multisymplectic solver.",
        epilog="Options not listed here that start with '-' are passed to PETSc "
               "(e.g. -mfc_snes_monitor -mfc_ksp_type gmres -options_file FILE -log_view).")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, target in COMMANDS.items():
        mod, fn = target.split(":")
        getattr(importlib.import_module(mod), fn)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mfc-hpc``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [a for a in rest if not a.startswith("-")]
    petsc_args = rest
    if stray and not any(a.startswith("-") for a in rest):
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    # PETSc options have one dash (-mfc_ksp_type); an unknown --option is a typo or an
    # option of another command, not something to hand to PETSc silently
    unknown = [a for a in rest if a.startswith("--")]
    if unknown:
        parser.error(f"unrecognized option {unknown[0]} for 'mfc-hpc {args.command}' "
                     f"(PETSc options take one dash, e.g. -mfc_ksp_type)")
    _init_petsc(petsc_args)
    from .config import ConfigError
    from .logs import setup_logging

    setup_logging(args.log_level)
    func: Callable = args.func
    try:
        return int(func(args) or 0)
    except (ConfigError, BadInput, FileNotFoundError) as e:
        _error(str(e))
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
