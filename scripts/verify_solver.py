#!/usr/bin/env python3
"""Verification table of the core solver (issue: closed form, refinement orders, mass,
Hamiltonian drift, rank independence). Prints tables and writes JSON.

    mpiexec -n 2 python scripts/verify_solver.py --out mfc_hpc/docs/results/verify
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import petsc4py

petsc4py.init([a for a in sys.argv[1:] if a.startswith("-mfc")])
from petsc4py import PETSc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mfc_hpc.config import load_config  # noqa: E402
from mfc_hpc.fileio.summary import versions, write_json  # noqa: E402
from mfc_hpc.jobs.solve import solve  # noqa: E402
from mfc_hpc.numerics.closed_form import ClosedForm, closed_form_errors  # noqa: E402


def solve_config(cfg):
    """Solve; ``(ms, summary, Z)`` with the whole state on rank 0 (small meshes only)."""
    out = solve(cfg, verbose=False)
    return out.ms, out.summary, out.ms.mesh.gather(out.ms.X, root=0)


def closed_form_of(cfg) -> ClosedForm:
    c, loss = cfg.classes[0], cfg.loss
    var = c.var if isinstance(c.var, tuple) else (c.var,) * cfg.ndim
    return ClosedForm(nu=cfg.model.nu, alpha=loss.alpha, T=cfg.mesh.depth, m=tuple(loss.target),
                      mu0=tuple(c.mean), s0=tuple(float(v) for v in var))

EXAMPLES = Path(__file__).resolve().parents[1] / "mfc_hpc" / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="verify_out")
    ap.add_argument("--meshes", default="65x16,129x32,257x64", help="MxN list, refined together")
    ap.add_argument("--layers", default="8,16,32,64", help="N list on the finest node count (Hamiltonian)")
    args, _ = ap.parse_known_args()
    rank = PETSc.COMM_WORLD.rank
    base = load_config(EXAMPLES / "closed_form.toml")
    cf = closed_form_of(base)
    rows = []
    for mn in args.meshes.split(","):
        M, N = map(int, mn.split("x"))
        cfg = base.replace(mesh={"nodes": M, "layers": N})
        t0 = time.perf_counter()
        ms, s, Z = solve_config(cfg)
        e = closed_form_errors(Z, ms.d, cf) if rank == 0 else {"density_L1": 0.0, "velocity_L2_rho": 0.0}
        rows.append({"M": M, "N": N, "unknowns": ms.X.getSize(), **e,
                     "mass_error": s["diagnostics"]["mass_error_max"],
                     "H_dev": s["diagnostics"]["hamiltonian_dev_first"],
                     "newton": s["newton_iterations_fine"], "wall": time.perf_counter() - t0})
        ms.destroy()
    for a, b in zip(rows, rows[1:]) if rank == 0 else ():
        for k in ("density_L1", "velocity_L2_rho"):
            b[f"order_{k}"] = float(__import__("math").log2(a[k] / b[k]))
    Mh = int(args.meshes.split(",")[-1].split("x")[0])
    hrows = []
    for N in map(int, args.layers.split(",")):
        ms, s, _ = solve_config(base.replace(mesh={"nodes": Mh, "layers": N}))
        hrows.append({"M": Mh, "N": N, "H_dev": s["diagnostics"]["hamiltonian_dev_first"],
                      "mass_error": s["diagnostics"]["mass_error_max"]})
        ms.destroy()
    for a, b in zip(hrows, hrows[1:]):
        b["ratio"] = a["H_dev"] / b["H_dev"]
    if rank == 0:
        print(f"closed form (METHOD.md 5) on {PETSc.COMM_WORLD.size} ranks")
        print(f"{'M':>5} {'N':>4} {'unknowns':>9} {'L1 rho':>10} {'order':>6} {'L2 u':>10} {'order':>6} "
              f"{'mass err':>9} {'Newton':>6} {'wall s':>7}")
        for r in rows:
            print(f"{r['M']:5d} {r['N']:4d} {r['unknowns']:9d} {r['density_L1']:10.3e} "
                  f"{r.get('order_density_L1', float('nan')):6.2f} {r['velocity_L2_rho']:10.3e} "
                  f"{r.get('order_velocity_L2_rho', float('nan')):6.2f} {r['mass_error']:9.1e} "
                  f"{r['newton']:6d} {r['wall']:7.2f}")
        print(f"\nHamiltonian drift max_n |H(z^n) - H(z^0)| at M = {Mh}")
        print(f"{'N':>5} {'H drift':>10} {'ratio':>6} {'mass err':>9}")
        for r in hrows:
            print(f"{r['N']:5d} {r['H_dev']:10.3e} {r.get('ratio', float('nan')):6.2f} {r['mass_error']:9.1e}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "verify_solver.json", {"closed_form": rows, "hamiltonian": hrows,
                                                "ranks": PETSc.COMM_WORLD.size, "versions": versions(),
                                                "command": " ".join(sys.argv)})
        print(f"\nwrote {out / 'verify_solver.json'}")


if __name__ == "__main__":
    main()
