"""``mfc-hpc``: the command line.

``mfc-hpc COMMAND [args] [PETSc options]``: arguments the command does not know and that
start with one dash go to PETSc (``-mfc_snes_monitor``, ``-mfc_ksp_type gmres``,
``-options_file opts.txt``, ``-log_view``). Exit status (:data:`mfc_hpc.errors.EXIT_CODES`):
0 success, 2 bad input (configuration, files, arguments, PETSc options, output location),
3 a solve that did not converge (its diagnostics are still written), 74 an I/O error
while writing results, 75 checkpointed on a signal: requeue me.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

from ..errors import (EXIT_BAD_INPUT, EXIT_CODES, EXIT_IO, EXIT_NOT_CONVERGED, EXIT_OK, EXIT_REQUEUE, BadInput,
                      OutputError)

__all__ = ["main", "COMMANDS", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED", "EXIT_IO", "EXIT_REQUEUE"]

#: sub-command -> module of :mod:`mfc_hpc.cli.commands`; each has ``add_parser(subparsers)``
#: registering the command with ``func`` (args -> exit code)
COMMANDS: dict[str, str] = {
    "solve": "solve",
    "inspect": "inspect",
    "train": "train",
    "predict": "predict",
    "transport": "transport",
    "data": "data",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, on rank 0 only
        _error(message if self.prog == "mfc-hpc" else f"{self.prog[len('mfc-hpc '):]}: {message}")
        sys.exit(EXIT_BAD_INPUT)


def _rank() -> int:
    for k in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if k in os.environ:
            try:
                return int(os.environ[k])
            except ValueError:
                pass
    return 0


def _error(msg: str) -> None:
    if _rank() == 0:
        line = " ".join(str(msg).split())
        print(f"mfc-hpc: error: {line}", file=sys.stderr, flush=True)


def _init_petsc(petsc_args: list[str]) -> None:
    import petsc4py

    argv = [sys.argv[0]] + petsc_args
    if petsc_args and "-options_left" not in petsc_args:
        argv.append("-options_left")  # report options nobody used (a typo is not silent)
    i = 0
    while i < len(petsc_args):  # an options file PETSc would fail on: refuse it first, cleanly
        if petsc_args[i] == "-options_file":
            if i + 1 >= len(petsc_args):
                raise BadInput("-options_file: needs a file name")
            f = petsc_args[i + 1]
            if not os.path.isfile(f):
                raise BadInput(f"-options_file: no such file: {f}")
            try:
                with open(f, "rb") as fh:
                    raw = fh.read(1 << 20)
                raw.decode("ascii")
                if b"\0" in raw:
                    raise UnicodeDecodeError("ascii", raw, 0, 1, "NUL byte")
            except (OSError, UnicodeDecodeError):
                raise BadInput(f"-options_file: {f} is not a text file of PETSc options") from None
        i += 1
    petsc4py.init(argv)
    from petsc4py import PETSc

    PETSc.Log.begin()  # phase timings for summary.json (cheap)


def build_parser() -> argparse.ArgumentParser:
    codes = "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())
    p = _Parser(
        prog="mfc-hpc",
        description="Deep residual networks as mean-field control: a parallel multisymplectic solver.",
        epilog="Options not listed here that start with one '-' are passed to PETSc "
               f"(e.g. -mfc_snes_monitor -mfc_ksp_type gmres -options_file FILE -log_view). Exit status: {codes}.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, mod in COMMANDS.items():
        importlib.import_module(f"mfc_hpc.cli.commands.{mod}").add_parser(sub)
    return p


def split_args(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and the PETSc options. A stray word not following a PETSc
    option (an extra file name) and an unknown ``--option`` are refused."""
    args, rest = parser.parse_known_args(argv)
    after_option = False
    for a in rest:
        if a.startswith("--"):
            parser.error(f"unrecognized option {a} for 'mfc-hpc {args.command}' "
                         f"(PETSc options take one dash, e.g. -mfc_ksp_type)")
        if a.startswith("-"):
            after_option = True
            continue
        if not after_option:
            parser.error(f"unrecognized argument {a!r} (one configuration per run; PETSc options start with '-')")
        after_option = False  # the value of the option before it
    return args, rest


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mfc-hpc``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, petsc_args = split_args(parser, argv)
    try:
        _init_petsc(petsc_args)
    except BadInput as e:
        _error(str(e))
        return EXIT_BAD_INPUT
    from ..logs import setup_logging

    setup_logging(args.log_level)
    func: Callable = args.func
    try:
        return int(func(args) or 0)
    except BadInput as e:
        _error(str(e))
        return EXIT_BAD_INPUT
    except OutputError as e:
        _error(str(e))
        return EXIT_IO
    except FileNotFoundError as e:
        _error(f"{e.filename}: no such file" if e.filename else str(e))
        return EXIT_BAD_INPUT
    except MemoryError:
        _error("out of memory: the mesh is too large for this machine (see mfc-hpc plan)")
        return EXIT_IO
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
