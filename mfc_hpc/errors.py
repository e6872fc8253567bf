"""The package's errors and exit codes: one place, imported by every layer, importing nothing.

Exit status of ``mfc-hpc``: :data:`EXIT_OK` success; :data:`EXIT_BAD_INPUT` bad input
(configuration, files, arguments, PETSc options, output locations: one line
``mfc-hpc: error: ...`` naming the problem); :data:`EXIT_NOT_CONVERGED` a solve that did
not converge (its summary and last iterate are still written); :data:`EXIT_IO` an I/O
failure while writing results (disk full, permissions: the previous files are intact);
:data:`EXIT_REQUEUE` checkpointed on SIGTERM/SIGUSR1 (resubmit with ``--restart auto``).
"""
from __future__ import annotations

__all__ = ["BadInput", "ConfigError", "OutputError", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_NOT_CONVERGED",
           "EXIT_IO", "EXIT_REQUEUE", "EXIT_CODES"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 3
EXIT_IO = 74  # EX_IOERR
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpoint written on SIGTERM/SIGUSR1

#: every documented exit status and its meaning
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_BAD_INPUT: "bad input (configuration, data, model or checkpoint file, arguments, PETSc options, "
                    "output location)",
    EXIT_NOT_CONVERGED: "the solve did not converge (summary and last iterate written)",
    EXIT_IO: "an I/O error while writing results (previous files intact)",
    EXIT_REQUEUE: "checkpointed on SIGTERM/SIGUSR1: resubmit with --restart auto",
}


class BadInput(Exception):
    """Bad input: the message is one line naming the problem; exit status 2."""


class ConfigError(BadInput, ValueError):
    """A configuration that cannot be run; the message names the offending key."""


class OutputError(Exception):
    """Writing a result failed (disk full, I/O error): the message names the file; the
    previous file of that name is intact and no temporary is left; exit status 74."""
