"""The solve driver: a loop over run-state transitions that notifies observers.

:class:`Run` solves one :class:`~mfc_hpc.problem.build.Problem`: grid levels from coarse to
fine (each level's first guess the interpolated coarser solution), on each level the
phases of :class:`~mfc_hpc.drivers.state.Phase` (direct Newton; the uncontrolled flow at
loss weight 0; continuation in the loss weight and in ``nu``; the optimisation route when
continuation stalls at a fold), and the diagnostics of the final state. It owns the
:class:`~mfc_hpc.drivers.state.RunState` and advances it; :class:`RunObserver`\\ s (the
checkpoint writer of :mod:`mfc_hpc.fileio.restart`) are told of every transition and may
restore a state before the loop starts. Collective over the communicator.
"""
from __future__ import annotations

import copy
import logging
import math
import time

from petsc4py import PETSc

from ..config.sections import FIXED_LOSSES
from ..errors import ConfigError
from ..parallel.events import phase_times
from ..parallel.options import PREFIX, level_prefix
from ..parallel.snes import MeshSolver, NewtonCursor, NewtonSettings, SolveResult
from ..problem.build import Problem
from .continuation import continue_parameter
from .diagnostics import diagnostics, sanity
from .optimisation import optimisation_solve, zero_network_walk
from .state import Phase, RunState

__all__ = ["RunObserver", "RunEvents", "Run", "grid_levels", "newton_settings", "build_solver",
           "zero_network_cost"]

log = logging.getLogger(__name__.split(".")[-1])


class RunObserver:
    """What a run tells its observers (every method optional; all are collective)."""

    def restore(self, run: "Run") -> bool:
        """Before the loop: load a saved state into ``run.state`` and the solvers; return
        whether the starting level's ``X`` was loaded."""
        return False

    def on_level(self, run: "Run") -> None:
        pass

    def on_phase(self, run: "Run") -> None:
        pass

    def on_continuation(self, run: "Run") -> None:
        pass

    def on_newton(self, run: "Run", ms: MeshSolver, first: bool) -> None:
        """After every Newton iteration (``first``: the solve's first call, no step yet)."""

    def on_safe_point(self, run: "Run", ms: MeshSolver, reason: str) -> None:
        pass

    def summary(self) -> dict | None:
        return None


class RunEvents:
    """The driver's side of the callbacks its components make (continuation, solver)."""

    def __init__(self, run: "Run") -> None:
        self.run = run

    def continuation_step(self, cursor, good) -> None:
        st = self.run.state
        st.cont, st.newton = cursor, None
        self.run.good = good
        self.run.notify("on_continuation")

    def safe_point(self, ms: MeshSolver, reason: str) -> None:
        self.run.state.newton = None
        self.run.notify("on_safe_point", ms, reason)


