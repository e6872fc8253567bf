"""PETSc Newton (SNES) for the discrete optimality system on one depth-time mesh.

The object wires the residual and the analytic Jacobian of :mod:`mfc_hpc.numerics.depth`
into a SNES on the :class:`~mfc_hpc.parallel.mesh.DepthTimeMesh`, owns its PETSc options
(:class:`~mfc_hpc.parallel.options.SolverOptions`: Newton with a backtracking line search
and the linear solver of :mod:`mfc_hpc.parallel.linear`, any ``-<prefix>*`` option
overrides), caps steps with :func:`~mfc_hpc.numerics.reference.step_cap` and times every
phase as a PETSc log event. It knows nothing of continuation or checkpoints: the driver
passes an ``iteration_hook`` called after every Newton iteration.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from petsc4py import PETSc

from ..errors import BadInput
from ..numerics.depth import slab_jacobian_fields, slab_residual
from ..numerics.model import Discretisation
from ..numerics.reference import step_cap, tail_thresholds
from ..numerics.terminal import BoundaryData
from .events import EVENTS
from .coarse import COARSE_OPERATORS, CoarseOperators
from .linear import choose_linear, multigrid_levels, preset
from .mesh import DepthTimeMesh
from .options import PREFIX, SolverOptions, check_user_options, petsc_error_message
from .pattern import JacobianPattern

__all__ = ["NewtonSettings", "NewtonCursor", "SolveResult", "MeshSolver"]

log = logging.getLogger(__name__.split(".")[-1])


@dataclass(frozen=True)
class NewtonSettings:
    """Tolerances and choices of one Newton solver (``solver.*`` of the configuration).

    ``atol`` is relative to ``|F(0)|`` (the size of the boundary data): rows scale with the
    cell volume. A solve whose ``|F|`` has not fallen below ``stall_factor`` times its value
    ``stall_window`` steps earlier stops as ``stalled`` (0 disables).
    """

    rtol: float = 1e-10
    atol: float = 1e-11
    stol: float = 1e-14
    max_it: int = 30
    positivity: float = 0.9
    step_cap: str = "bulk"
    linear: str = "auto"
    process_grid: tuple[int, ...] | None = None
    stall_window: int = 6
    stall_factor: float = 0.999


@dataclass
class NewtonCursor:
    """Where a Newton solve stands: its iteration count and ``|F|`` history (restart)."""

    iteration: int
    history: list[float]


class _Stalled(Exception):
    """Raised from the Newton monitor when |F| stops falling."""


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
    d, bd
        Discretisation and boundary data (initial densities, terminal condition).
    settings
        :class:`NewtonSettings`.
    comm, da
        Communicator; an existing DMDA to use (grid sequencing coarsens one).
    prefix, parent
        Options prefix (``-mfc_snes_*``, ``-mfc_ksp_*``, ``-mfc_pc_*``) and the prefix whose
        user options this solver inherits (coarse grid-sequencing levels: ``mfc_``).

    Notes
    -----
    ``-mfc_snes_fd_color`` replaces the analytic Jacobian by finite differences with
    colouring (for checking); ``-mfc_ksp_type``/``-mfc_pc_type`` replace the linear solver.
    """

    def __init__(self, d: Discretisation, bd: BoundaryData, settings: NewtonSettings | None = None, *,
                 comm: PETSc.Comm | None = None, da: PETSc.DMDA | None = None, prefix: str = PREFIX,
                 parent: str | None = None, verbose: bool = True) -> None:
        self.d, self.bd = d, bd
        st = settings or NewtonSettings()
        self.settings = st
        self.prefix = prefix
        self.verbose = verbose
        check_user_options()  # bad values of -mfc_* options: one line naming the option, before any work
        self.linear = choose_linear(d, st.linear)
        self.options = SolverOptions(prefix, {}, parent)
        if self.options.has_user("ksp_type") or self.options.has_user("pc_type"):
            self.linear = "options"
        proc_grid = st.process_grid
        if self.linear == "multigrid" and da is None and (proc_grid is None or not any(proc_grid)):
            # ranks split along depth: the block-Jacobi smoother then cuts only the
            # couplings of one layer and the iteration count does not grow with the ranks
            proc_grid = (1,) * d.ndim + (0,)
        self.mesh = DepthTimeMesh(d, comm, proc_grid, prefix, da=da)
        #: ``-<prefix>jacobian_preallocation exact|box``: the entries the scheme sets
        #: (default) or the DMDA's full box stencil (the layout before the d-dimensional
        #: core, for comparisons; it reproduces that release's MUMPS pivoting bit for bit)
        self.preallocation = PETSc.Options(prefix).getString("jacobian_preallocation", "exact")
        if self.preallocation not in ("exact", "box"):
            raise BadInput(f"PETSc option -{prefix}jacobian_preallocation: expected exact or box, "
                           f"got {self.preallocation!r}")
        self.pattern = JacobianPattern(self.mesh, ijv=self.preallocation == "box")
        self.X = self.mesh.create_vec()
        self.F = self.mesh.create_vec()
        self.J = self.pattern.create_matrix() if self.preallocation == "exact" else self._box_matrix()
        #: ``-<prefix>mg_coarse_operators galerkin|rediscretised``: the multigrid's coarse
        #: matrices as Galerkin products (default) or the scheme's Jacobian on each coarser
        #: mesh at the injected iterate (:mod:`mfc_hpc.parallel.coarse`)
        self.coarse_operators = PETSc.Options(prefix).getString("mg_coarse_operators", "galerkin")
        if self.coarse_operators not in COARSE_OPERATORS:
            raise BadInput(f"PETSc option -{prefix}mg_coarse_operators: expected {' or '.join(COARSE_OPERATORS)}, "
                           f"got {self.coarse_operators!r}")
        self._coarse: CoarseOperators | None = None
        if self.coarse_operators == "rediscretised":
            if not getattr(bd, "fixed_loss", True):
                raise BadInput(f"PETSc option -{prefix}mg_coarse_operators rediscretised: only for the fixed "
                               f"losses (quadratic, softmax)")
            self._coarse = CoarseOperators(d, self.mesh.da, bd)
            self.mesh.da.setKSPComputeOperators(self._coarse)
        self.timings = {k: 0.0 for k in ("residual", "jacobian", "linear_solve")}
        self.counts = {k: 0 for k in ("residual", "jacobian")}
        #: ``hook(iteration, fnorm, history, first)`` after every Newton iteration (the
        #: driver's; ``first``: the first call of this solve, no step taken yet); may
        #: raise, and the exception propagates out of :meth:`solve`
        self.iteration_hook: Callable[[int, float, list[float], bool], None] | None = None
        self._history: list[float] = []
        self._its0 = 0
        self._t0 = 0.0
        self._mumps = PETSc.Sys.hasExternalPackage("mumps")
        snes = PETSc.SNES().create(self.mesh.comm)
        snes.setOptionsPrefix(prefix)
        snes.setDM(self.mesh.da)
        snes.setFunction(self._residual, self.F)
        snes.setJacobian(self._jacobian, self.J)
        self.snes = snes
        self._set_defaults()
        snes.setLineSearchPreCheck(self._precheck)
        snes.setMonitor(self._monitor)
        self.options.set_from_options(snes, self._fresh_snes)
        self._set_tolerances()

    def _fresh_snes(self) -> PETSc.SNES:
        """A new SNES like this one (prefix, DMDA) for finding which option PETSc refuses."""
        s = PETSc.SNES().create(self.mesh.comm)
        s.setOptionsPrefix(self.prefix)
        s.setDM(self.mesh.da)
        return s

    def _box_matrix(self) -> PETSc.Mat:
        A = self.mesh.da.createMatrix()
        A.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        A.setOption(PETSc.Mat.Option.NO_OFF_PROC_ENTRIES, True)
        return A

    # ------------------------------------------------------------------ options
    def _linear_defaults(self) -> dict[str, str]:
        if self.linear == "options":
            return {}
        factor = self._mumps or self.mesh.comm.getSize() == 1 or not PETSc.Sys.hasExternalPackage("superlu_dist")
        out = preset(self.linear, self._mumps, multigrid_levels(self.d.grid.nodes, self.d.N))
        if self.linear == "multigrid" and self._coarse is not None:
            out["pc_mg_galerkin"] = "none"
        if self.linear == "direct" and not factor:
            out["pc_factor_mat_solver_type"] = "superlu_dist"
        return out

    def _set_defaults(self) -> None:
        self.options.set_defaults({"snes_type": "newtonls", **self._linear_defaults()})

    def fall_back_to_direct(self, why: str) -> bool:
        """Switch an automatic multigrid solver to LU after a failed linear solve;
        ``False`` if there is nothing to fall back to."""
        if self.linear != "multigrid":
            return False
        log.warning("multigrid linear solve failed (%s): switching to the direct solver", why)
        self.linear = "direct"
        self._set_defaults()
        ksp = self.snes.getKSP()
        ksp.reset()
        self.options.set_from_options(ksp)
        return True

    def _set_tolerances(self) -> None:
        st = self.settings
        self.X.zeroEntries()
        self._residual(None, self.X, self.F)
        self.scale = self.F.norm() or 1.0
        has = self.options.has_user
        self.snes.setTolerances(
            rtol=None if has("snes_rtol") else st.rtol,
            atol=None if has("snes_atol") else st.atol * self.scale,
            stol=None if has("snes_stol") else st.stol,
            max_it=None if has("snes_max_it") else st.max_it)
        rtol, atol, stol, max_it = self.snes.getTolerances()
        for name, v, ok in (("snes_rtol", rtol, 0.0 <= rtol < 1.0), ("snes_atol", atol, atol >= 0.0),
                            ("snes_stol", stol, stol >= 0.0), ("snes_max_it", max_it, max_it >= 1)):
            if not ok or not np.isfinite(v):
                raise BadInput(f"PETSc option -{self.prefix}{name}: {v:g} is out of range "
                               f"(rtol and stol in [0, 1), atol >= 0, max_it >= 1)")

    # ------------------------------------------------------------------ callbacks
    def _residual(self, snes, X: PETSc.Vec, F: PETSc.Vec) -> None:
        t = time.perf_counter()
        EVENTS["residual"].begin()
        Zg = self.mesh.ghosted(X)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # trial points may overflow
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
        """Assemble the analytic Jacobian at ``X`` into ``P``, one chunk of levels at a time
        (vectorised over each chunk; gathered straight into the matrix's value arrays,
        :mod:`mfc_hpc.parallel.pattern`)."""
        t = time.perf_counter()
        EVENTS["jacobian"].begin()
        if self._coarse is not None:
            self._coarse.remember(X, uncontrolled)
        Zg = self.mesh.ghosted(X)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for chunk in self.pattern.chunks:
                VF = slab_jacobian_fields(Zg, chunk.slab, self.d, self.bd, uncontrolled=uncontrolled)
                self.pattern.insert(P, chunk, VF)
                del VF
        P.assemble()
        EVENTS["jacobian"].end()
        self.timings["jacobian"] += time.perf_counter() - t
        self.counts["jacobian"] += 1

    def _precheck(self, X: PETSc.Vec, Y: PETSc.Vec) -> bool:
        """Shorten the step ``X - Y`` by :func:`~mfc_hpc.numerics.reference.step_cap`
        (``R = rho + eta`` positive at every node and level, and the bulk of every class;
        METHOD.md 7, 8)."""
        if self.d.unit_fraction:
            return False
        Zx = self.mesh.owned(X)
        tails = tail_thresholds(Zx, self.d.K, self.mesh.allmax) if self.settings.step_cap == "bulk" else None
        a = step_cap(Zx, self.mesh.owned(Y), self.d, self.settings.positivity, self.settings.step_cap, tails)
        a = self.mesh.allmin(a)
        if a < 1.0:
            Y.scale(a)
            return True
        return False

    def _monitor(self, snes, its: int, fnorm: float) -> None:
        self._history.append(float(fnorm))
        if self.verbose:
            log.info("  Newton %2d  |F| %.3e  lin %3d  %.2fs", its + self._its0, fnorm,
                     snes.getLinearSolveIterations(), time.perf_counter() - self._t0)
        if self.iteration_hook is not None:  # may raise (checkpoint and exit): propagates out of solve()
            self.iteration_hook(its + self._its0, float(fnorm), list(self._history), its == 0)
        w = self.settings.stall_window
        if w and len(self._history) > w and not fnorm < self.settings.stall_factor * self._history[-1 - w]:
            # damped steps that no longer reduce |F|: stop now instead of spending max_it
            # factorisations; the caller then continues in a parameter instead
            raise _Stalled(f"stalled: |F| {fnorm:.3e} not below {self.settings.stall_factor:g} x its value "
                           f"{w} Newton steps earlier")

    # ------------------------------------------------------------------ problem
    def set_problem(self, d: Discretisation | None = None, bd: BoundaryData | None = None) -> None:
        """Change constants (``nu``) or boundary data (loss weight) between solves."""
        if d is not None:
            if (d.K, d.grid.nodes, d.N) != (self.d.K, self.d.grid.nodes, self.d.N):
                raise ValueError("set_problem: the mesh cannot change")
            self.d = d
        if bd is not None:
            self.bd = bd

    def with_nu(self, nu: float) -> None:
        self.set_problem(d=dataclasses.replace(self.d, nu=nu))

    # ------------------------------------------------------------------ solves
    def _linear_solve(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        t = time.perf_counter()
        EVENTS["linear_solve"].begin()
        ksp = self.snes.getKSP()
        ksp.setOperators(self.J, self.J)
        with self.options.inserted():
            ksp.solve(b, x)
            if ksp.getConvergedReason() < 0 and self.fall_back_to_direct(f"KSP reason {ksp.getConvergedReason()}"):
                ksp.setOperators(self.J, self.J)
                ksp.solve(b, x)
        EVENTS["linear_solve"].end()
        self.timings["linear_solve"] += time.perf_counter() - t
        if ksp.getConvergedReason() < 0:
            raise RuntimeError(f"linear solve failed: KSP reason {ksp.getConvergedReason()}")

    def uncontrolled_guess(self) -> None:
        """``X <-`` the uncontrolled flow: data diffused forward, ``-G`` diffused backward."""
        self.X.zeroEntries()
        self._residual(None, self.X, self.F)
        self.assemble_jacobian(self.X, self.J, uncontrolled=True)
        y = self.X.duplicate()
        self._linear_solve(self.F, y)
        self.X.axpy(-1.0, y)
        y.destroy()

    def jacobian_solve(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        """Solve ``J(X) x = b`` with the Jacobian at the current ``X`` (tangents, linearised
        solutions)."""
        self.assemble_jacobian(self.X, self.J)
        self._linear_solve(b, x)

    def solve(self, resume: NewtonCursor | None = None) -> SolveResult:
        """Newton from the current ``X``; ``X`` holds the last iterate afterwards.

        ``resume`` (restart from a checkpoint taken at Newton iteration k) continues that
        solve: the same stopping targets (the relative tolerance refers to the first
        residual of the interrupted solve), the remaining iteration budget and the joined
        residual history.
        """
        self._history, self._its0, saved = [], 0, None
        if resume is not None:
            hist = [float(f) for f in resume.history]
            self._its0 = int(resume.iteration)
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
        X0 = self.X.copy() if self.linear == "multigrid" and resume is None else None
        try:
            with self.options.inserted():
                self.snes.solve(None, self.X)
        except _Stalled as e:
            log.info("Newton %s", e)
            return SolveResult(False, "stalled", len(self._history) - 1 + self._its0,
                               self.snes.getLinearSolveIterations() - lin0, list(self._history),
                               time.perf_counter() - self._t0)
        except PETSc.Error as e:  # e.g. a failed factorisation: report, do not crash
            log.warning("Newton raised %s", petsc_error_message(e))
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
        if ok and not np.isfinite(self._history[-1] if self._history else 0.0):
            ok, reason = False, "non-finite residual"
        return SolveResult(ok, reason, self.snes.getIterationNumber() + self._its0,
                           self.snes.getLinearSolveIterations() - lin0, list(self._history),
                           time.perf_counter() - self._t0)

    def residual_norm(self) -> float:
        self._residual(None, self.X, self.F)
        return self.F.norm()

    def matrix_info(self) -> dict:
        """Entries allocated and set per row of the Jacobian (global averages)."""
        info = self.J.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)
        rows = self.J.getSize()[0]
        set_entries = self.mesh.allsum(self.pattern.set_entries)
        # the exact matrix lives on the pattern's arrays (PETSc allocated none of it)
        allocated = info["nz_allocated"] if self.preallocation == "box" else \
            self.mesh.allsum(self.pattern.stored_entries)
        return {"rows": rows, "allocated_per_row": allocated / rows,
                "used_per_row": info["nz_used"] / rows, "set_per_row": set_entries / rows}

    def destroy(self) -> None:
        """Free the PETSc objects and drop the assembly plan and the hook. A destroyed
        solver that is still referenced (a loop variable until the next solver is built,
        a driver's closure) used to keep the plan's index arrays (about 40 MB at
        33^2 x 16, 2 GB at 129^2 x 64), so a second solve in the same process (benchmark
        repeats, a sweep's points) peaked with both plans."""
        if self._coarse is not None:
            self._coarse.destroy()
        for o in (self.snes, self.J, self.X, self.F):
            o.destroy()
        self.mesh.destroy()
        self.pattern = None
        self._coarse = None
        self.iteration_hook = None
        self._history = []
