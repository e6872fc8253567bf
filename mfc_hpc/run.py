"""The solve driver: grid sequencing, continuation, diagnostics and output of one run.

``solve_config`` is what ``mfc-hpc solve`` runs; it is collective over the communicator.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from petsc4py import PETSc

from .config import Config, ConfigError
from .continuation import continue_parameter
from .diagnostics import diagnostics
from .problem import boundary_data, discretisation
from .solver import MeshSolver

__all__ = ["SolveFailed", "build_solver", "solve_config", "solve_on", "phase_times", "EXIT_NOT_CONVERGED"]

log = logging.getLogger(__name__.split(".")[-1])

#: exit status of ``mfc-hpc solve`` when Newton (and every fallback) failed
EXIT_NOT_CONVERGED = 3


class SolveFailed(RuntimeError):
    """Newton and every fallback failed; the message says where."""


def build_solver(cfg: Config, comm: PETSc.Comm | None = None, da: PETSc.DMDA | None = None,
                 M: int | None = None, N: int | None = None, verbose: bool = True) -> MeshSolver:
    """A :class:`MeshSolver` for ``cfg`` (optionally on a coarser ``M x N`` mesh or DMDA)."""
    if M is not None or N is not None:
        cfg = cfg.replace(mesh={"nodes": M or cfg.mesh.nodes, "layers": N or cfg.mesh.layers})
    s = cfg.solver
    return MeshSolver(discretisation(cfg), boundary_data(cfg), rtol=s.rtol, atol=s.atol, stol=s.stol,
                      max_it=s.max_it, positivity=s.positivity, proc_grid=s.process_grid,
                      comm=comm, da=da, verbose=verbose, linear=s.linear)


def solve_on(ms: MeshSolver, cfg: Config, *, try_direct: bool = True, resume: dict | None = None) -> dict:
    """Solve on one mesh from the current ``ms.X``; continuation when needed (collective).

    Returns a record of the stages: direct Newton, then (if it failed, or if
    ``solver.continuation = "always"``) the uncontrolled flow at loss weight 0, the
    loss weight 0 -> 1 with tangent predictor, and nu from ``solver.nu_start`` down.

    ``resume`` (a checkpoint's cursor, :mod:`mfc_hpc.checkpoint`, with ``ms.X`` and the
    parameters already loaded) continues an interrupted solve from its ``phase``
    (``direct``, ``loss0``, ``loss``, ``nu`` or ``done``).
    """
    s = cfg.solver
    nu = cfg.model.nu
    rec: dict = resume["record"] if resume else {"stages": [], "newton_iterations": 0}
    phase = resume["phase"] if resume else "direct"
    ck = getattr(ms, "checkpointer", None)
    if ck is not None:
        ck.enter(phase, rec)
    if phase == "done":
        return rec

    def stage(kind: str, r) -> None:
        rec["stages"].append({"param": kind, "value": None, "converged": r.converged,
                              "iterations": r.iterations, "reason": r.reason,
                              "residuals": r.residuals, "wall": r.wall})
        rec["newton_iterations"] += r.iterations

    # the bridge's hard terminal condition is never reached by direct Newton from the
    # uncontrolled flow: go straight to continuation (it starts exactly there)
    direct_first = s.continuation != "always" and cfg.loss.kind != "bridge"
    if phase == "direct" and try_direct and direct_first:
        if ck is not None:
            ck.enter("direct", rec)
        r = ms.solve()
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
    if phase in ("direct", "loss0"):
        ms.set_problem(d=dataclasses.replace(ms.d, nu=nu0))
        ms.bd.scale = 0.0
        if phase == "direct":  # (resumed in loss0: ms.X is the checkpointed iterate)
            ms.uncontrolled_guess()
        if ck is not None:
            ck.enter("loss0", rec)
        r = ms.solve()
        stage("loss=0", r)
        if not r.converged:
            rec["converged"] = False
            rec["failure"] = f"Newton failed at loss weight 0 ({r.reason})"
            return rec
        if ck is not None:
            ck.enter("loss", rec)
            ck.safe_point(ms)
    progress = log.info
    if phase in ("direct", "loss0", "loss"):
        c = continue_parameter(ms, "loss", 0.0, 1.0, first_step=1.0 / s.loss_steps, min_step=s.min_step,
                               max_stages=s.max_stages, progress=progress,
                               resume=resume.get("cont") if resume and phase == "loss" else None)
        if not _absorb(rec, c, f"loss-weight continuation stalled at {c.value:.4g} of 1"):
            return rec
        if ck is not None and nu0 != nu:
            ck.enter("nu", rec)
            ck.safe_point(ms)
    if nu0 != nu:
        import math
        c = continue_parameter(ms, "nu", nu0, nu, geometric=True, first_step=math.log(nu0 / nu) / s.loss_steps,
                               min_step=s.min_step, max_stages=s.max_stages, progress=progress,
                               resume=resume.get("cont") if resume and phase == "nu" else None)
        if not _absorb(rec, c, f"nu continuation stalled at nu = {c.value:.4g} (target {nu:g})"):
            return rec
    rec["converged"] = True
    return rec


def _absorb(rec: dict, c, failure: str) -> bool:
    """Add a continuation's stages to the record; on a stall mark it failed (False)."""
    rec["stages"] += c.stages
    rec["newton_iterations"] += c.newton_iterations
    if not c.converged:
        rec["converged"] = False
        rec["failure"] = failure
    return c.converged


