"""The optimisation route: Newton from the minimiser of the discrete training problem.

Continuation follows one branch of KKT points; for several classes it may end at a fold
while the minimiser of ``J_h`` lies on another branch (METHOD.md 2: not convex). The
minimiser runs in chunks of ``solver.optimisation_chunk`` iterations (at most
``solver.optimisation_maxiter`` in all); after each chunk Newton is tried from the KKT state
of the current network (``rho`` of its walk, ``phi`` its adjoint) and the search stops as
soon as Newton converges: Newton needs a far less converged minimiser than the
quasi-Newton method would take to reach its own tolerance.

The minimiser is PETSc TAO (:class:`~mfc_hpc.parallel.tao.TiltMinimiser`, ``blmvm`` by
default, options ``-mfc_tao_*``) on the distributed log-tilts of
:class:`~mfc_hpc.parallel.training.TiltMesh`: every rank holds the tilts, densities and
adjoints of its own layers, the walk and the adjoint sweep are pipelined along depth, and
the KKT state is written into the mesh's Vec where it lies (no gather). See
``mfc_hpc/docs/optimisation.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import time

from ..parallel.events import EVENTS
from ..parallel.snes import MeshSolver
from ..parallel.tao import TiltMinimiser
from ..parallel.training import TiltMesh

__all__ = ["optimisation_solve", "zero_network_walk"]

log = logging.getLogger(__name__.split(".")[-1])


def optimisation_solve(ms: MeshSolver, bd_full, solver_cfg, nu: float, rec: dict, newton=None) -> dict:
    """Newton at the full loss weight and target ``nu`` from the minimiser (collective).

    ``bd_full`` is the boundary data at loss weight 1 of the solver's mesh; ``rec`` gets one
    stage per Newton attempt; ``newton(ms)`` runs one Newton solve (the driver's, so that
    its observers see the iterations).
    """
    s = solver_cfg
    ms.set_problem(d=dataclasses.replace(ms.d, nu=nu))
    ms.bd.scale = 1.0
    rec = dict(rec)
    rec["stages"] = list(rec.get("stages", []))
    done_its, t_opt, r = 0, 0.0, None
    tm = TiltMesh(ms.d, bd_full, mesh=ms.mesh)
    opt = TiltMinimiser(tm)
    theta = tm.create_vec()  # the zero network, perturbed (solver.optimisation_perturbation)
    tm.perturb(theta, s.optimisation_perturbation)
    try:
        while done_its < s.optimisation_maxiter:
            t0 = time.perf_counter()
            chunk = min(s.optimisation_chunk, s.optimisation_maxiter - done_its)
            EVENTS["optimisation"].begin()
            o = opt.minimise(theta, chunk, gtol=1e-6)
            tm.kkt_state(theta, ms.X, ms.mesh)
            EVENTS["optimisation"].end()
            info = o.info()
            info["tao_type"] = opt.type
            done_its += max(o.iterations, 1)
            dt_opt = time.perf_counter() - t0
            t_opt += dt_opt
            r = newton(ms)
            log.info("optimisation guess after %d %s iterations (%.1f s, J_h %.6g, gradient %.2e): Newton %s in %d "
                     "iterations", done_its, info["tao_type"], t_opt, o.cost["total"], o.gradient_max,
                     "converged" if r.converged else f"failed ({r.reason})", r.iterations)
            rec["stages"].append({
                "param": "optimisation", "value": 1.0, "converged": r.converged, "iterations": r.iterations,
                "reason": r.reason, "residuals": r.residuals, "wall": r.wall + dt_opt,
                "lbfgs_iterations_total": done_its, "lbfgs": info})
            rec["newton_iterations"] = rec.get("newton_iterations", 0) + r.iterations
            if r.converged or opt.exhausted(o):  # converged, or the minimiser has nothing more to give
                break
    finally:
        opt.destroy()
        if theta is not None:
            theta.destroy()
        tm.destroy()
    rec["converged"] = bool(r is not None and r.converged)
    if rec["converged"]:
        rec.pop("failure", None)
    else:
        rec["failure"] = (rec.get("failure", "") + "; " if rec.get("failure") else "") + \
            f"Newton from the optimisation guess failed ({r.reason if r else 'no attempt'}) " \
            f"after {done_its} quasi-Newton iterations"
    return rec


def zero_network_walk(d, bd, block: int = 1 << 22) -> dict:
    """``J_h`` of the zero network (log-tilts 0, ``E = 1``: data only diffused) by the serial
    midpoint walk, split as the diagnostics' ``cost``, in blocks of layers of at most
    ``block`` density values (memory ``O(K prod M)`` per block, not ``O(K prod M N)``)."""
    from ..numerics.training import TiltLayout, _check_fixed_terminal, forward_walk, training_cost

    _check_fixed_terminal(bd)
    per = d.K * d.grid.size
    step = max(1, min(d.N, block // max(per, 1)))
    rho_n = bd.rho0
    kinetic = running = terminal = 0.0
    for n0 in range(0, d.N, step):
        sub = dataclasses.replace(d, N=min(step, d.N - n0), T=d.dt * min(step, d.N - n0))
        th = TiltLayout(sub).zeros()
        rho = forward_walk(rho_n, th, sub)
        c = training_cost(rho, th, sub, bd)
        kinetic += c["kinetic"]
        running += c["running"]
        terminal = c["terminal"]
        rho_n = rho[-1]
    return {"kinetic": kinetic, "running": running, "terminal": terminal, "total": kinetic + running + terminal}
