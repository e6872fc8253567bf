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
    "plan": "plan",
    "structure": "structure",
    "stability": "stability",
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


def options_file_error(petsc_args: list[str]) -> str | None:
    """Why an ``-options_file`` PETSc would fail on (missing, not a file, binary) cannot be
    used, or ``None``; checked before PETSc reads it."""
    i = 0
    while i < len(petsc_args):
        if petsc_args[i] == "-options_file":
            if i + 1 >= len(petsc_args) or petsc_args[i + 1].startswith("-"):
                return "-options_file: needs a file name"
            f = petsc_args[i + 1]
            if not os.path.exists(f):
                return f"-options_file: no such file: {f}"
            if not os.path.isfile(f):
                return f"-options_file: {f} is not a file"
            try:
                if os.path.getsize(f) > 1 << 20:
                    return f"-options_file: {f} is larger than 1 MiB: not a file of PETSc options"
                with open(f, "rb") as fh:
                    raw = fh.read()
                raw.decode("ascii")
                if b"\0" in raw:
                    raise UnicodeDecodeError("ascii", raw, 0, 1, "NUL byte")
            except OSError as e:
                return f"-options_file: cannot read {f}: {e.strerror or e}"
            except UnicodeDecodeError:
                return f"-options_file: {f} is not a text file of PETSc options"
        i += 1
    return None


def _init_petsc(petsc_args: list[str]) -> None:
    """Start PETSc with the user's options; an options file PETSc would fail on is
    refused first, on every rank together (PETSc is then started without the options so
    that the ranks can agree)."""
    import petsc4py

    err = options_file_error(petsc_args)
    argv = [sys.argv[0]] + ([] if err else petsc_args)
    if petsc_args and not err and "-options_left" not in petsc_args:
        argv.append("-options_left")  # report options nobody used (a typo is not silent)
    petsc4py.init(argv)
    from petsc4py import PETSc

    from ..parallel.agreement import agree

    err = agree(PETSc.COMM_WORLD.tompi4py(), err, code=EXIT_BAD_INPUT)
    if err:
        raise BadInput(err)
    PETSc.Log.begin()  # phase timings for summary.json (cheap)


def _exit_agreement(code: int, msg: str = "") -> int:
    """On an error exit: wait (at most ``MFC_AGREE_TIMEOUT`` s) until every rank reaches an
    error exit too; a rank that never does is stuck in a collective call the failing rank
    left (a rank-local error nobody agreed on), so the job is aborted instead of hanging."""
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover
        return code
    try:  # the options of a refused run were never used: no "unused option" report at exit
        from petsc4py import PETSc
        PETSc.Options().delValue("options_left")
    except Exception:  # noqa: BLE001
        pass
    if not MPI.Is_initialized() or MPI.Is_finalized() or _EXIT_COMM is None or _EXIT_COMM.size == 1:
        return code
    import time

    from ..parallel.agreement import agree_timeout

    req = _EXIT_COMM.Ibarrier()
    deadline = time.monotonic() + agree_timeout()
    while not req.Test():
        if time.monotonic() > deadline:
            if MPI.COMM_WORLD.rank != 0 and msg:
                print(f"mfc-hpc: error: {' '.join(msg.split())} (rank {MPI.COMM_WORLD.rank}; the other ranks did "
                      f"not stop: aborting the job)", file=sys.stderr, flush=True)
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(code)
        time.sleep(0.005)
    return code


_EXIT_COMM = None


def _user_petsc_options() -> list[str]:
    try:
        from petsc4py import PETSc
        return [f"-{k}" + ("" if v is None else f" {v}") for k, v in PETSc.Options().getAll().items()
                if k != "options_left"]
    except Exception:  # noqa: BLE001
        return []


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
    global _EXIT_COMM
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, petsc_args = split_args(parser, argv)
    try:
        _init_petsc(petsc_args)
    except BadInput as e:
        _error(str(e))
        return EXIT_BAD_INPUT
    from mpi4py import MPI

    if _EXIT_COMM is None:
        _EXIT_COMM = MPI.COMM_WORLD.Dup()  # the error-exit agreement never meets another collective
    from ..logs import setup_logging

    setup_logging(args.log_level)
    func: Callable = args.func
    try:
        return int(func(args) or 0)
    except BadInput as e:
        _error(str(e))
        return _exit_agreement(EXIT_BAD_INPUT, str(e))
    except OutputError as e:
        _error(str(e))
        return _exit_agreement(EXIT_IO, str(e))
    except FileNotFoundError as e:
        _error(f"{e.filename}: no such file" if e.filename else str(e))
        return _exit_agreement(EXIT_BAD_INPUT)
    except MemoryError:
        _error("out of memory: the mesh is too large for this machine (see mfc-hpc plan)")
        return _exit_agreement(EXIT_IO)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001
        from petsc4py import PETSc

        given = _user_petsc_options()
        if isinstance(e, PETSc.Error) and given:  # PETSc refused what the user's options asked for
            from ..parallel.options import petsc_error_message
            _error(f"{petsc_error_message(e)} with the PETSc options {' '.join(given)}: check them")
            return _exit_agreement(EXIT_BAD_INPUT)
        # a bug: its traceback, and no rank left waiting for this one
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        if MPI.COMM_WORLD.size > 1:
            MPI.COMM_WORLD.Abort(1)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
