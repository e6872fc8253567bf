#!/usr/bin/env python
"""Benchmark of the optimisation route: time per gradient evaluation (``J_h`` and its exact
adjoint gradient on the distributed log-tilts, :class:`mfc_hpc.parallel.training.TiltMesh`)
on 1 and 2 ranks, d = 1 and d = 2, about 1e6 unknowns of the optimality system.

Every case x rank count is one ``mpiexec -n P`` process group that builds the problem,
sets a fixed network (log-tilts of size ~0.3, the same for every rank count), evaluates
once to warm up and then ``--evals`` times; its time is the median evaluation, with the
split into set-up (rates, factorisations), forward sweep, adjoint sweep (each including
the wait for the neighbour's level), cost and gradient, reductions (the slowest rank of
each), and the CPU share every rank got. The launches are interleaved over the rank
counts ``--repeats`` times (ratios measured in one run); the table quotes the median over
the repeats and the speed-up of those medians.

    source scripts/env.sh
    python scripts/bench_optimisation.py --quick                     # smoke run, ~30 s
    python scripts/bench_optimisation.py --out mfc_hpc/docs/results/perf/bench_optimisation.json
    python scripts/bench_optimisation.py --cases d1,d1_congestion,d2 --ranks 1,2,3 --repeats 5

Cases (two classes, the soft-max problem of tests/cases.py): ``d1`` 1025 nodes x 256
layers (1,053,700 unknowns), ``d2`` 65^2 nodes x 64 layers (1,098,500), the same with a
congestion cost (``*_congestion``: ``F != 0``, the adjoint sweep then waits for the
forward one), ``d1_small``/``d2_small`` for ``--quick``. ``--launcher`` is a template such
as ``"srun -n {n}"`` (default ``mpiexec -n {n}``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_solver import env  # noqa: E402  (the launch environment of every benchmark)

#: name -> (nodes, layers, congestion kappa)
CASES = {
    "d1": (1025, 256, 0.0),
    "d1_congestion": (1025, 256, 0.5),
    "d2": ([65, 65], 64, 0.0),
    "d2_congestion": ([65, 65], 64, 0.5),
    "d1_small": (129, 32, 0.0),
    "d2_small": ([17, 17], 16, 0.0),
}
PHASES = ("setup", "forward", "backward", "gradient", "reduce")


def worker(case_path: str, out_path: str) -> None:
    """One case on the ranks of this process group (collective)."""
    import numpy as np
    import petsc4py

    petsc4py.init([])
    from petsc4py import PETSc

    from cases import two_class_config
    from mfc_hpc.parallel.training import TiltMesh
    from mfc_hpc.problem.build import build_problem

    case = json.loads(Path(case_path).read_text())
    comm = PETSc.COMM_WORLD.tompi4py()
    nodes, N, kappa = CASES[case["name"]]
    p = build_problem(two_class_config(M=nodes, N=N, gamma=3.0, nu=0.05, kappa=kappa))
    d, bd = p.d, p.bd
    tm = TiltMesh(d, bd)
    X, G = tm.create_vec(), tm.create_vec()
    tm.perturb(X, 0.3, seed=1)
    tm.evaluate(X, G)  # warm-up (imports, first factorisations)
    walls, phases = [], []
    c0 = time.process_time()
    w0 = time.perf_counter()
    for _ in range(case["evals"]):
        tm.timings.update(dict.fromkeys(tm.timings, 0.0))
        comm.Barrier()
        t = time.perf_counter()
        e = tm.evaluate(X, G)
        walls.append(comm.allreduce(time.perf_counter() - t, op=_max()))
        phases.append({k: comm.allreduce(tm.timings[k], op=_max()) for k in PHASES})
    cpu = comm.allgather((time.process_time() - c0) / max(time.perf_counter() - w0, 1e-12))
    gnorm = G.norm()  # collective
    for v in (X, G):
        v.destroy()
    tm.destroy()
    if comm.rank == 0:
        k = int(np.argsort(walls)[len(walls) // 2])
        Path(out_path).write_text(json.dumps({
            "unknowns": 2 * d.K * (d.N + 1) * d.grid.size, "tilts": 2 * d.ndim * (d.N + 1) * d.grid.size,
            "nodes": list(d.grid.nodes), "layers": d.N, "classes": d.K, "ranks": comm.size,
            "ranges": tm.ranges, "per_evaluation": statistics.median(walls), "evaluations": walls,
            "phases": phases[k], "cpu_fraction": cpu, "cost": e.cost["total"],
            "gradient_norm": gnorm}))


def _max():
    from mpi4py import MPI
    return MPI.MAX


def run_case(name: str, ranks: int, evals: int, launcher: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cpath, opath = Path(tmp, "case.json"), Path(tmp, "out.json")
        cpath.write_text(json.dumps({"name": name, "evals": evals}))
        cmd = shlex.split(launcher.format(n=ranks)) + [sys.executable, str(Path(__file__).resolve()),
                                                        "--worker", str(cpath), str(opath)]
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
            rc, tail = p.returncode, (p.stdout + p.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            rc, tail = -1, f"timed out after {timeout:.0f} s"
        if rc != 0 or not opath.exists():
            return {"name": name, "ranks": ranks, "failed": f"exit {rc}: {tail}"}
        r = json.loads(opath.read_text())
        r.update(name=name, wall=time.perf_counter() - t)
        return r


def summarise(runs: list[dict]) -> list[dict]:
    """Per case and rank count: the median over repeats and the speed-up over 1 rank."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        base = None
        for P in sorted({r["ranks"] for r in runs if r["name"] == name}):
            rs = [r for r in runs if r["name"] == name and r["ranks"] == P and "failed" not in r]
            if not rs:
                rows.append({"name": name, "ranks": P, "failed": True})
                continue
            med = statistics.median(r["per_evaluation"] for r in rs)
            k = min(range(len(rs)), key=lambda i: abs(rs[i]["per_evaluation"] - med))
            if P == 1:
                base = med
            rows.append({"name": name, "ranks": P, "unknowns": rs[0]["unknowns"], "tilts": rs[0]["tilts"],
                         "per_evaluation": med, "repeats": [r["per_evaluation"] for r in rs],
                         "speedup": base / med if base else None, "phases": rs[k]["phases"],
                         "cpu_fraction": [min(r["cpu_fraction"]) for r in rs]})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | unknowns | ranks | s per evaluation (median) | repeats | speed-up | set-up | forward | "
            "adjoint | cost + gradient | reductions | lowest cpu % per repeat |")
    out = [head, "|" + "---|" * 12]
    for r in rows:
        if r.get("failed"):
            out.append(f"| {r['name']} | | {r['ranks']} | failed | | | | | | | | |")
            continue
        ph = r["phases"]
        sp = f"{r['speedup']:.2f}" if r["speedup"] else ""
        out.append(f"| {r['name']} | {r['unknowns']:,} | {r['ranks']} | {r['per_evaluation']:.4f} | "
                   f"{', '.join(f'{v:.4f}' for v in r['repeats'])} | {sp} | "
                   + " | ".join(f"{ph[k]:.4f}" for k in PHASES)
                   + f" | {', '.join(f'{100 * c:.0f}' for c in r['cpu_fraction'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="d1,d2")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--evals", type=int, default=5, help="evaluations per launch (their median is its time)")
    ap.add_argument("--quick", action="store_true", help="small meshes, 1 repeat, 3 evaluations")
    ap.add_argument("--launcher", default="mpiexec -n {n}")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", default=None, help="JSON file (written atomically)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(*a.worker)
        return 0
    cases = "d1_small,d2_small" if a.quick else a.cases
    repeats, evals = (1, 3) if a.quick else (a.repeats, a.evals)
    names = [c.strip() for c in cases.split(",") if c.strip()]
    bad = [c for c in names if c not in CASES]
    if bad:
        print(f"bench_optimisation: error: unknown case(s) {', '.join(bad)} (known: {', '.join(CASES)})",
              file=sys.stderr)
        return 2
    ranks = [int(v) for v in a.ranks.split(",")]
    runs = []
    for rep in range(repeats):  # interleaved: each repeat runs every rank count once
        for name in names:
            for P in ranks:
                r = run_case(name, P, evals, a.launcher, a.timeout)
                r["repeat"] = rep
                runs.append(r)
                msg = r.get("failed") or f"{r['per_evaluation']:.4f} s per evaluation"
                print(f"[{rep + 1}/{repeats}] {name} on {P} rank(s): {msg}", flush=True)
    rows = summarise(runs)
    print()
    print(table(rows))
    if a.out:
        from mfc_hpc.fileio.summary import versions, write_json

        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, {"command": " ".join(["python", "scripts/bench_optimisation.py"] + (argv or sys.argv[1:])),
                         "date": datetime.datetime.now().isoformat(timespec="seconds"),
                         "host_cpus": os.cpu_count(), "load_average": os.getloadavg(),
                         "versions": versions(), "rows": rows, "runs": runs})
        print(f"\nwrote {out}")
    return 0 if all(not r.get("failed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
