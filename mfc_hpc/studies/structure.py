"""The preserved structure of the scheme, measured (METHOD.md sections 3, 4 and 8), for
``d = 1, 2``: midpoint against implicit Euler (``scheme = "euler"``).

* the Hamiltonian drift ``max_n |H_h(z^n) - H_h(z^0)|`` (``O(dt^2)`` for the midpoint rule on a
  fixed node mesh, ``O(dt)`` for Euler): the diagnostics' ``H_h`` per level;
* the discrete symplectic form ``omega^n = sum_{c,i} w_i (a_rho b_phi - a_phi b_rho)`` of two
  solutions ``a, b`` of the linearised scheme (:func:`perturbations`: the initial rows and
  the terminal rows perturbed; solved with the exact Jacobian at the converged state), and
  its variation over levels relative to ``S = max_n sum_{c,i} w_i (|a_rho b_phi| + |a_phi b_rho|)``;
* exact mass ``sum_i w_i rho^n_{c,i} = pi_c`` (the diagnostics' ``mass_error_max``);
* the residual of the hydrodynamic (Euler-Poincare) pair of METHOD.md 3 on the discrete
  solution, one class and ``eta = 0`` (:func:`euler_poincare_residual`), in ``d`` dimensions:
  ``v = u - nu grad l`` (``l = log rho``, ``u`` the layer drift ``b``),
  ``d_t rho + div(rho v) = 0`` and ``d_t v + (v . grad) v + grad Q - grad F'(rho) = 0`` with
  ``Q = 2 nu^2 Lap sqrt(rho) / sqrt(rho) = nu^2 (Lap l + |grad l|^2 / 2)``. The pair holds in any
  dimension for the optimal (potential) velocity ``u = grad phi``; in 2-D the momentum
  residual has one component per axis and its norm is the ``rho``-weighted norm of the vector.

Kernels act on whole arrays or on a rank's owned block; the collective side (:func:`measure`,
:func:`study`) solves through :func:`mfc_hpc.jobs.solve.solve`, reduces per-level sums over
ranks and reads ``solution.h5`` on rank 0 for the Euler-Poincare residual.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np

from ..numerics.depth import Slab, split, whole_mesh
from ..numerics.grid import BoxGeometry
from ..numerics.model import Discretisation
from ..numerics.quantities import drift
from ..numerics.terminal import BoundaryData

__all__ = ["SCHEMES", "perturbations", "symplectic_form", "symplectic_variation", "euler_poincare_residual",
           "observed_order", "with_scheme", "with_depth", "measure", "plan", "study", "table"]

log = logging.getLogger("structure")

SCHEMES = ("midpoint", "euler")


# ------------------------------------------------------------------------------ kernels

def perturbations(d: Discretisation, bd: BoundaryData, s: Slab | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-hand sides ``r_a, r_b`` (``[n, *i, a]`` on the owned box of ``s``; the whole mesh
    by default) of two linearised solutions: ``r_a`` perturbs the initial densities,
    ``delta rho_c = rho_c(0, x) sin(pi xi_1) prod_{k>1} cos(pi xi_k)``; ``r_b`` the terminal
    condition, ``delta phi_c = (c + 1) sum_k cos(pi xi_k)`` (``xi_k = (x_k - x_{L,k})/L_k``);
    each sits in its boundary rows scaled by ``w_i`` like the residual."""
    s = s or whole_mesh(d)
    K, nd = d.K, d.ndim
    geom = BoxGeometry(d.grid, s.xs, s.owned_count)
    w = geom.w
    xi = [((d.grid.axis(k)[s.xs[k]:s.xe[k]] - d.grid.lower[k]) / d.grid.lengths[k]).reshape(
        [-1 if l == k else 1 for l in range(nd)]) for k in range(nd)]
    shape_a = np.sin(np.pi * xi[0])
    for k in range(1, nd):
        shape_a = shape_a * np.cos(np.pi * xi[k])
    shape_b = sum(np.cos(np.pi * x) for x in xi)
    ra = np.zeros((s.ye - s.ys,) + s.owned_count + (2 * K,))
    rb = np.zeros_like(ra)
    rho0 = bd.rho0[(slice(None),) + s.global_nodes]  # [c, *i]
    if s.ys == 0:
        ra[0, ..., :K] = np.moveaxis(w * rho0 * shape_a, 0, -1)
    if s.ye == d.N + 1:
        rb[-1, ..., K:] = np.moveaxis(w * np.arange(1, K + 1).reshape((K,) + (1,) * nd) * shape_b, 0, -1)
    return ra, rb


