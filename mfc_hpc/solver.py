"""PETSc Newton (SNES) for the discrete optimality system on one depth-time mesh.

The object wires the residual and the analytic Jacobian of :mod:`mfc_hpc.scheme` into a
SNES on the :class:`~mfc_hpc.mesh.DepthTimeMesh`, sets robust defaults (Newton with a
backtracking line search, MUMPS LU) that any ``-mfc_*`` option overrides, caps steps so
``R = rho + eta`` stays positive, and times every phase as a PETSc log event.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from petsc4py import PETSc

from .linear import MULTIGRID_KSP, MULTIGRID_OPTIONS, choose_linear, multigrid_levels
from .mesh import DepthTimeMesh
from .scheme import BoundaryData, Discretisation, slab_jacobian, slab_residual

__all__ = ["MeshSolver", "SolveResult", "EVENTS", "default_prefix"]

log = logging.getLogger(__name__.split(".")[-1])

default_prefix = "mfc_"

#: PETSc log events: ``-log_view`` splits the time by phase
EVENTS = {name: PETSc.Log.Event(f"mfc_{name}") for name in
          ("residual", "jacobian", "linear_solve", "io", "diagnostics")}


class _Stalled(Exception):
    """Raised from the Newton monitor when |F| stops falling (see ``MeshSolver.stall_window``)."""


@dataclass
class SolveResult:
    """Outcome of one Newton solve."""

    converged: bool
    reason: str
    iterations: int
    linear_iterations: int
    residuals: list[float] = field(default_factory=list)
    wall: float = 0.0


_REASONS = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items()
            if isinstance(v, int) and not k.startswith("_")}


class MeshSolver:
    """SNES over the whole depth-time mesh.

    Parameters
    ----------
    d
        Discretisation (mesh sizes, ``nu``, ``eta``, running cost, scheme).
    bd
        Initial densities and terminal condition.
    rtol, atol, stol, max_it
        Newton tolerances; ``atol`` is relative to ``||F(0)||`` (the size of the
        boundary data), since residual rows scale with ``h``.
    positivity
        Fraction of the distance to ``R = 0`` a Newton step may go (METHOD.md 7).
    proc_grid
        ``(px, py)`` ranks along nodes and levels (0: PETSc decides).
    comm, prefix
        Communicator and options prefix (``-mfc_snes_*``, ``-mfc_ksp_*``, ``-mfc_pc_*``).
    da
        An existing DMDA to use (grid sequencing coarsens one).

    Notes
    -----
    Default linear solver: ``-mfc_ksp_type preonly -mfc_pc_type lu
    -mfc_pc_factor_mat_solver_type mumps``; e.g. ``-mfc_ksp_type gmres -mfc_pc_type asm
    -mfc_sub_pc_type lu`` selects an iterative one. ``-mfc_snes_fd_color`` replaces the
    analytic Jacobian by finite differences with colouring (for checking).
    """

    def __init__(self, d: Discretisation, bd: BoundaryData, *, rtol: float = 1e-10,
                 atol: float = 1e-11, stol: float = 1e-14, max_it: int = 30,
                 positivity: float = 0.9, proc_grid: tuple[int, int] = (0, 0),
                 comm: PETSc.Comm | None = None, prefix: str = default_prefix,
                 da: PETSc.DMDA | None = None, verbose: bool = True, linear: str = "auto") -> None:
        self.d, self.bd = d, bd
        opts = PETSc.Options(prefix)
        #: the linear solver in use: "direct", "multigrid", or "options" (chosen on the
        #: command line with -mfc_ksp_type / -mfc_pc_type)
        self.linear = choose_linear(d, linear)
        if opts.hasName("ksp_type") or opts.hasName("pc_type"):
            self.linear = "options"
        if self.linear == "multigrid" and da is None and tuple(proc_grid) == (0, 0):
            # ranks split along depth: the block-Jacobi smoother then cuts only the
            # couplings of one layer and the iteration count does not grow with the ranks
            # (50 vs 50-55 linear iterations on 1 and 2 ranks at 1e6 unknowns)
            proc_grid = (1, 0)
        self.mesh = DepthTimeMesh(d, comm, proc_grid, prefix, da=da)
        self.positivity = positivity
        self.rho_cut = 0.0
        self.verbose = verbose
        self.X = self.mesh.create_vec()
        self.F = self.mesh.create_vec()
        self.J = self.mesh.create_matrix()
        self._tol = (rtol, atol, stol, max_it)
        snes = PETSc.SNES().create(self.mesh.comm)
        snes.setOptionsPrefix(prefix)
        snes.setDM(self.mesh.da)
        snes.setFunction(self._residual, self.F)
        snes.setJacobian(self._jacobian, self.J)
        snes.setType(PETSc.SNES.Type.NEWTONLS)
        self.snes = snes
        if self.linear == "multigrid":
            self._set_multigrid(opts)
        else:
            self._set_direct()
        snes.setLineSearchPreCheck(self._precheck)
        snes.setMonitor(self._monitor)
        snes.setFromOptions()
        self.snes = snes
        self._history: list[float] = []
        self._t0 = 0.0
        #: ``hook(ms, iteration, fnorm)`` called after every Newton iteration (checkpoints)
        self.monitor_hooks: list = []
        #: the :class:`mfc_hpc.checkpoint.Checkpointer` of the run, if any
        self.checkpointer = None
        #: ``{"iteration": k, "history": [...]}``: the next :meth:`solve` continues a Newton
        #: solve interrupted at iteration k (restart from a checkpoint)
        self.resume_newton: dict | None = None
        self._its0 = 0
        #: stop a Newton solve whose |F| has not fallen below ``stall_factor`` times its
        #: value ``stall_window`` steps earlier (0 disables)
        self.stall_window, self.stall_factor = 6, 0.999
        self.timings = {k: 0.0 for k in ("residual", "jacobian", "linear_solve")}
        self.counts = {k: 0 for k in ("residual", "jacobian")}
        self._set_tolerances()

    # ------------------------------------------------------------------ linear solvers
    def _set_direct(self) -> None:
        """KSP preonly + LU (MUMPS; SuperLU_dist on several ranks without MUMPS)."""
        ksp = self.snes.getKSP()
        ksp.setType(PETSc.KSP.Type.PREONLY)
        pc = ksp.getPC()
        pc.setType(PETSc.PC.Type.LU)
        if PETSc.Sys.hasExternalPackage("mumps"):
            pc.setFactorSolverType("mumps")
        elif self.mesh.comm.getSize() > 1 and PETSc.Sys.hasExternalPackage("superlu_dist"):
            pc.setFactorSolverType("superlu_dist")

    def _set_multigrid(self, opts: PETSc.Options) -> None:
        """FGMRES(100), rtol 1e-8, + geometric multigrid on the DMDA hierarchy
        (:data:`mfc_hpc.linear.MULTIGRID_KSP`, :data:`mfc_hpc.linear.MULTIGRID_OPTIONS`)."""
        for k, v in MULTIGRID_OPTIONS.items():
            if not opts.hasName(k):
                opts.setValue(k, v)
        if not opts.hasName("mg_coarse_pc_factor_mat_solver_type") and PETSc.Sys.hasExternalPackage("mumps"):
            opts.setValue("mg_coarse_pc_factor_mat_solver_type", "mumps")
        k = MULTIGRID_KSP
        ksp = self.snes.getKSP()
        ksp.setType(k["ksp_type"])
        ksp.setGMRESRestart(int(k["ksp_gmres_restart"]))
        ksp.setTolerances(rtol=float(k["ksp_rtol"]), max_it=int(k["ksp_max_it"]))
        pc = ksp.getPC()
        pc.setType(k["pc_type"])
        pc.setMGLevels(multigrid_levels(self.d.M, self.d.N))

    def fall_back_to_direct(self, why: str) -> bool:
        """Switch a multigrid solver to MUMPS LU after a failed linear solve; ``False`` if
        the solver is not the automatic multigrid (nothing to fall back to)."""
        if self.linear != "multigrid":
            return False
        log.warning("multigrid linear solve failed (%s): switching to the direct solver", why)
        ksp = self.snes.getKSP()
        ksp.reset()
        self._set_direct()
        self.linear = "direct"
        return True

    # ------------------------------------------------------------------ callbacks
    def _residual(self, snes, X: PETSc.Vec, F: PETSc.Vec) -> None:
        t = time.perf_counter()
        EVENTS["residual"].begin()
        Zg = self.mesh.ghosted(X)
        with np.errstate(over="ignore", invalid="ignore"):  # line-search trial points may overflow
            Fo = slab_residual(Zg, self.mesh.slab, self.d, self.bd)
        if not np.all(np.isfinite(Fo)):
            Fo[...] = np.nan  # out of the domain: the line search backs off
        F.getArray()[:] = Fo.ravel()
        EVENTS["residual"].end()
        self.timings["residual"] += time.perf_counter() - t
        self.counts["residual"] += 1

    def _jacobian(self, snes, X: PETSc.Vec, J: PETSc.Mat, P: PETSc.Mat) -> None:
        self.assemble_jacobian(X, P)
        if J.handle != P.handle:
            J.assemble()

    def assemble_jacobian(self, X: PETSc.Vec, P: PETSc.Mat, uncontrolled: bool = False) -> None:
        """Assemble the analytic Jacobian at ``X`` into ``P`` in one vectorised call."""
        t = time.perf_counter()
        EVENTS["jacobian"].begin()
        Zg = self.mesh.ghosted(X)
        V = slab_jacobian(Zg, self.mesh.slab, self.d, self.bd, uncontrolled=uncontrolled)
        rowptr, cols, rows = self.mesh.jacobian_pattern()
        P.setValuesIJV(rowptr, cols, V.reshape(rows.size, -1), addv=PETSc.InsertMode.INSERT_VALUES,
                       rowmap=rows)
        P.assemble()
        EVENTS["jacobian"].end()
        self.timings["jacobian"] += time.perf_counter() - t
        self.counts["jacobian"] += 1

    def _precheck(self, X: PETSc.Vec, Y: PETSc.Vec) -> bool:
        """Shorten the step ``X - Y`` so that every ``rho_c`` (and so ``R = rho + eta``)
        stays positive: at most ``positivity`` of the distance to zero (METHOD.md 7).

        Not for one class with ``eta = 0``: the scheme never divides by ``R`` there, and
        Gaussian tails of 1e-30 would stall Newton with tiny steps.
        """
        if self.d.unit_fraction:
            return False
        K = self.d.K
        R = self.mesh.owned(X)[..., :K]
        dR = self.mesh.owned(Y)[..., :K]
        grow = (dR > 0) & (R > self.rho_cut)
        a = min(1.0, float((self.positivity * R[grow] / dR[grow]).min())) if grow.any() else 1.0
        a = self.mesh.allmin(a)
        if a < 1.0:
            Y.scale(a)
            return True
        return False

    def _monitor(self, snes, its: int, fnorm: float) -> None:
        self._history.append(float(fnorm))
        if self.verbose:
            log.info("  Newton %2d  |F| %.3e  lin %3d  %.2fs", its, fnorm,
                     snes.getLinearSolveIterations(), time.perf_counter() - self._t0)
        for hook in self.monitor_hooks:  # may raise (checkpoint and exit): propagates out of solve()
            hook(self, its + self._its0, float(fnorm))
        w = self.stall_window
        if w and len(self._history) > w and \
                not fnorm < self.stall_factor * self._history[-1 - w]:
            # damped steps that no longer reduce |F| (e.g. cut to nothing by the positivity
            # pre-check far from the solution): stop now instead of spending max_it
            # factorisations; the caller then continues in a parameter instead
            raise _Stalled(f"stalled: |F| {fnorm:.3e} not below {self.stall_factor:g} x its value "
                           f"{w} Newton steps earlier")

    # ------------------------------------------------------------------ set-up
    def _set_tolerances(self) -> None:
        rtol, atol, stol, max_it = self._tol
        self.X.zeroEntries()
        self._residual(None, self.X, self.F)
        self.scale = self.F.norm() or 1.0
        # options given on the command line win over the configuration
        opts = PETSc.Options(self.snes.getOptionsPrefix())
        self.snes.setTolerances(
            rtol=None if opts.hasName("snes_rtol") else rtol,
            atol=None if opts.hasName("snes_atol") else atol * self.scale,
            stol=None if opts.hasName("snes_stol") else stol,
            max_it=None if opts.hasName("snes_max_it") else max_it)

    def set_problem(self, d: Discretisation | None = None, bd: BoundaryData | None = None) -> None:
        """Change constants (``nu``) or boundary data (loss weight) between solves."""
        if d is not None:
            if (d.K, d.M, d.N) != (self.d.K, self.d.M, self.d.N):
                raise ValueError("set_problem: the mesh cannot change")
            self.d = d
        if bd is not None:
            self.bd = bd

    # ------------------------------------------------------------------ solves
    def uncontrolled_guess(self) -> None:
        """``X <- `` the uncontrolled flow: data diffused forward, ``-G`` diffused backward."""
        self.X.zeroEntries()
        self._residual(None, self.X, self.F)
        self.assemble_jacobian(self.X, self.J, uncontrolled=True)
        y = self.X.duplicate()
        self._linear_solve(self.F, y)
        self.X.axpy(-1.0, y)
        y.destroy()

    def _linear_solve(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        t = time.perf_counter()
        EVENTS["linear_solve"].begin()
        ksp = self.snes.getKSP()
        ksp.setOperators(self.J, self.J)
        ksp.solve(b, x)
        if ksp.getConvergedReason() < 0 and self.fall_back_to_direct(f"KSP reason {ksp.getConvergedReason()}"):
            ksp.setOperators(self.J, self.J)
            ksp.solve(b, x)
        EVENTS["linear_solve"].end()
        self.timings["linear_solve"] += time.perf_counter() - t
        if ksp.getConvergedReason() < 0:
            raise RuntimeError(f"linear solve failed: KSP reason {ksp.getConvergedReason()}")

    def jacobian_solve(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        """Solve ``J(X) x = b`` with the Jacobian at the current ``X`` (tangents, linearised
        solutions)."""
        self.assemble_jacobian(self.X, self.J)
        self._linear_solve(b, x)

    def solve(self) -> SolveResult:
        """Newton from the current ``X``; ``X`` holds the last iterate afterwards.

        With :attr:`resume_newton` set (restart from a checkpoint taken at Newton
        iteration k), this call continues that solve: the same stopping targets (the
        relative tolerance refers to the first residual of the interrupted solve), the
        remaining iteration budget, and the joined residual history.
        """
        resume, self.resume_newton = self.resume_newton, None
        self._history, self._its0, saved = [], 0, None
        if resume:
            hist = [float(f) for f in resume["history"]]
            self._its0 = int(resume["iteration"])
            self._history = hist[:-1]  # the monitor appends |F(X)| again at iteration 0
            rtol, _, _, max_it = self.snes.getTolerances()
            f_now = self.residual_norm()
            if hist and f_now <= rtol * hist[0]:  # interrupted just before SNES saw it converge
                return SolveResult(True, "converged_fnorm_relative", self._its0, 0, self._history + [f_now], 0.0)
            saved = self.snes.getTolerances()
            self.snes.setTolerances(rtol=rtol * hist[0] / f_now if hist and f_now > 0 else rtol,
                                    max_it=max(1, max_it - self._its0))
        self._t0 = time.perf_counter()
        lin0 = self.snes.getLinearSolveIterations()
        X0 = self.X.copy() if self.linear == "multigrid" and not resume else None
        try:
            self.snes.solve(None, self.X)
        except _Stalled as e:
            log.info("Newton %s", e)
            return SolveResult(False, "stalled", len(self._history) - 1 + self._its0,
                               self.snes.getLinearSolveIterations() - lin0, list(self._history),
                               time.perf_counter() - self._t0)
        except PETSc.Error as e:  # e.g. a failed factorisation: report, do not crash
            log.warning("Newton raised PETSc error %s", getattr(e, "ierr", e))
            return SolveResult(False, "petsc_error", self.snes.getIterationNumber() + self._its0, 0,
                               list(self._history), time.perf_counter() - self._t0)
        finally:
            if saved is not None:
                self.snes.setTolerances(*saved)
        r = self.snes.getConvergedReason()
        if X0 is not None:  # a failed multigrid solve: the same Newton solve again with LU
            retry = r == PETSc.SNES.ConvergedReason.DIVERGED_LINEAR_SOLVE and \
                self.fall_back_to_direct("Newton stopped: diverged_linear_solve")
            if retry:
                X0.copy(self.X)
            X0.destroy()
            if retry:
                return self.solve()
        reason = _REASONS.get(r, str(r)).lower()
        ok = r > 0
        if ok and self._history:
            # a tiny step (stol) is no convergence unless the residual is small too
            rtol, atol, _, _ = self.snes.getTolerances()
            f = self._history[-1]
            ok = f <= max(atol, rtol * self._history[0]) * 1.0000001 or f == 0.0
            if not ok:
                reason = f"stagnated ({reason}, |F| = {f:.3e})"
        return SolveResult(ok, reason, self.snes.getIterationNumber() + self._its0,
                           self.snes.getLinearSolveIterations() - lin0, list(self._history),
                           time.perf_counter() - self._t0)

    def residual_norm(self) -> float:
        self._residual(None, self.X, self.F)
        return self.F.norm()

    def state(self) -> np.ndarray:
        """The whole solution ``Z[n, i, a]`` on every rank (small meshes, tests)."""
        return self.mesh.gather(self.X)

    def destroy(self) -> None:
        for o in (self.snes, self.J, self.X, self.F):
            o.destroy()
        self.mesh.destroy()

    def with_discretisation(self, **changes) -> Discretisation:
        return dataclasses.replace(self.d, **changes)
