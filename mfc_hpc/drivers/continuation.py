"""Continuation for hard solves: in the loss weight ``s`` (``phi^N = -s G``) and in ``nu``.

Natural-parameter continuation with a tangent predictor ``dX/dp = -J^{-1} dF/dp``
(``dF/dp`` by a central difference of the residual, exact for the loss weight, which
enters linearly) and step control: a failed Newton solve halves the step and restarts
from the last converged state; a quick one doubles it. The branch it follows can end at a
fold (two overlapping classes at gamma 4.73, nu 0.02; iris at strong loss: README and
``mfc_hpc/docs/deep_learning.md``): the step then falls below ``min_step`` and the driver
turns to the optimisation route.

The driver passes ``events`` (:class:`mfc_hpc.drivers.run.RunEvents`): the continuation
reports its cursor before every Newton solve and at the end of every stage, and the
driver's observers (checkpoints) act on those reports; the continuation knows nothing of
them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from petsc4py import PETSc

from ..parallel.snes import MeshSolver
from .state import ContinuationCursor

__all__ = ["ContinuationResult", "continue_parameter", "apply_parameter"]

log = logging.getLogger(__name__.split(".")[-1])


@dataclass
class ContinuationResult:
    """Stages of one continuation: every attempted value, accepted or not."""

    converged: bool
    value: float
    stages: list[dict] = field(default_factory=list)
    newton_iterations: int = 0


def apply_parameter(ms: MeshSolver, param: str, value: float) -> None:
    """Set ``param`` (``loss``: the loss weight, ``nu``) of the solver's problem."""
    if param == "loss":
        ms.bd.scale = value
    elif param == "nu":
        ms.set_problem(d=dataclasses.replace(ms.d, nu=value))
    else:
        raise ValueError(f"unknown continuation parameter {param!r}")


def _tangent(ms: MeshSolver, param: str, value: float, out: PETSc.Vec) -> None:
    """``out <- dX/dp = -J^{-1} dF/dp`` at the current (converged) state."""
    delta = 1e-6 * max(abs(value), 1e-3)
    F1 = ms.F.duplicate()
    apply_parameter(ms, param, value + delta)
    ms._residual(None, ms.X, F1)
    apply_parameter(ms, param, value - delta)
    ms._residual(None, ms.X, ms.F)
    apply_parameter(ms, param, value)
    F1.axpy(-1.0, ms.F)
    F1.scale(-1.0 / (2.0 * delta))
    ms.jacobian_solve(F1, out)
    F1.destroy()


def continue_parameter(ms: MeshSolver, param: str, start: float, stop: float, *,
                       first_step: float, min_step: float, max_stages: int,
                       geometric: bool = False, predictor: bool = True,
                       progress: Callable[[str], None] | None = None,
                       resume: ContinuationCursor | None = None, good: PETSc.Vec | None = None,
                       events=None, newton: Callable[[MeshSolver], object] | None = None) -> ContinuationResult:
    """Continue the converged state of ``ms`` at ``param = start`` to ``param = stop``.

    ``first_step`` is an increment of the parameter (or, with ``geometric``, of its
    logarithm, for ``nu``). Returns with ``ms.X`` at the last converged state.

    ``resume`` (restart from a checkpoint) continues an interrupted continuation; when it
    stopped inside a Newton solve (``resume.target_u`` set) ``good`` is the last accepted
    state and ``ms.X`` the state to go on from. ``newton(ms)`` runs each Newton solve
    (default ``ms.solve()``; the driver passes its own, which its observers see).
    """
    res = ContinuationResult(False, start)
    if start == stop:
        res.converged = True
        return res
    to = (lambda v: math.log(v)) if geometric else (lambda v: v)
    fro = (lambda u: math.exp(u)) if geometric else (lambda u: u)
    u, u_stop = to(start), to(stop)
    sign = 1.0 if u_stop > u else -1.0
    step = abs(first_step)
    Xgood = ms.X.copy()
    dX = ms.X.duplicate()
    stages = 0
    target = None  # a Newton solve interrupted by a checkpoint: finish it first
    if resume is not None:
        u, step, stages = resume.u, resume.step, resume.stages
        res.value, res.stages = resume.value, list(resume.records)
        res.newton_iterations = resume.newton_iterations
        target = resume.target_u
        if target is not None and good is not None:
            good.copy(Xgood)

    def cursor(target_u):
        return ContinuationCursor(param=param, u=u, step=step, stages=stages, value=res.value,
                                  records=res.stages, newton_iterations=res.newton_iterations, target_u=target_u)

    while stages < max_stages:
        if target is None:
            du = sign * min(step, abs(u_stop - u))
            u_new = u_stop if abs(u_stop - (u + du)) < 1e-12 * max(1.0, abs(u_stop)) else u + du
        else:
            u_new = target
        v_old, v_new = fro(u), fro(u_new)
        t0 = time.perf_counter()
        if predictor and target is None:
            apply_parameter(ms, param, v_old)
            _tangent(ms, param, v_old, dX)
            ms.X.axpy(v_new - v_old, dX)
            # keep R > 0 along the predictor (the same cap as a Newton step)
            neg = ms.X.duplicate()
            Xgood.copy(neg)
            neg.axpy(-1.0, ms.X)  # X_pred = Xgood - neg
            ms._precheck(Xgood, neg)
            Xgood.copy(ms.X)
            ms.X.axpy(-1.0, neg)
            neg.destroy()
        target = None
        apply_parameter(ms, param, v_new)
        if events is not None:
            events.continuation_step(cursor(u_new), Xgood)
        r = newton(ms) if newton is not None else ms.solve()
        stages += 1
        res.newton_iterations += r.iterations
        res.stages.append({"param": param, "value": v_new, "converged": r.converged,
                           "iterations": r.iterations, "reason": r.reason,
                           "residual": r.residuals[-1] if r.residuals else None,
                           "wall": time.perf_counter() - t0})
        if progress:
            progress(f"{param} -> {v_new:.6g}: {'ok' if r.converged else 'FAILED'} "
                     f"({r.iterations} Newton, {r.reason})")
        if r.converged:
            u = u_new
            ms.X.copy(Xgood)
            res.value = v_new
            if u == u_stop:
                res.converged = True
                break
            step *= 2.0 if r.iterations <= 3 else (1.25 if r.iterations <= 6 else 1.0)
        else:
            Xgood.copy(ms.X)
            apply_parameter(ms, param, v_old)
            step *= 0.5
            if step < min_step:
                log.warning("continuation in %s stalled at %.6g (step %.2e < %.2e)", param, v_old, step, min_step)
                break
        if events is not None:  # end of a stage: a safe point (checkpoint, signal)
            events.continuation_step(cursor(None), None)
            events.safe_point(ms, "stage")
    apply_parameter(ms, param, res.value)
    Xgood.copy(ms.X)
    Xgood.destroy()
    dX.destroy()
    return res