def symplectic_form(a: np.ndarray, b: np.ndarray, w: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Per level of a block ``[n, *i, a]``: ``omega^n`` and ``S^n = sum_{c,i} w_i (|a_rho b_phi|
    + |a_phi b_rho|)`` (sums over the block's nodes; ``w`` its weights)."""
    p = a[..., :K] * b[..., K:]
    q = a[..., K:] * b[..., :K]
    axes = tuple(range(1, a.ndim))
    wc = w[None, ..., None]
    return (wc * (p - q)).sum(axis=axes), (wc * (np.abs(p) + np.abs(q))).sum(axis=axes)


def symplectic_variation(omega: np.ndarray, S: np.ndarray) -> dict:
    """``max_n |omega^n - omega^0| / max_n S^n`` and the per-level relative deviations."""
    ref = float(np.max(S)) or 1.0
    dev = np.abs(omega - omega[0]) / ref
    return {"omega": np.asarray(omega).tolist(), "reference": ref, "relative_deviation": dev.tolist(),
            "relative_variation": float(dev.max())}


def euler_poincare_residual(Z: np.ndarray, d: Discretisation, cut: float = 1e-8) -> dict | None:
    """Residual of the hydrodynamic pair on the discrete solution ``Z[n, *i, a]`` (module
    docstring); one class with ``eta = 0`` only (``u = grad phi``), ``None`` otherwise.

    Central differences ``D_k`` along each axis; both equations at the half levels
    ``n + 1/2`` (depth difference, level means), on nodes at least two from every wall whose
    ``+-2 e_k`` stencil has ``rho > cut * max rho`` at both levels. Norms: momentum
    ``(sum_n dt sum_i w_i rho |r_v|^2)^(1/2)`` over the same norm of
    ``|d_t v| + |(v.grad)v| + |grad Q| + |grad F'|`` (componentwise, relative); continuity in
    ``L^1`` over ``sum_n dt sum_i w_i (|d_t rho| + |div(rho v)|)``.
    """
    if not d.unit_fraction:
        return None
    nd, dt, nu = d.ndim, d.dt, d.nu
    h = d.grid.h
    rho, phi = split(Z, 1)
    r = rho[:, 0]  # [n, *i]
    ok = r > cut * r.max()
    l = np.log(np.where(ok, r, 1.0))
    geom = BoxGeometry(d.grid, (0,) * nd, d.grid.nodes)
    b = drift(rho, phi, geom, d)  # [n, k, *i]

    def D(f: np.ndarray, k: int) -> np.ndarray:  # central difference along node axis k of f[n, *i]
        out = np.zeros_like(f)
        lo = [slice(None)] * f.ndim
        hi = [slice(None)] * f.ndim
        mid = [slice(None)] * f.ndim
        lo[1 + k], hi[1 + k], mid[1 + k] = slice(None, -2), slice(2, None), slice(1, -1)
        out[tuple(mid)] = (f[tuple(hi)] - f[tuple(lo)]) / (2.0 * h[k])
        return out

    def D2(f: np.ndarray, k: int) -> np.ndarray:
        out = np.zeros_like(f)
        lo = [slice(None)] * f.ndim
        hi = [slice(None)] * f.ndim
        mid = [slice(None)] * f.ndim
        lo[1 + k], hi[1 + k], mid[1 + k] = slice(None, -2), slice(2, None), slice(1, -1)
        out[tuple(mid)] = (f[tuple(hi)] - 2.0 * f[tuple(mid)] + f[tuple(lo)]) / h[k] ** 2
        return out

    def half(f: np.ndarray) -> np.ndarray:
        return 0.5 * (f[1:] + f[:-1])

    lx = [D(l, k) for k in range(nd)]
    v = [b[:, k] - nu * lx[k] for k in range(nd)]
    Q = nu ** 2 * (sum(D2(l, k) for k in range(nd)) + 0.5 * sum(g * g for g in lx))
    dF = d.running.dF(r)
    rm = half(r)
    vm = [half(vk) for vk in v]
    Qm, Fm = half(Q), half(dF)
    mom_r, mom_s = [], []
    for k in range(nd):
        vt = (v[k][1:] - v[k][:-1]) / dt
        adv = sum(vm[j] * D(vm[k], j) for j in range(nd))
        Qx, Fx = D(Qm, k), D(Fm, k)
        mom_r.append(vt + adv + Qx - Fx)
        mom_s.append(np.abs(vt) + np.abs(adv) + np.abs(Qx) + np.abs(Fx))
    rt = (r[1:] - r[:-1]) / dt
    div = sum(D(rm * vm[k], k) for k in range(nd))
    rc = rt + div
    good = ok[1:] & ok[:-1]
    mask = np.ones_like(good)
    for k in range(nd):  # the +-2 e_k stencil inside the mesh and resolved
        m_k = np.zeros_like(good)
        sl = [slice(None)] * good.ndim
        sl[1 + k] = slice(2, -2)
        acc = np.ones_like(good[tuple(sl)])
        for o in range(-2, 3):
            so = [slice(None)] * good.ndim
            n_k = good.shape[1 + k]
            so[1 + k] = slice(2 + o, n_k - 2 + o)
            acc = acc & good[tuple(so)]
        m_k[tuple(sl)] = acc
        mask = mask & m_k
    w = geom.w[None] * mask * dt
    nv = float(np.sqrt(sum((w * rm * rk ** 2).sum() for rk in mom_r)))
    sv = float(np.sqrt(sum((w * rm * sk ** 2).sum() for sk in mom_s))) or 1.0
    nc = float((w * np.abs(rc)).sum())
    sc = float((w * (np.abs(rt) + np.abs(div))).sum()) or 1.0
    return {"momentum": nv, "momentum_relative": nv / sv, "continuity": nc, "continuity_relative": nc / sc,
            "mass_covered": float((w * rm).sum() / max((dt * geom.w[None] * rm).sum(), 1e-300))}


def observed_order(x: list[float], y: list[float]) -> list[float | None]:
    """``log(y_{k+1}/y_k) / log(x_{k+1}/x_k)`` between consecutive points (None where undefined)."""
    out: list[float | None] = []
    for k in range(len(x) - 1):
        if y[k] > 0 and y[k + 1] > 0 and x[k] != x[k + 1]:
            out.append(float(np.log(y[k + 1] / y[k]) / np.log(x[k + 1] / x[k])))
        else:
            out.append(None)
    return out


# ------------------------------------------------------------------------------ problems of the study

def with_scheme(problem, scheme: str):
    """The problem with another depth scheme (``midpoint`` or ``euler``)."""
    return dataclasses.replace(problem, d=dataclasses.replace(problem.d, scheme=scheme),
                               cfg=problem.cfg.replace(model={"scheme": scheme}))


def with_depth(problem, T: float):
    """The problem with another depth ``T`` (same layers: pass a mesh with ``on_mesh`` too)."""
    return dataclasses.replace(problem, d=dataclasses.replace(problem.d, T=float(T)),
                               cfg=problem.cfg.replace(mesh={"depth": float(T)}))


# ------------------------------------------------------------------------------ collective

def _linearised_forms(ms, d: Discretisation, bd: BoundaryData) -> dict:
    """The symplectic form of the two linearised solutions at the solver's converged state:
    right-hand sides built on the owned box, solved with the exact Jacobian through the
    solver's linear solver, ``omega^n`` and ``S^n`` summed over the owned box and reduced
    per level (collective)."""
    s = ms.mesh.slab
    geom = BoxGeometry(d.grid, s.xs, s.owned_count)
    sols = []
    for r in perturbations(d, bd, s):
        rhs, x = ms.X.duplicate(), ms.X.duplicate()
        rhs.getArray()[:] = r.ravel()
        ms.jacobian_solve(rhs, x)
        sols.append(np.array(ms.mesh.owned(x)))
        rhs.destroy()
        x.destroy()
    om, S = symplectic_form(sols[0], sols[1], geom.w, d.K)
    part = np.zeros((2, d.N + 1))
    part[0, s.ys:s.ye], part[1, s.ys:s.ye] = om, S
    tot = ms.mesh.mpi.allreduce(part)
    return symplectic_variation(tot[0], tot[1])


def measure(problem, comm=None, out_dir: str | Path = "point", keep_solution: bool = False) -> dict:
    """Solve the problem (collective) and measure its structure; the record is on every rank."""
    from petsc4py import PETSc

    from ..jobs.solve import solve
    from .stability_runs import on_root, state_from_file

    comm = comm or PETSc.COMM_WORLD
    d = problem.d
    out = Path(out_dir)
    rec: dict = {"scheme": d.scheme, "nodes": _one(d.grid.nodes), "layers": d.N, "depth": d.T, "h": _one(d.grid.h),
                 "dt": d.dt, "classes": d.K, "ranks": comm.getSize()}
    res = solve(problem, comm, out_dir=out, verbose=False)
    try:
        s = res.summary
        rec.update(converged=bool(s["converged"]), failure=s["failure"], newton_iterations=s["newton_iterations_fine"])
        if not rec["converged"]:
            return rec
        diag = s["diagnostics"]
        H = np.asarray(diag["hamiltonian"])
        drift_H = float(np.abs(H - H[0]).max())
        rec.update(hamiltonian=H.tolist(), hamiltonian_drift=drift_H,
                   hamiltonian_drift_relative=drift_H / max(float(np.abs(H).max()), 1e-300),
                   mass_error=diag["mass_error_max"], min_density=diag["min_density"],
                   symplectic=_linearised_forms(res.ms, res.ms.d, res.ms.bd))
    finally:
        res.ms.destroy()
    rec["euler_poincare"] = on_root(comm, lambda: euler_poincare_residual(
        state_from_file(out / "solution.h5"), d)) if d.unit_fraction else None
    if not keep_solution and comm.tompi4py().rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    return rec


def plan(problem, layers: list[int] | None = None, nodes: list[int] | None = None,
         depths: list[float] | None = None) -> dict[str, list[tuple[tuple[int, ...], int, float]]]:
    """The ``(nodes, N, T)`` meshes of the three families: a depth refinement on the
    problem's nodes (``layers``; default ``N/4, N/2, N``), a joint refinement of nodes and
    layers (``nodes``: node counts along axis 1, the other axes and ``N`` scaled with them;
    default ``(M_1-1)/4+1, (M_1-1)/2+1, M_1``) and deeper networks at the problem's ``dt``
    (``depths``, multiples of ``T``). ``BadInput`` when a family is impossible."""
    from ..errors import BadInput

    M = problem.grid.nodes
    N, T = problem.d.N, problem.d.T
    depths = [0.5, 1.0, 2.0] if depths is None else depths
    if layers is None:
        layers = sorted({n for n in (N // 4, N // 2, N) if n >= 2})
    if nodes is None:
        if (M[0] - 1) % 4:
            raise BadInput(f"--nodes: the default joint refinement needs nodes - 1 divisible by 4, got nodes = {M[0]}")
        nodes = [(M[0] - 1) // 4 + 1, (M[0] - 1) // 2 + 1, M[0]]
    joint = []
    for m in nodes:
        r = (m - 1) / (M[0] - 1)
        n = N * r
        other = [(mk - 1) * r + 1 for mk in M]
        if m < 5 or abs(n - round(n)) > 1e-9 or round(n) < 1 or any(abs(o - round(o)) > 1e-9 for o in other):
            raise BadInput(f"--nodes: {m} nodes give {n:g} layers (and nodes {', '.join(f'{o:g}' for o in other)}) "
                           f"at the configuration's ratios; choose M with N (M - 1)/(M_1 - 1) and every "
                           f"(M_k - 1)(M - 1)/(M_1 - 1) integers and M >= 5")
        joint.append((tuple(int(round(o)) for o in other), int(round(n)), T))
    deep = []
    for f in depths:
        n = N * f
        if abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise BadInput(f"--depths: {f:g} T needs {n:g} layers at the configuration's dt; "
                           "choose multiples with N * f an integer")
        deep.append((M, int(round(n)), T * f))
    return {"dt_refinement": [(M, n, T) for n in layers], "joint_refinement": joint, "depth": deep}


def study(problem, comm=None, out_dir: str | Path = "structure", layers=None, nodes=None, depths=None,
          schemes=SCHEMES) -> dict:
    """All measurements of the structure study (collective); identical on every rank."""
    families = plan(problem, layers, nodes, depths)
    cache: dict[tuple, dict] = {}
    out: dict = {"families": {k: [[_one(p[0]), p[1], p[2]] for p in v] for k, v in families.items()},
                 "dim": problem.ndim, "schemes": {}}
    for scheme in schemes:
        fam_out: dict = {}
        for fam, pts in families.items():
            recs = []
            for (nodes_, N, T) in pts:
                key = (scheme, nodes_, N, T)
                if key not in cache:
                    log.info("%s: nodes %s, N = %d, T = %g", scheme, " x ".join(map(str, nodes_)), N, T)
                    p = with_depth(with_scheme(problem, scheme), T).on_mesh(nodes_, N)
                    tag = f"{scheme}_{'x'.join(map(str, nodes_))}_{N}_{T:g}"
                    cache[key] = measure(p, comm, Path(out_dir) / "runs" / tag)
                recs.append(cache[key])
            fam_out[fam] = recs
        ok = [r for r in fam_out["dt_refinement"] if r["converged"]]
        drifts = [r["hamiltonian_drift"] for r in ok]
        orders = {"hamiltonian_drift_in_dt": observed_order([r["dt"] for r in ok], drifts),
                  "hamiltonian_drift_ratio_per_halving": [drifts[k] / drifts[k + 1] if drifts[k + 1] > 0 else None
                                                          for k in range(len(drifts) - 1)]}
        okj = [r for r in fam_out["joint_refinement"] if r["converged"] and r.get("euler_poincare")]
        hs = [_first(r["h"]) for r in okj]
        orders["euler_poincare_momentum_in_h"] = observed_order(hs, [r["euler_poincare"]["momentum"] for r in okj])
        orders["euler_poincare_continuity_in_h"] = observed_order(hs, [r["euler_poincare"]["continuity"] for r in okj])
        p = 2.0 if scheme == "midpoint" else 1.0
        okd = [r for r in fam_out["depth"] if r["converged"]]
        orders["depth_constant_power"] = p
        orders["depth_constants"] = [{"depth": r["depth"], "drift_over_dt_p": r["hamiltonian_drift"] / r["dt"] ** p}
                                     for r in okd]
        fam_out["orders"] = orders
        out["schemes"][scheme] = fam_out
    return out


FAMILIES = ("dt_refinement", "joint_refinement", "depth")


def _fmt(v, f: str = "%.2e") -> str:
    return "-" if v is None else f % v


def table(res: dict) -> str:
    """The printed table: one row per solve, then the observed orders."""
    lines = [f"{'scheme':9s} {'family':17s} {'nodes':>9s} {'N':>5s} {'T':>5s} {'Newton':>6s} {'H drift':>9s} "
             f"{'omega var':>9s} {'mass err':>9s} {'EP mom':>9s} {'EP cont':>9s} {'min rho':>10s}"]
    for scheme, fams in res["schemes"].items():
        for fam in FAMILIES:
            for r in fams[fam]:
                nodes = "x".join(map(str, np.atleast_1d(r["nodes"])))
                head = f"{scheme:9s} {fam:17s} {nodes:>9s} {r['layers']:5d} {r['depth']:5.2g} "
                if not r["converged"]:
                    lines.append(head + f"{'FAILED':>6s} {r.get('failure') or ''}")
                    continue
                ep = r["euler_poincare"] or {}
                lines.append(head + f"{r['newton_iterations']:6d} {r['hamiltonian_drift']:9.2e} "
                             f"{r['symplectic']['relative_variation']:9.2e} {r['mass_error']:9.2e} "
                             f"{_fmt(ep.get('momentum_relative')):>9s} {_fmt(ep.get('continuity_relative')):>9s} "
                             f"{r['min_density']:10.2e}")
    lines.append("")
    for scheme, fams in res["schemes"].items():
        o = fams["orders"]
        lines.append(f"{scheme}: Hamiltonian drift order in dt: "
                     + ", ".join(_fmt(x, "%.2f") for x in o["hamiltonian_drift_in_dt"])
                     + " (ratio per halving of dt: "
                     + ", ".join(_fmt(x, "%.2f") for x in o["hamiltonian_drift_ratio_per_halving"]) + ")")
        if o["euler_poincare_momentum_in_h"]:
            lines.append(f"{scheme}: Euler-Poincare residual order in h (momentum; continuity): "
                         + ", ".join(_fmt(x, "%.2f") for x in o["euler_poincare_momentum_in_h"]) + "; "
                         + ", ".join(_fmt(x, "%.2f") for x in o["euler_poincare_continuity_in_h"]))
        lines.append(f"{scheme}: drift / dt^{o['depth_constant_power']:g} at depth T = "
                     + ", ".join(f"{c['depth']:g}: {c['drift_over_dt_p']:.3g}" for c in o["depth_constants"]))
    return "\n".join(lines)


def _one(v):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return v[0] if len(v) == 1 else list(v)


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v
