"""PETSc log events: one table of names; ``-log_view`` splits the time by phase, and
:func:`phase_times` reads them for ``summary.json``."""
from __future__ import annotations

import functools
import time

from petsc4py import PETSc

__all__ = ["EVENT_NAMES", "EVENTS", "timed", "phase_times"]

#: the package's events (``mfc_<name>``)
EVENT_NAMES = ("residual", "jacobian", "linear_solve", "io", "diagnostics", "optimisation",
               "optimisation_gradient")
EVENTS = {name: PETSc.Log.Event(f"mfc_{name}") for name in EVENT_NAMES}

#: summary.json phase -> PETSc event (the package's and PETSc's own)
_PHASES = {"residual": "mfc_residual", "jacobian": "mfc_jacobian", "snes_solve": "SNESSolve",
           "linear_solve": "KSPSolve", "factorisation": "MatLUFactorNum", "io": "mfc_io",
           "diagnostics": "mfc_diagnostics", "optimisation": "mfc_optimisation",
           "optimisation_gradient": "mfc_optimisation_gradient"}


def timed(name: str, counter: dict | None = None):
    """Decorator: run the function inside event ``mfc_<name>`` and add its wall time to
    ``counter[name]`` (a dict of seconds) when given."""
    ev = EVENTS[name]

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            t = time.perf_counter()
            ev.begin()
            try:
                return fn(*a, **k)
            finally:
                ev.end()
                if counter is not None:
                    counter[name] = counter.get(name, 0.0) + time.perf_counter() - t
        return inner
    return wrap


def phase_times() -> dict:
    """Seconds spent so far in each phase, from the PETSc log events (``None`` when
    logging is off)."""
    out = {}
    for k, v in _PHASES.items():
        try:
            out[k] = PETSc.Log.Event(v).getPerfInfo()["time"]
        except PETSc.Error:  # logging not started (PETSc.Log.begin())
            out[k] = None
    return out