#: losses whose training problem :mod:`mfc_hpc.optimality` minimises (a fixed ``G_c``)
_OPTIMISABLE = ("quadratic", "softmax")


def optimisation_solve(ms: MeshSolver, cfg: Config, rec: dict) -> dict:
    """Newton at the full loss weight and target ``nu`` from the minimiser of the discrete
    training problem (serial L-BFGS on rank 0, :func:`mfc_hpc.optimality.minimise`).

    Continuation follows one branch of KKT points; for several classes it may end at a
    fold while the minimiser lies on another branch (METHOD.md 2: not convex). L-BFGS runs
    in chunks of ``solver.optimisation_chunk`` iterations (at most
    ``solver.optimisation_maxiter`` in all); after each chunk Newton is tried from the KKT
    state of the current network (:func:`mfc_hpc.optimality.kkt_state`) and the search
    stops as soon as Newton converges: Newton needs a far less converged minimiser than
    L-BFGS would take to reach its own tolerance (iris, gamma 10, nu 0.01, 65 x 128: the
    largest log-tilt gradient 3e-2 after 3000 iterations, Newton fails; 3e-4 after 8000,
    Newton converges in 2). ``rec`` gets one stage appended per Newton attempt.
    """
    from .optimality import kkt_state, minimise

    s = cfg.solver
    lcfg = cfg.replace(mesh={"nodes": ms.d.M, "layers": ms.d.N})
    comm = ms.mesh.comm.tompi4py()
    ms.set_problem(d=dataclasses.replace(ms.d, nu=cfg.model.nu))
    ms.bd.scale = 1.0
    rec = dict(rec)
    rec["stages"] = list(rec.get("stages", []))
    theta, done_its, t_opt, r = None, 0, 0.0, None
    if comm.rank == 0:
        d, bd = discretisation(lcfg), boundary_data(lcfg, 1.0)
    while done_its < s.optimisation_maxiter:
        t0 = time.perf_counter()
        chunk = min(s.optimisation_chunk, s.optimisation_maxiter - done_its)
        Z, info = None, {}
        if comm.rank == 0:
            o = minimise(d, bd, theta0=theta, gtol=1e-6, maxiter=chunk)
            theta = o["theta"]
            info = {k: v for k, v in o.items() if isinstance(v, (int, float, str, bool))}
            Z = kkt_state(theta, d, bd)
        Z, info = comm.bcast((Z, info), root=0)
        done_its += max(int(info.get("iterations", chunk)), 1)
        ms.mesh.set_owned(ms.X, Z)
        dt_opt = time.perf_counter() - t0
        t_opt += dt_opt
        r = ms.solve()
        log.info("optimisation guess after %d L-BFGS iterations (%.1f s, gradient %.2e): Newton %s in %d "
                 "iterations", done_its, t_opt, info.get("gradient_max", float("nan")),
                 "converged" if r.converged else f"failed ({r.reason})", r.iterations)
        rec["stages"].append({
            "param": "optimisation", "value": 1.0, "converged": r.converged, "iterations": r.iterations,
            "reason": r.reason, "residuals": r.residuals, "wall": r.wall + dt_opt,
            "lbfgs_iterations_total": done_its, "lbfgs": info})
        rec["newton_iterations"] = rec.get("newton_iterations", 0) + r.iterations
        if r.converged or info.get("success"):  # converged, or L-BFGS has nothing more to give
            break
    rec["converged"] = bool(r is not None and r.converged)
    if rec["converged"]:
        rec.pop("failure", None)
    else:
        rec["failure"] = (rec.get("failure", "") + "; " if rec.get("failure") else "") + \
            f"Newton from the optimisation guess failed ({r.reason if r else 'no attempt'}) " \
            f"after {done_its} L-BFGS iterations"
    return rec


