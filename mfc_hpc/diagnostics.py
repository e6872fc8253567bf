"""Diagnostics of a discrete solution on the distributed mesh (METHOD.md sections 4, 6).

All quantities are global (reduced over ranks) and identical on every rank:
mass per class and level, the discrete Hamiltonian per level, the cost ``J_h`` split into
kinetic, running and terminal parts, the minimum density, and the stability numbers
``dt * max outflow rate`` and ``dt * max(-d_x U)`` of the layers.
"""
from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from .mesh import DepthTimeMesh
from .scheme import (BoundaryData, Discretisation, _layers, _split, drift, hamiltonian_density,
                     kinetic_density, node_weights, outflow_rate)

__all__ = ["diagnostics"]


def _owned_layers(mesh: DepthTimeMesh, Zg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midpoints of the layers ``n -> n+1`` for owned levels ``n <= N-1``:
    ``(levels n, rho[l, c, i], phi[l, c, i])`` on the whole ghosted node range."""
    s, d = mesh.slab, mesh.d
    lev = np.arange(s.ys, min(s.ye, d.N))
    mid = _layers(Zg, 0.5)[lev - s.l0] if lev.size else np.zeros((0,) + Zg.shape[1:])
    rho, phi = _split(mid, d.K)
    return lev, rho, phi


def diagnostics(mesh: DepthTimeMesh, X: PETSc.Vec, d: Discretisation, bd: BoundaryData) -> dict:
    """Global diagnostics of the state ``X`` (collective)."""
    s = mesh.slab
    K = d.K
    Zg = mesh.ghosted(X)
    Zo = s.owned(Zg)
    ox = slice(s.xs - s.i0, s.xe - s.i0)
    wg = node_weights(d.h, d.M, s.i0, Zg.shape[1])
    w = wg[ox]

    rho_o = Zo[..., :K]  # [n, i, c]
    mass = mesh.level_sum(w[None, :, None] * rho_o)  # [N+1, K]
    pri = bd.rho0 @ node_weights(d.h, d.M)  # target class masses pi_c
    mass_err = float(np.abs(mass - pri).max() / max(pri.sum(), 1e-300))

    # Hamiltonian at every level: edge terms counted at their (owned) source node
    rho_g, phi_g = _split(Zg[s.ys - s.l0:s.ye - s.l0], K)
    Hn = hamiltonian_density(rho_g, phi_g, wg, d)[:, ox]
    H = mesh.level_sum(Hn[:, :, None])[:, 0]

    # layers: kinetic and running cost, outflow rates, drift
    lev, rho_m, phi_m = _owned_layers(mesh, Zg)
    kin = np.zeros(d.N + 1)
    run = np.zeros(d.N + 1)
    rate = 0.0
    b_owned = np.zeros((s.ye - s.ys, s.xe - s.xs))
    if lev.size:
        kin[lev] = kinetic_density(rho_m, phi_m, d)[:, ox].sum(axis=1)
        run[lev] = (w * d.running.F(rho_m.sum(axis=1)[:, ox])).sum(axis=1)
        rate = float(outflow_rate(rho_m, phi_m, wg, d)[:, ox].max())
        b = drift(rho_m, phi_m, d)[:, ox]
        b_owned[: lev.size] = b
    comm = mesh.comm.tompi4py()
    kin = comm.allreduce(kin)[: d.N]
    run = comm.allreduce(run)[: d.N]
    rate = mesh.allmax(rate)

    # compression dt * max(-(b_{i+1} - b_i)/h): b of the neighbouring rank via a 1-dof DMDA
    da1 = mesh.da.duplicate(dof=1)
    bg = da1.createGlobalVec()
    bg.getArray()[:] = b_owned.ravel()
    bl = da1.createLocalVec()
    da1.globalToLocal(bg, bl)
    bgh = bl.getArray(readonly=True).reshape(Zg.shape[:2])
    bl_own = bgh[s.ys - s.l0:s.ye - s.l0]
    # cells (i, i+1) with i owned and i+1 < M, on layers n <= N-1
    x1 = min(s.xe, d.M - 1) - s.i0
    cells = bl_own[:, ox.start + 1:x1 + 1] - bl_own[:, ox.start:x1]
    cells = cells[: lev.size]
    comp = float((-cells).max() / d.h) if cells.size else -np.inf
    comp = mesh.allmax(comp)
    for o in (bg, bl, da1):
        o.destroy()

    # terminal cost at level N
    term = 0.0
    if s.ye == d.N + 1:
        term = bd.terminal_cost(Zo[-1, :, :K].T, w, s.xs, s.xe)
    term = mesh.allsum(term)
    kinetic = float(d.dt * kin.sum())
    running = float(d.dt * run.sum())
    min_rho = mesh.allmin(float(rho_o.min()) if rho_o.size else np.inf)
    return {
        "mass": mass.tolist(),
        "mass_error_max": mass_err,
        "hamiltonian": H.tolist(),
        "hamiltonian_dev_mean": float(np.abs(H - H.mean()).max()),
        "hamiltonian_dev_first": float(np.abs(H - H[0]).max()),
        "cost": {"kinetic": kinetic, "running": running, "terminal": float(term),
                 "total": kinetic + running + float(term)},
        "min_density": min_rho,
        "dt_max_outflow_rate": float(d.dt * rate),
        "dt_max_compression": float(d.dt * comp),
    }
