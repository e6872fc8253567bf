"""The optimisation route: Newton from the minimiser of the discrete training problem.

Continuation follows one branch of KKT points; for several classes it may end at a fold
while the minimiser of ``J_h`` lies on another branch (METHOD.md 2: not convex). L-BFGS
runs in chunks of ``solver.optimisation_chunk`` iterations (at most
``solver.optimisation_maxiter`` in all); after each chunk Newton is tried from the KKT state
of the current network (:func:`mfc_hpc.numerics.training.kkt_state`) and the search stops
as soon as Newton converges: Newton needs a far less converged minimiser than L-BFGS
would take to reach its own tolerance (iris, gamma 10, nu 0.01, 65 x 128: the largest
log-tilt gradient 3e-2 after 3000 iterations, Newton fails; 3e-4 after 8000, Newton
converges in 2).

The minimiser here is serial (rank 0, :func:`mfc_hpc.numerics.training.minimise`) and the
KKT state is scattered to the ranks' blocks.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..numerics.training import kkt_state, minimise
from ..parallel.events import EVENTS
from ..parallel.snes import MeshSolver

__all__ = ["optimisation_solve", "zero_network_walk"]

log = logging.getLogger(__name__.split(".")[-1])


def optimisation_solve(ms: MeshSolver, bd_full, solver_cfg, nu: float, rec: dict, newton=None) -> dict:
    """Newton at the full loss weight and target ``nu`` from the minimiser (collective).

    ``bd_full`` is the boundary data at loss weight 1 of the solver's mesh; ``rec`` gets one
    stage per Newton attempt; ``newton(ms)`` runs one Newton solve (the driver's, so that
    its observers see the iterations).
    """
    s = solver_cfg
    comm = ms.mesh.mpi
    ms.set_problem(d=dataclasses.replace(ms.d, nu=nu))
    ms.bd.scale = 1.0
    rec = dict(rec)
    rec["stages"] = list(rec.get("stages", []))
    theta, done_its, t_opt, r = None, 0, 0.0, None
    d = ms.d
    while done_its < s.optimisation_maxiter:
        t0 = time.perf_counter()
        chunk = min(s.optimisation_chunk, s.optimisation_maxiter - done_its)
        Z, info, err = None, {}, None
        EVENTS["optimisation"].begin()
        if comm.rank == 0:
            try:
                o = minimise(d, bd_full, theta0=theta, gtol=1e-6, maxiter=chunk)
                theta = o["theta"]
                info = {k: v for k, v in o.items() if isinstance(v, (int, float, str, bool))}
                Z = kkt_state(theta, d, bd_full)
            except Exception as e:  # noqa: BLE001 - raised on every rank below
                err = e
        Z, info, err = comm.bcast((Z, info, err), root=0)
        EVENTS["optimisation"].end()
        if err is not None:
            raise err
        done_its += max(int(info.get("iterations", chunk)), 1)
        ms.mesh.set_owned(ms.X, Z)
        del Z
        dt_opt = time.perf_counter() - t0
        t_opt += dt_opt
        r = newton(ms)
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