def _levels(cfg: Config) -> list[tuple[int, int]]:
    L = cfg.solver.grid_levels
    M, N = cfg.mesh.nodes, cfg.mesh.layers
    f = 2 ** L
    if L and ((M - 1) % f or N % f or (M - 1) // f < 2 or N // f < 1):
        raise ConfigError(f"solver.grid_levels: {L} levels need (nodes - 1) and layers divisible by {f} "
                          f"with at least 3 nodes on the coarsest mesh; got nodes = {M}, layers = {N}")
    return [((M - 1) // 2 ** l + 1, N // 2 ** l) for l in range(L, -1, -1)]


def phase_times() -> dict:
    """Seconds spent so far in each phase, from the PETSc log events."""
    names = {"residual": "mfc_residual", "jacobian": "mfc_jacobian", "snes_solve": "SNESSolve",
             "linear_solve": "KSPSolve", "factorisation": "MatLUFactorNum", "io": "mfc_io",
             "diagnostics": "mfc_diagnostics"}
    out = {}
    for k, v in names.items():
        try:
            out[k] = PETSc.Log.Event(v).getPerfInfo()["time"]
        except PETSc.Error:  # logging not started (PETSc.Log.begin())
            out[k] = None
    return out


def solve_config(cfg: Config, comm: PETSc.Comm | None = None, out_dir: str | Path | None = None,
                 extra_summary: dict | None = None, checkpoint=None) -> tuple[MeshSolver, dict]:
    """Run one configuration to the end: returns the fine-mesh solver and the summary.

    With ``out_dir`` it writes ``summary.json`` and ``solution.h5`` there (also when the
    solve fails: then the summary says why and the solution holds the last iterate).
    ``checkpoint``: a :class:`mfc_hpc.checkpoint.Checkpointer` that writes restart files
    at safe points and may resume from one (it can raise ``CheckpointAndExit``).
    """
    from .output import versions, write_json, write_solution

    t_start = time.perf_counter()
    comm = comm or PETSc.COMM_WORLD
    levels = _levels(cfg)
    fine = build_solver(cfg, comm)
    solvers = [fine]
    da = fine.mesh.da
    for (M, N) in reversed(levels[:-1]):
        da = da.coarsen()
        solvers.insert(0, build_solver(cfg, comm, da=da, M=M, N=N))
    t_setup = time.perf_counter() - t_start
    history = []
    ok = True
    failure = None
    prev: MeshSolver | None = None
    start, resume, seeded = 0, None, False  # restart: first level, its cursor, X loaded
    if checkpoint is not None:
        start, resume, history, seeded = checkpoint.begin(solvers, levels)
    for lev, ((M, N), ms) in enumerate(zip(levels, solvers)):
        if lev < start:  # done before the restart (its record is in history)
            prev = ms
            continue
        log.info("mesh M=%d N=%d (%d unknowns, %d ranks, process grid %s)", M, N,
                 ms.X.getSize(), comm.getSize(), ms.mesh.proc_sizes)
        cur = resume if lev == start else None
        if lev == start and seeded:
            pass  # ms.X (and the parameters) come from the checkpoint
        elif prev is None:
            ms.uncontrolled_guess()
        else:
            interp, _ = prev.mesh.da.createInterpolation(ms.mesh.da)
            interp.mult(prev.X, ms.X)
            interp.destroy()
        if cfg.solver.guess == "optimisation" and cfg.loss.kind not in _OPTIMISABLE:
            raise ConfigError(f"solver.guess: 'optimisation' needs a fixed loss (quadratic or softmax), "
                              f"not loss.kind = {cfg.loss.kind!r}")
        if cfg.solver.guess == "optimisation" and not (lev == start and seeded) and prev is None:
            rec = optimisation_solve(ms, cfg, {"stages": [], "newton_iterations": 0})
            if not rec["converged"]:
                ms.uncontrolled_guess()
        attempt = cur.get("attempt", 0) if cur else 0
        if checkpoint is not None:
            checkpoint.level(lev, levels, history, attempt=attempt, prior=cur.get("prior") if cur else None)
        if attempt == 0 and not (cfg.solver.guess == "optimisation" and prev is None and rec["converged"]):
            rec = solve_on(ms, cfg, resume=cur)
        if attempt == 1 or (not rec["converged"] and (prev is not None or (lev == start and seeded))):
            prior = cur["prior"] if attempt == 1 else rec
            if attempt == 0:
                log.info("Newton from the interpolated coarse solution failed: restart on this mesh")
                ms.uncontrolled_guess()
                if checkpoint is not None:
                    checkpoint.level(lev, levels, history, attempt=1, prior=prior)
            rec2 = solve_on(ms, cfg, try_direct=True, resume=cur if attempt == 1 else None)
            rec2["stages"] = prior["stages"] + rec2["stages"]
            rec2["newton_iterations"] += prior["newton_iterations"]
            rec = rec2
        if not rec["converged"] and cfg.solver.optimisation_fallback and cfg.solver.guess != "optimisation" \
                and cfg.solver.continuation != "never" and cfg.loss.kind in _OPTIMISABLE:
            log.info("continuation stalled (%s): Newton from the minimiser of the discrete training problem",
                     rec.get("failure"))
            rec = optimisation_solve(ms, cfg, rec)
        if checkpoint is not None and rec["converged"]:
            checkpoint.level_done(ms, rec)
        rec.update({"nodes": M, "layers": N, "unknowns": ms.X.getSize()})
        history.append(rec)
        if not rec["converged"]:
            ok = False
            failure = f"mesh {M}x{N}: {rec.get('failure', 'Newton did not converge')}"
            break
        prev = ms
    ms = solvers[-1] if ok else ms
    PETSc.Log.Event("mfc_diagnostics").begin()
    diag = diagnostics(ms.mesh, ms.X, ms.d, ms.bd)
    PETSc.Log.Event("mfc_diagnostics").end()
    zero = zero_network_cost(cfg, comm) if ok else None
    wall = time.perf_counter() - t_start
    summary = {
        "converged": ok,
        "failure": failure,
        "config": cfg.to_dict(),
        "versions": versions(),
        "ranks": comm.getSize(),
        "process_grid": list(ms.mesh.proc_sizes),
        "linear_solver": ms.linear,
        "mesh": {"nodes": ms.d.M, "layers": ms.d.N, "classes": ms.d.K, "unknowns": ms.X.getSize(),
                 "h": ms.d.h, "dt": ms.d.dt},
        "newton": history,
        "newton_iterations_fine": history[-1]["newton_iterations"] if history else 0,
        "diagnostics": diag,
        "zero_network_cost": zero,
        "timings": {"setup": t_setup, "total": wall, **phase_times()},
    }
    if checkpoint is not None:
        summary["checkpoint"] = checkpoint.summary()
    if extra_summary:
        summary.update(extra_summary)
    if out_dir is not None:
        out = Path(out_dir)
        if comm.getRank() == 0:
            out.mkdir(parents=True, exist_ok=True)
        comm.tompi4py().Barrier()
        write_solution(out / "solution.h5", ms.mesh, ms.X,
                       attrs={"config": cfg.to_dict(), "versions": summary["versions"],
                              "converged": ok})
        summary["timings"] = {"setup": t_setup, "total": time.perf_counter() - t_start, **phase_times()}
        if comm.getRank() == 0:
            write_json(out / "summary.json", summary)
    for s in solvers[:-1]:
        s.destroy()
    return ms, summary


def zero_network_cost(cfg: Config, comm: PETSc.Comm | None = None) -> dict:
    """Cost ``J_h`` of the zero network (``E = 1``, log-tilts ``theta = 0``: data only
    diffused), split as ``diagnostics(...)["cost"]``: ``kinetic`` (0 at ``E = 1``),
    ``running``, ``terminal`` and their ``total`` (collective; the same dict on every rank).

    For the fixed terminal losses (``quadratic``, ``softmax``: ``phi^N = -G``) and the
    midpoint scheme it is the serial midpoint walk with zero tilts on rank 0
    (:func:`_zero_network_cost_walk`, ``O(K M N)`` work), broadcast; for the other
    terminal costs (``kl``, ``bridge``) and the ``euler`` scheme, the uncontrolled flow on
    the distributed mesh (:func:`_zero_network_cost_mesh`).
    """
    comm = comm or PETSc.COMM_WORLD
    if cfg.loss.kind not in _OPTIMISABLE or cfg.model.scheme != "midpoint":
        return _zero_network_cost_mesh(cfg, comm)
    mpi = comm.tompi4py()
    res: dict | BaseException | None = None
    if mpi.rank == 0:
        try:
            res = _zero_network_cost_walk(cfg)
        except Exception as e:  # raised on every rank below, not only on rank 0
            res = e
    res = mpi.bcast(res, root=0)
    if isinstance(res, BaseException):
        raise res
    return res


def _zero_network_cost_walk(cfg: Config, block: int = 1 << 22) -> dict:
    """``J_h`` of the zero network by the serial midpoint walk (one process).

    ``rho^{n+1}`` from ``rho^n`` by :func:`mfc_hpc.optimality.forward_walk` with
    ``theta_r = theta_l = 0`` and the parts by :func:`mfc_hpc.optimality.training_cost`,
    in blocks of layers of at most ``block`` values of ``rho`` (memory ``O(K M)`` per
    block, not ``O(K M N)``): the kinetic and running parts are sums over layers, the
    terminal part is that of the last block's ``rho^N``.
    """
    import numpy as np

    from .optimality import _check_fixed_terminal, forward_walk, training_cost

    d, bd = discretisation(cfg), boundary_data(cfg)
    _check_fixed_terminal(bd)
    step = max(1, min(d.N, block // (d.K * d.M)))
    zero = np.zeros((step, d.M - 1))
    rho_n = bd.rho0
    kinetic = running = terminal = 0.0
    for n0 in range(0, d.N, step):
        th = zero[: min(step, d.N - n0)]
        rho = forward_walk(rho_n, th, th, d)
        c = training_cost(rho, th, th, d, bd)
        kinetic += c["kinetic"]
        running += c["running"]
        terminal = c["terminal"]
        rho_n = rho[-1]
    return {"kinetic": kinetic, "running": running, "terminal": terminal,
            "total": kinetic + running + terminal}


def _zero_network_cost_mesh(cfg: Config, comm: PETSc.Comm | None = None) -> dict:
    """``J_h`` of the zero network on the distributed mesh (collective): the uncontrolled
    flow (one linear solve of the whole system) with the adjoint set to zero, evaluated by
    :func:`mfc_hpc.diagnostics.diagnostics`. Any terminal cost and scheme."""
    ms = build_solver(cfg, comm, verbose=False)
    ms.bd.scale = 0.0
    ms.uncontrolled_guess()  # density moved by the plain walk; phi irrelevant at E = 1
    ms.bd.scale = 1.0
    # the zero network has E = 1: evaluate with a flat adjoint
    Z = ms.mesh.owned(ms.X, readonly=False)
    Z[..., ms.d.K:] = 0.0
    del Z
    diag = diagnostics(ms.mesh, ms.X, ms.d, ms.bd)
    ms.destroy()
    return diag["cost"]