def grid_levels(cfg) -> list[tuple[tuple[int, ...], int]]:
    """The meshes of grid sequencing, coarsest first: each halves every ``M_k - 1`` and ``N``."""
    L = cfg.solver.grid_levels
    nodes, N = cfg.mesh.nodes, cfg.mesh.layers
    f = 2 ** L
    if L and (any((M - 1) % f or (M - 1) // f < 2 for M in nodes) or N % f or N // f < 1):
        raise ConfigError(f"solver.grid_levels: {L} levels need (nodes - 1) and layers divisible by {f} "
                          f"with at least 3 nodes on the coarsest mesh; got nodes = "
                          f"{nodes[0] if len(nodes) == 1 else list(nodes)}, layers = {N}")
    return [(tuple((M - 1) // 2 ** l + 1 for M in nodes), N // 2 ** l) for l in range(L, -1, -1)]


def step_cap_rule(setting: str, ndim: int) -> str:
    """What a Newton step protects for ``solver.step_cap`` (:data:`mfc_hpc.numerics.reference.STEP_CAPS`).

    ``auto``: ``classes`` in 1-D, the rule of the 1-D releases, whose runs are the package's
    reference answers (``tests/test_release_1d.py``: a failing direct attempt on iris stops
    after 8 Newton steps with it, and runs to 30 with ``total``); ``bulk`` in 2-D, where the
    exact discrete density is slightly negative in far tails near the walls of a box
    (METHOD.md 8) so tails must be free to cross zero, while the bulk stays protected (with
    ``total`` a hopeless direct attempt on a two-class 17^2 x 8 problem creeps at the line
    search's smallest step for 30 iterations; with ``bulk`` it stalls after 7 and
    continuation converges).
    """
    if setting != "auto":
        return setting
    return "classes" if ndim == 1 else "bulk"


def newton_settings(cfg) -> NewtonSettings:
    s = cfg.solver
    return NewtonSettings(rtol=s.rtol, atol=s.atol, stol=s.stol, max_it=s.max_it, positivity=s.positivity,
                          step_cap=step_cap_rule(s.step_cap, cfg.ndim), linear=s.linear,
                          process_grid=s.process_grid)


def build_solver(problem: Problem, comm: PETSc.Comm | None = None, da: PETSc.DMDA | None = None,
                 prefix: str = PREFIX, parent: str | None = None, verbose: bool = True) -> MeshSolver:
    """A :class:`MeshSolver` for a problem (on its mesh, or an existing DMDA)."""
    return MeshSolver(problem.d, problem.boundary_data(1.0), newton_settings(problem.cfg), comm=comm, da=da,
                      prefix=prefix, parent=parent, verbose=verbose)


class Run:
    """One run of a problem: the solvers of every grid level, the run state, observers."""

    def __init__(self, problem: Problem, comm: PETSc.Comm | None = None, observers=(), verbose: bool = True) -> None:
        t0 = time.perf_counter()
        self.problem, self.cfg = problem, problem.cfg
        self.comm = comm or PETSc.COMM_WORLD
        self.levels = grid_levels(self.cfg)
        self.problems = [problem if (n, N) == (problem.grid.nodes, problem.d.N) else problem.on_mesh(n, N)
                         for n, N in self.levels]
        L = len(self.levels)
        fine = build_solver(self.problems[-1], self.comm, verbose=verbose)
        self.solvers = [fine]
        da = fine.mesh.da
        for k in range(L - 2, -1, -1):
            da = da.coarsen()
            self.solvers.insert(0, build_solver(self.problems[k], self.comm, da=da, prefix=level_prefix(k + 1),
                                                parent=PREFIX, verbose=verbose))
        self.observers = list(observers)
        self.state = RunState()
        self.good = None  # the continuation's last accepted state (a Vec), while it solves
        #: a restored continuation's last accepted state (set by an observer's restore)
        self.restored_good = None
        self.events = RunEvents(self)
        self._pending: NewtonCursor | None = None
        self._current: MeshSolver | None = None
        self.t_start = t0
        self.t_setup = time.perf_counter() - t0
        for ms in self.solvers:
            ms.iteration_hook = self._on_iteration

    # ------------------------------------------------------------------ observers
    def notify(self, what: str, *args) -> None:
        for o in self.observers:
            getattr(o, what)(self, *args)

    def _on_iteration(self, its: int, fnorm: float, history: list[float], first: bool) -> None:
        self.state.newton = NewtonCursor(its, history)
        self.notify("on_newton", self._current, first)

    def enter(self, phase: Phase, rec: dict | None) -> None:
        self.state.enter(phase, rec)
        self.good = None
        self.notify("on_phase")

    def newton(self, ms: MeshSolver) -> SolveResult:
        """One Newton solve (continuing an interrupted one once, after a restart)."""
        self._current = ms
        resume, self._pending = self._pending, None
        r = ms.solve(resume=resume)
        return r

    def _params(self, ms: MeshSolver) -> None:
        self.state.nu, self.state.loss_weight = ms.d.nu, float(ms.bd.scale)

    # ------------------------------------------------------------------ one level
    def solve_level(self, ms: MeshSolver, resume: RunState | None = None, try_direct: bool = True) -> dict:
        """Solve on one mesh from the current ``ms.X``; continuation when needed.

        Returns a record of the stages: direct Newton, then (if it failed, or if
        ``solver.continuation = "always"``) the uncontrolled flow at loss weight 0, the
        loss weight 0 -> 1 with tangent predictor, and nu from ``solver.nu_start`` down.
        ``resume`` continues an interrupted solve from its phase.
        """
        s, cfg = self.cfg.solver, self.cfg
        nu = cfg.model.nu
        rec: dict = resume.record if (resume is not None and resume.record is not None) \
            else {"stages": [], "newton_iterations": 0}
        phase = resume.phase if resume is not None else Phase.DIRECT
        self._current = ms
        self.enter(phase, rec)
        if phase == Phase.DONE:
            return rec

        def stage(kind: str, r: SolveResult) -> None:
            rec["stages"].append({"param": kind, "value": None, "converged": r.converged,
                                  "iterations": r.iterations, "reason": r.reason,
                                  "residuals": r.residuals, "wall": r.wall})
            rec["newton_iterations"] += r.iterations

        # the bridge's hard terminal condition is never reached by direct Newton from the
        # uncontrolled flow: go straight to continuation (it starts exactly there)
        direct_first = s.continuation != "always" and cfg.loss.kind != "bridge"
        if phase == Phase.DIRECT and try_direct and direct_first:
            self._params(ms)
            r = self.newton(ms)
            stage("direct", r)
            if r.converged:
                rec["converged"] = True
                return rec
            if s.continuation == "never":
                rec["converged"] = False
                rec["failure"] = f"Newton did not converge ({r.reason}) and solver.continuation = 'never'"
                return rec
            log.info("direct Newton failed (%s): continuation", r.reason)
        nu0 = max(s.nu_start or nu, nu)
        if phase in (Phase.DIRECT, Phase.LOSS0):
            ms.with_nu(nu0)
            ms.bd.scale = 0.0
            if phase == Phase.DIRECT:  # (resumed in loss0: ms.X is the checkpointed iterate)
                self._pending = None
                ms.uncontrolled_guess()
            self.enter(Phase.LOSS0, rec)
            self._params(ms)
            r = self.newton(ms)
            stage("loss=0", r)
            if not r.converged:
                rec["converged"] = False
                rec["failure"] = f"Newton failed at loss weight 0 ({r.reason})"
                return rec
            self.enter(Phase.LOSS, rec)
            self._params(ms)
            self.events.safe_point(ms, "stage")
        if phase in (Phase.DIRECT, Phase.LOSS0, Phase.LOSS):
            cur = resume.cont if (resume is not None and phase == Phase.LOSS) else None
            c = self._continue(ms, "loss", 0.0, 1.0, 1.0 / s.loss_steps, False, cur)
            if not _absorb(rec, c, f"loss-weight continuation stalled at {c.value:.4g} of 1"):
                return rec
            if nu0 != nu:
                self.enter(Phase.NU, rec)
                self._params(ms)
                self.events.safe_point(ms, "stage")
        if nu0 != nu:
            cur = resume.cont if (resume is not None and phase == Phase.NU) else None
            c = self._continue(ms, "nu", nu0, nu, math.log(nu0 / nu) / s.loss_steps, True, cur)
            if not _absorb(rec, c, f"nu continuation stalled at nu = {c.value:.4g} (target {nu:g})"):
                return rec
        rec["converged"] = True
        return rec

    def _continue(self, ms, param, start, stop, first, geometric, cursor):
        s = self.cfg.solver
        good, self.restored_good = (self.restored_good if cursor is not None else None), None
        try:
            return continue_parameter(ms, param, start, stop, first_step=first, min_step=s.min_step,
                                      max_stages=s.max_stages, geometric=geometric, progress=log.info,
                                      resume=cursor, good=good, events=self.events, newton=self.newton)
        finally:  # a stalled continuation leaves no cursor (nor a freed Vec) behind
            self.state.cont, self.good = None, None

    # ------------------------------------------------------------------ the run
    def _interpolate(self, coarse: MeshSolver, fine: MeshSolver) -> None:
        interp, _ = coarse.mesh.da.createInterpolation(fine.mesh.da)
        interp.mult(coarse.X, fine.X)
        interp.destroy()

    def _optimisation(self, ms: MeshSolver, k: int, rec: dict) -> dict:
        self.enter(Phase.OPTIMISATION, rec)
        self._params(ms)
        return optimisation_solve(ms, self.problems[k].boundary_data(1.0), self.cfg.solver, self.cfg.model.nu, rec,
                                  newton=self.newton)

    def execute(self) -> tuple[MeshSolver, dict]:
        """Run to the end: the fine-mesh solver and the summary (collective)."""
        cfg = self.cfg
        s = cfg.solver
        if s.guess == "optimisation" and cfg.loss.kind not in FIXED_LOSSES:
            raise ConfigError(f"solver.guess: 'optimisation' needs a fixed loss (quadratic or softmax), "
                              f"not loss.kind = {cfg.loss.kind!r}")
        seeded = False
        for o in self.observers:
            seeded = o.restore(self) or seeded
        st = self.state
        start = st.level
        # a snapshot of the restored cursor: self.state itself advances from here on
        resume = copy.deepcopy(st) if (seeded and st.phase is not None) else None
        if resume is not None and resume.newton is not None:
            self._pending = resume.newton
        history = list(st.history)
        ok, failure = True, None
        prev: MeshSolver | None = self.solvers[start - 1] if start > 0 else None
        fixed = cfg.loss.kind in FIXED_LOSSES
        for k in range(start, len(self.levels)):
            nodes, N = self.levels[k]
            ms = self.solvers[k]
            self._current = ms
            log.info("mesh %s x %d layers (%d unknowns, %d ranks, process grid %s)",
                     " x ".join(map(str, nodes)), N, ms.X.getSize(), self.comm.getSize(), list(ms.mesh.proc_sizes))
            cur = resume if k == start else None
            here_seeded = k == start and seeded
            if not here_seeded:
                if prev is None:
                    ms.uncontrolled_guess()
                else:
                    self._interpolate(prev, ms)
            attempt = cur.attempt if cur is not None else 0
            prior = cur.prior if cur is not None else None
            st.level, st.mesh, st.attempt, st.prior, st.history = k, (list(nodes), N), attempt, prior, history
            self.notify("on_level")
            rec = None
            if s.guess == "optimisation" and not here_seeded and prev is None:
                rec = self._optimisation(ms, k, {"stages": [], "newton_iterations": 0})
                if not rec["converged"]:
                    ms.uncontrolled_guess()
            if attempt == 0 and not (rec is not None and rec["converged"]):
                r0 = self.solve_level(ms, resume=cur)
                if rec is not None:  # the optimisation attempt's stages come first
                    r0["stages"] = rec["stages"] + r0["stages"]
                    r0["newton_iterations"] += rec["newton_iterations"]
                rec = r0
            if attempt == 1 or (not rec["converged"] and (prev is not None or here_seeded)):
                prior = cur.prior if attempt == 1 else rec
                if attempt == 0:
                    log.info("Newton from the interpolated coarse solution failed: restart on this mesh")
                    ms.uncontrolled_guess()
                    st.attempt, st.prior = 1, prior
                    self.notify("on_level")
                rec2 = self.solve_level(ms, resume=cur if attempt == 1 else None)
                rec2["stages"] = (prior or {}).get("stages", []) + rec2["stages"]
                rec2["newton_iterations"] += (prior or {}).get("newton_iterations", 0)
                rec = rec2
            if not rec["converged"] and s.optimisation_fallback and s.guess != "optimisation" \
                    and s.continuation != "never" and fixed:
                log.info("continuation stalled (%s): Newton from the minimiser of the discrete training problem",
                         rec.get("failure"))
                rec = self._optimisation(ms, k, rec)
            rec.update({"nodes": nodes[0] if len(nodes) == 1 else list(nodes), "layers": N,
                        "unknowns": ms.X.getSize()})
            if rec["converged"]:
                self.enter(Phase.DONE, rec)
                st.attempt, st.prior = 0, None
                self._params(ms)
                self.events.safe_point(ms, "level")
            history.append(rec)
            st.history = history
            if not rec["converged"]:
                ok = False
                failure = f"mesh {' x '.join(map(str, nodes))} x {N}: {rec.get('failure', 'Newton did not converge')}"
                break
            prev = ms
        ms = self.solvers[-1] if ok else ms
        diag = diagnostics(ms.mesh, ms.X, ms.d, ms.bd)
        bad, warning = sanity(diag)  # non-finite values or strongly negative densities: never "converged"
        if bad is not None:
            if ok:
                ok, failure = False, bad
            else:
                failure = f"{failure}; {bad}"
        self.warnings = [warning] if warning is not None else []
        if warning is not None:
            log.warning("%s", warning)
        zero = zero_network_cost(self.problem, self.comm) if ok else None
        self.final = ms
        summary = self.summary(ms, ok, failure, history, diag, zero)
        return ms, summary

    def summary(self, ms: MeshSolver, ok: bool, failure: str | None, history: list, diag: dict, zero) -> dict:
        g = ms.d.grid
        n = g.ndim
        one = (lambda v: v[0]) if n == 1 else list
        out = {
            "converged": ok,
            "failure": failure,
            "config": self.problems[-1].resolved_config(),
            "ranks": self.comm.getSize(),
            "process_grid": list(ms.mesh.proc_sizes),
            "linear_solver": ms.linear,
            "mesh": {"dim": n, "nodes": one(g.nodes), "layers": ms.d.N, "classes": ms.d.K,
                     "unknowns": ms.X.getSize(), "h": one(g.h), "dt": ms.d.dt,
                     "x_min": one(g.lower), "x_max": one(g.upper)},
            "newton": history,
            "newton_iterations_fine": history[-1]["newton_iterations"] if history else 0,
            "diagnostics": diag,
            "zero_network_cost": zero,
            "notes": list(self.problem.notes),
            "warnings": list(getattr(self, "warnings", [])),
            "timings": {"setup": self.t_setup, "total": time.perf_counter() - self.t_start, **phase_times()},
        }
        for o in self.observers:
            extra = o.summary()
            if extra:
                out.update(extra)
        return out

    def destroy(self, keep_final: bool = True) -> None:
        for ms in self.solvers:
            if not (keep_final and ms is getattr(self, "final", None)):
                ms.destroy()


def _absorb(rec: dict, c, failure: str) -> bool:
    """Add a continuation's stages to the record; on a stall mark it failed (False)."""
    rec["stages"] += c.stages
    rec["newton_iterations"] += c.newton_iterations
    if not c.converged:
        rec["converged"] = False
        rec["failure"] = failure
    return c.converged


def zero_network_cost(problem: Problem, comm: PETSc.Comm | None = None) -> dict:
    """Cost ``J_h`` of the zero network (``E = 1``: data only diffused), split as the
    diagnostics' ``cost`` (collective; the same dict on every rank).

    For the fixed terminal losses and the midpoint scheme it is the serial midpoint walk
    with zero tilts on rank 0 (:func:`mfc_hpc.drivers.optimisation.zero_network_walk`,
    ``O(K prod M N)`` work), broadcast; for the other terminal costs and the ``euler``
    scheme, the uncontrolled flow on the distributed mesh.
    """
    comm = comm or PETSc.COMM_WORLD
    cfg = problem.cfg
    if cfg.loss.kind not in FIXED_LOSSES or cfg.model.scheme != "midpoint":
        return zero_network_cost_mesh(problem, comm)
    mpi = comm.tompi4py()
    res = None
    if mpi.rank == 0:
        try:
            res = zero_network_walk(problem.d, problem.bd)
        except Exception as e:  # noqa: BLE001 - raised on every rank below
            res = e
    res = mpi.bcast(res, root=0)
    if isinstance(res, BaseException):
        raise res
    return res


def zero_network_cost_mesh(problem: Problem, comm: PETSc.Comm | None = None) -> dict:
    """``J_h`` of the zero network on the distributed mesh (collective): the uncontrolled
    flow with the adjoint set to zero, evaluated by the diagnostics. Any terminal cost."""
    ms = build_solver(problem, comm, verbose=False, prefix=f"{PREFIX}zero_")
    ms.bd.scale = 0.0
    ms.uncontrolled_guess()  # density moved by the plain walk; phi irrelevant at E = 1
    ms.bd.scale = 1.0
    Z = ms.mesh.owned(ms.X, readonly=False)
    Z[..., ms.d.K:] = 0.0
    del Z
    diag = diagnostics(ms.mesh, ms.X, ms.d, ms.bd)
    ms.destroy()
    return diag["cost"]

