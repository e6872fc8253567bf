"""Agreement on errors between ranks, so that no rank waits forever for one that failed.

Every check that can fail on one rank and not on another (a file that one node cannot
see, a directory read-only on one node, a disk full under one writer) ends in
:func:`agree`: each rank contributes its error message or ``None`` and every rank gets
the first message of any rank, after which all of them raise the same error together.

A rank that *has* an error does not wait forever for the others: if they have not all
reached the agreement within :data:`AGREE_TIMEOUT` seconds (they are stuck, e.g. inside a
collective HDF5 call that the failing rank left), it prints its message and calls
``MPI_Abort`` with the error's exit status, which ends every rank of the job. A rank
without an error waits as long as it takes (the others may be slow, not stuck).
"""
from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any, Callable

import numpy as np

from ..errors import EXIT_BAD_INPUT, EXIT_IO, BadInput, OutputError

__all__ = ["agree", "agree_error", "collective", "on_every_rank", "abort_with", "agree_timeout"]


def agree_timeout() -> float:
    """Seconds a rank with an error waits for the others before it aborts the job
    (``MFC_AGREE_TIMEOUT``, default 300)."""
    try:
        return float(os.environ.get("MFC_AGREE_TIMEOUT", "300"))
    except ValueError:
        return 300.0


def abort_with(comm, message: str, code: int) -> None:
    """Print ``mfc-hpc: error: message`` and end every rank of the job (``MPI_Abort``)."""
    line = " ".join(str(message).split())
    print(f"mfc-hpc: error: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    comm.Abort(code)


def _agree_obj(comm, obj: Any, what: str, code: int, timeout: float | None) -> Any:
    """The ``obj`` of the lowest rank whose ``obj`` is not ``None``, on every rank."""
    if comm.size == 1:
        return obj
    flags = np.zeros(comm.size, dtype=np.int32)
    mine = np.array([0 if obj is None else 1], dtype=np.int32)
    req = comm.Iallgather(mine, flags)
    if obj is None:
        req.Wait()
    else:
        limit = agree_timeout() if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not req.Test():
            if time.monotonic() > deadline:
                abort_with(comm, f"{what} (rank {comm.rank}; the other ranks did not reach the error agreement "
                                 f"within {limit:g} s: aborting the job)", code)
            time.sleep(0.002)
    bad = np.flatnonzero(flags)
    if not bad.size:
        return None
    return comm.bcast(obj, root=int(bad[0]))


def agree(comm, err: str | None, code: int = EXIT_IO, timeout: float | None = None) -> str | None:
    """The first error message of any rank (lowest rank first), on every rank; ``None``
    if no rank failed (collective). ``code``: the exit status with which a failing rank
    aborts the job if the others never arrive (module docstring)."""
    return _agree_obj(comm, err, err or "", code, timeout)


def agree_error(comm, exc: BaseException | None, code: int = EXIT_BAD_INPUT) -> None:
    """Raise on every rank the error of the lowest rank that has one (collective): an
    :class:`OutputError` stays one, anything else becomes a :class:`BadInput` (a
    :class:`BadInput` keeps its message)."""
    obj = None
    if exc is not None:
        kind = "output" if isinstance(exc, OutputError) else "input"
        msg = str(exc) if isinstance(exc, (BadInput, OutputError)) else f"{type(exc).__name__}: {exc}"
        obj = (kind, msg)
    got = _agree_obj(comm, obj, obj[1] if obj else "", EXIT_IO if obj and obj[0] == "output" else code, None)
    if got is None:
        return
    if exc is not None and isinstance(exc, (BadInput, OutputError)) and got == obj:
        raise exc
    raise (OutputError if got[0] == "output" else BadInput)(got[1])


def on_every_rank(comm, fn: Callable, *args):
    """Run ``fn(*args)`` on every rank; if it raises on any rank, the lowest such rank's
    error is raised on every rank (:func:`agree_error`). Returns this rank's result."""
    res, exc = None, None
    try:
        res = fn(*args)
    except Exception as e:  # noqa: BLE001 - never leave the other ranks waiting
        exc = e
    agree_error(comm, exc)
    return res


def collective(comm, fn: Callable, *args):
    """Run ``fn`` on rank 0 and broadcast its result; its exception is raised on every
    rank (BadInput and OutputError as themselves)."""
    if comm.size == 1:
        return fn(*args)
    payload = None
    if comm.rank == 0:
        try:
            res: Any = fn(*args)
            err: BaseException | None = None
        except Exception as e:  # noqa: BLE001 - never leave the other ranks waiting
            res, err = None, e
        try:
            payload = pickle.dumps((res, err), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - an unpicklable result or exception
            payload = pickle.dumps((None, BadInput(f"internal: cannot share a result between ranks "
                                                   f"({type(e).__name__}: {e})")))
    res, err = pickle.loads(comm.bcast(payload, root=0))
    if err is not None:
        raise err
    return res
