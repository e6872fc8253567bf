#!/usr/bin/env python
"""Follow one continuation path and report where it stops (folds, stalls).

Path: the uncontrolled flow at loss weight 0 and ``nu = --nu-start``; the loss weight
0 -> ``--loss-first``; ``nu`` down to the configuration's ``model.nu`` (geometric steps);
the loss weight ``--loss-first`` -> 1. Every stage prints the accepted or failed value,
Newton's reason, J_h, ``dt * max outflow`` (the midpoint walk's Markov bound is 2) and
the smallest density; ``--out`` writes them as JSON. Used for the fold table of
``mfc_hpc/docs/deep_learning.md`` (iris at gamma 10, nu 0.01):

    source scripts/env.sh
    mpiexec -n 2 python scripts/continuation_path.py mfc_hpc/examples/iris_hard.toml \\
        --layers 32 --nu-start 0.2 --loss-first 0.2 --out results/path.json

``--layers``/``--nodes`` override the mesh and ``--scheme`` the scheme of the configuration.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--nu-start", type=float, default=0.2)
    p.add_argument("--loss-first", type=float, default=1.0, help="loss weight reached before nu is lowered")
    p.add_argument("--min-step", type=float, default=1e-3)
    p.add_argument("--nodes", type=int, help="nodes per state axis")
    p.add_argument("--layers", type=int)
    p.add_argument("--scheme", choices=["midpoint", "euler"])
    p.add_argument("--out")
    a, petsc_args = p.parse_known_args(argv)
    import petsc4py
    petsc4py.init([sys.argv[0]] + petsc_args)
    from mfc_hpc.config import load_config
    from mfc_hpc.drivers.continuation import continue_parameter
    from mfc_hpc.drivers.diagnostics import diagnostics
    from mfc_hpc.drivers.run import build_solver
    from mfc_hpc.jobs.solve import shared_problem

    cfg = load_config(a.config)
    mesh = {k: v for k, v in (("nodes", a.nodes), ("layers", a.layers)) if v}
    if mesh:
        cfg = cfg.replace(mesh=mesh)
    if a.scheme:
        cfg = cfg.replace(model={"scheme": a.scheme})
    problem = shared_problem(cfg)
    ms = build_solver(problem, verbose=False)
    rank0 = ms.mesh.comm.getRank() == 0
    records: list[dict] = []

    def report(msg: str, **rec) -> None:
        dg = diagnostics(ms.mesh, ms.X, ms.d, ms.bd)
        rec.update(message=msg, J_h=dg["cost"]["total"], dt_max_outflow=dg["dt_max_outflow_rate"],
                   min_density=dg["min_density"], time=time.strftime("%H:%M:%S"))
        records.append(rec)
        if rank0:
            print(f"{rec['time']} {msg} | J_h {rec['J_h']:.4f}  dt*outflow {rec['dt_max_outflow']:.3f}  "
                  f"min rho {rec['min_density']:.2e}", flush=True)

    nu, s0 = cfg.model.nu, a.loss_first
    ms.set_problem(d=dataclasses.replace(ms.d, nu=a.nu_start))
    ms.bd.scale = 0.0
    ms.uncontrolled_guess()
    r = ms.solve()
    report(f"loss 0 at nu {a.nu_start:g}: {'ok' if r.converged else 'FAILED'}", stage="start", converged=r.converged)
    stops = {}
    legs = [("loss", 0.0, s0, False), ("nu", a.nu_start, nu, True), ("loss", s0, 1.0, False)]
    for param, v0, v1, geometric in legs:
        if v0 == v1 or not r.converged:
            continue
        step = (math.log(v0 / v1) if geometric else abs(v1 - v0)) / 4
        c = continue_parameter(ms, param, v0, v1, geometric=geometric, first_step=step, min_step=a.min_step,
                               max_stages=300, progress=lambda m: report(m, stage=param))
        report(f"{param} {v0:g} -> {v1:g}: {'reached' if c.converged else f'stopped at {c.value:.6g}'}",
               stage=f"{param}-end", converged=c.converged, value=c.value)
        stops[f"{param} {v0:g}->{v1:g}"] = c.value
        if not c.converged:
            break
    if rank0:
        print(json.dumps(stops))
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({"config": problem.resolved_config(), "nu_start": a.nu_start,
                                               "loss_first": s0, "reached": stops, "stages": records},
                                              indent=1))
    ms.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
