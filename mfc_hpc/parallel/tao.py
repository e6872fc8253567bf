"""PETSc TAO minimiser of ``J_h`` over the distributed log-tilts (METHOD.md 4, 8).

The bound-constrained limited-memory quasi-Newton method ``blmvm`` (``lmvm``, ``bqnls``,
``bncg``, ... by ``-mfc_tao_tao_type``) with the exact adjoint gradient of
:class:`~mfc_hpc.parallel.training.TiltMesh`, every vector distributed: the iterate, the
gradient and the quasi-Newton pairs live on the ranks' chunks of layers and TAO's dot
products are the only other reductions. It mirrors the serial reference
:func:`mfc_hpc.numerics.training.minimise`: bounds ``|theta| <= bound``; the convergence
test is on the largest entry of the projected gradient divided by ``dt (nu/h_1) 2 nu``
(a log-tilt tolerance ``gtol``); a network whose walk gives a non-finite cost or a density
``rho_c <= -eta/K`` (``<= 0`` when ``eta = 0``) is infeasible and gets a large finite value
(``1e3 (1 + |J_0|)``, which fails the Armijo condition, so the line search backs off)
and the finite part of its gradient; after a failed line search the method restarts with
fresh memory while that still lowers ``J_h``.

Options prefix ``mfc_tao_`` (so ``-mfc_tao_tao_type lmvm``, ``-mfc_tao_tao_monitor``,
``-mfc_tao_tao_ls_type more-thuente``, ``-mfc_tao_tao_blmvm_mat_lmvm_hist_size 10``); the
package's defaults (:data:`DEFAULTS`) are inserted only while TAO reads its options.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from petsc4py import PETSc

from ..errors import BadInput
from .events import EVENTS
from .options import SolverOptions
from .training import TiltMesh

__all__ = ["TAO_PREFIX", "DEFAULTS", "TaoResult", "TiltMinimiser"]

log = logging.getLogger(__name__.split(".")[-1])

#: options prefix of the optimisation route's TAO
TAO_PREFIX = "mfc_tao_"

#: the package's TAO defaults (under the prefix): the bounded L-BFGS ``blmvm`` with the
#: backtracking Armijo line search. More-Thuente (TAO's default) interpolates with the
#: gradient, which says nothing at the large value an infeasible network gets: on the
#: symmetric two-class problem at gamma 5, nu 0.02 (129 x 32) it failed ten line searches
#: in a row at J_h 1.16071 (projected gradient 0.93) where Armijo reached the KKT point
#: 1.159856 in 500 iterations; on iris (65 x 128, gamma 10, nu 0.01) both converge.
DEFAULTS = {"tao_type": "blmvm", "tao_ls_type": "armijo"}

_REASONS = {v: k for k, v in vars(PETSc.TAO.Reason).items() if isinstance(v, int) and not k.startswith("_")}


@dataclass
class TaoResult:
    """Outcome of one :meth:`TiltMinimiser.minimise` call (the same on every rank)."""

    iterations: int
    evaluations: int
    infeasible_evaluations: int
    restarts: int
    success: bool
    message: str
    gradient_max: float
    cost: dict
    time: float
    decrease: float
    history: list[float] = field(default_factory=list)

    def info(self) -> dict:
        """The scalar fields (for the stage records of the driver)."""
        out = {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool))}
        out["cost_total"] = float(self.cost.get("total", float("nan")))
        return out


class TiltMinimiser:
    """TAO over a :class:`TiltMesh` (collective over all the mesh's ranks; with more ranks
    than depth levels the ranks that hold no tilts wait and receive the result).

    Parameters
    ----------
    tm
        The distributed training problem.
    bound
        Every log-tilt is kept in ``[-bound, bound]`` (bounded TAO types).
    prefix
        Options prefix of the TAO object.
    """

    def __init__(self, tm: TiltMesh, bound: float = 20.0, prefix: str = TAO_PREFIX) -> None:
        self.tm = tm
        d = tm.d
        self.prefix = prefix
        self.full = tm.full.tompi4py()
        self.scale = d.dt * d.nu / d.grid.h[0] * 2.0 * d.nu  # gradient units -> log-tilt units
        self.floor = 0.0 if d.eta == 0 else -d.eta / d.K
        self.options = SolverOptions(prefix, dict(DEFAULTS))
        self.tao = self.G = self.lower = self.upper = None
        err = None
        if tm.active:
            self.G = tm.create_vec()
            self.lower, self.upper = tm.bounds(bound)
            tao = PETSc.TAO().create(tm.comm)
            tao.setOptionsPrefix(prefix)
            tao.setObjectiveGradient(self._objective_gradient, self.G)
            tao.setVariableBounds(self.lower, self.upper)
            tao.setConvergenceTest(self._converged)
            tao.setMonitor(self._monitor)
            self.tao = tao
            try:
                self.options.set_from_options(tao)
            except BadInput as e:  # the same on every rank; agreed on below
                err = str(e)
        first = next((e for e in self.full.allgather(err) if e), None)
        if first is not None:
            self.destroy()
            raise BadInput(first)
        #: the TAO type (the same on every rank)
        self.type = self.full.bcast(self.tao.getType() if self.tao is not None else None, root=0)
        self._reset(1.0, 1 << 30, 1e-6)

    def _reset(self, infeasible: float, maxiter: int, gtol: float) -> None:
        self.infeasible, self.maxiter, self.gtol = infeasible, maxiter, gtol
        self.nfev = self.n_infeasible = 0
        self.history: list[float] = []
        self.last_gmax = float("inf")

    # ------------------------------------------------------------------ callbacks
    def _objective_gradient(self, tao, X: PETSc.Vec, G: PETSc.Vec) -> float:
        self.nfev += 1
        EVENTS["optimisation_gradient"].begin()
        e = self.tm.evaluate(X, G)
        EVENTS["optimisation_gradient"].end()
        J = e.cost["total"]
        if not e.finite or e.min_density <= self.floor:
            self.n_infeasible += 1
            g = G.getArray()
            g[~np.isfinite(g)] = 0.0
            return self.infeasible
        return J

    def _converged(self, tao) -> None:
        its = tao.getIterationNumber()
        Gp = tao.getGradient()[0]  # the projected gradient for the bounded types
        self.last_gmax = Gp.norm(PETSc.NormType.NORM_INFINITY) / self.scale
        R = PETSc.TAO.Reason
        if self.last_gmax <= self.gtol:
            tao.setConvergedReason(R.CONVERGED_USER)
        elif its >= self.maxiter:
            tao.setConvergedReason(R.DIVERGED_MAXITS)
        elif self.nfev >= 4 * self.maxiter + 20:
            tao.setConvergedReason(R.DIVERGED_MAXFCN)
        else:
            tao.setConvergedReason(R.CONTINUE_ITERATING)

    def _monitor(self, tao) -> None:
        self.history.append(float(tao.getObjectiveValue()))

    # ------------------------------------------------------------------ solve
    def minimise(self, X: PETSc.Vec | None, maxiter: int, gtol: float = 1e-6, restarts: int = 50) -> TaoResult:
        """At most ``maxiter`` iterations from the network ``X`` (updated in place; ``None``
        on the ranks that hold no tilts) until the projected gradient is below ``gtol`` in
        log-tilt units (collective). The result is the same on every rank."""
        r = self._minimise(X, maxiter, gtol, restarts) if self.tm.active else None
        return r if self.full.size == self.tm.comm_size else self.full.bcast(r, root=0)

    def _minimise(self, X: PETSc.Vec, maxiter: int, gtol: float, restarts: int) -> TaoResult:
        t0 = time.perf_counter()
        e0 = self.tm.evaluate(X)
        J0 = e0.cost["total"]
        self._reset(1e3 * (1.0 + abs(J0)) if np.isfinite(J0) else 1e300, maxiter, gtol)
        tao = self.tao
        done = used = 0
        reason = R_CONT = PETSc.TAO.Reason.CONTINUE_ITERATING
        f_prev = J0
        while True:
            self.maxiter = maxiter - done
            with self.options.inserted():
                tao.setSolution(X)
                tao.solve()
            reason = tao.getConvergedReason()
            done += tao.getIterationNumber()
            f = float(tao.getObjectiveValue())
            gained = f_prev - f if f < self.infeasible else 0.0
            f_prev = min(f_prev, f)
            if reason == PETSc.TAO.Reason.CONVERGED_USER or done >= maxiter or used >= restarts \
                    or reason in (PETSc.TAO.Reason.DIVERGED_MAXFCN, R_CONT) \
                    or gained <= 1e-13 * (1.0 + abs(f)):
                break
            used += 1  # a failed line search: fresh memory from the current network
        e = self.tm.evaluate(X, self.G)
        success = reason == PETSc.TAO.Reason.CONVERGED_USER
        msg = "converged: projected gradient below gtol" if success else _REASONS.get(reason, str(reason))
        gmax = self.G.norm(PETSc.NormType.NORM_INFINITY) / self.scale
        return TaoResult(iterations=int(done), evaluations=int(self.nfev) + 2,
                         infeasible_evaluations=int(self.n_infeasible), restarts=used, success=bool(success),
                         message=msg, gradient_max=float(gmax), cost=e.cost, time=time.perf_counter() - t0,
                         decrease=float(J0 - e.cost["total"]) if np.isfinite(J0) else float("inf"),
                         history=[J0] + self.history)

    @staticmethod
    def exhausted(r: TaoResult) -> bool:
        """Whether another chunk can give nothing: converged, or ``J_h`` no longer falls."""
        return r.success or not r.decrease > 1e-13 * (1.0 + abs(r.cost.get("total", 0.0)))

    def destroy(self) -> None:
        for o in (self.tao, self.G, self.lower, self.upper):
            if o is not None:
                o.destroy()
        self.tao = self.G = self.lower = self.upper = None
