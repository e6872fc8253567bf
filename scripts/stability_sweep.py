#!/usr/bin/env python
"""Stability sweep over (N layers, M nodes): observed behaviour vs the predicted boundary.

Each grid point ``k`` (row-major over ``--layers`` x ``--nodes``) is one run of
:func:`mfc_hpc.commands.stability.run_point`: a priori verdict, solve, a posteriori verdict,
observation (Newton converged, densities non-negative, layer maps monotone; test accuracy
through ``--accuracy MODULE:FUNC`` if given). Modes:

* default: run every point here (under ``mpiexec -n P`` each solve uses P ranks), then collect;
* ``--index k``: run point ``k`` only and write ``OUT/points/point_k.json`` (one task of an
  array job; ``SLURM_ARRAY_TASK_ID`` is used when ``--index`` is ``env``);
* ``--emit-slurm FILE``: write a SLURM array script with one task per point and stop;
* ``--collect``: read ``OUT/points/*.json``, report the hit rate and every miss, write
  ``OUT/sweep.json`` and draw ``OUT/stability_diagram.png``.

Example: ``mpiexec -n 2 python scripts/stability_sweep.py --out results/sweep``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import petsc4py

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "mfc_hpc" / "examples" / "closed_form.toml"


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base TOML configuration")
    p.add_argument("--layers", type=ints, default=[4, 8, 16, 32, 64, 128], help="N values (default 4,8,16,32,64,128)")
    p.add_argument("--nodes", type=ints, default=[17, 33, 65], help="M values (default 17,33,65)")
    p.add_argument("--out", default="results/stability_sweep", help="output directory")
    p.add_argument("--index", default=None, help="run one grid point (an integer, or 'env' for SLURM_ARRAY_TASK_ID)")
    p.add_argument("--collect", action="store_true", help="only collect existing point files")
    p.add_argument("--emit-slurm", default=None, metavar="FILE", help="write a SLURM array job script and stop")
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks per point in the SLURM script")
    p.add_argument("--positivity-tol", type=float, default=1e-8)
    p.add_argument("--accuracy", default="mfc_hpc.training:sweep_accuracy", metavar="MODULE:FUNC",
                   help="scores a solution: FUNC(cfg, Z) -> test accuracy or None (default: the "
                        "extracted network on held-out / freshly drawn samples; 'none' to skip)")
    return p.parse_known_args(argv)


def grid(args) -> list[tuple[int, int]]:
    return [(N, M) for N in args.layers for M in args.nodes]


def point_path(out: Path, k: int) -> Path:
    return out / "points" / f"point_{k:04d}.json"


def run_one(args, k: int, comm) -> dict:
    from mfc_hpc.commands.stability import run_point
    from mfc_hpc.config import load_config

    N, M = grid(args)[k]
    cfg = load_config(args.config).replace(mesh={"nodes": M, "layers": N})
    acc = None
    if args.accuracy and args.accuracy != "none":
        mod, fn = args.accuracy.split(":")
        acc = getattr(importlib.import_module(mod), fn)
    rec = run_point(cfg, comm, args.positivity_tol, acc)
    rec["index"] = k
    return rec


def collect(args) -> dict:
    """Hit rate and misses over the point files; writes sweep.json and the diagram."""
    from mfc_hpc.output import write_json

    out = Path(args.out)
    pts = []
    for k in range(len(grid(args))):
        f = point_path(out, k)
        if f.is_file():
            pts.append(json.loads(f.read_text()))
    missing = [k for k in range(len(grid(args))) if not point_path(out, k).is_file()]
    rows, misses = [], []
    for r in pts:
        pred = r["a_priori"]["stable"]
        post = r["a_posteriori"]["stable"] if r.get("a_posteriori") else None
        obs = r["observed"]["stable"]
        row = {"layers": r["layers"], "nodes": r["nodes"], "a_priori": pred, "a_posteriori": post,
               "observed": obs, "converged": r["newton"]["converged"], "iterations": r["newton"]["iterations"],
               "min_density": r["min_density"], "positive": r["observed"]["positive"],
               "monotone": r["observed"]["monotone"], "test_accuracy": r.get("test_accuracy"),
               "dt_outflow_rate": {"a_priori": r["a_priori"]["dt_outflow_rate"],
                                   "observed": r["observed"]["dt_outflow_rate"]},
               "dt_compression": {"a_priori": r["a_priori"]["dt_compression"],
                                  "observed": r["observed"]["dt_compression"]}}
        rows.append(row)
        if pred != obs:
            misses.append({**row, "kind": "false stable" if pred else "false unstable"})
    n = len(rows)
    hits = sum(r["a_priori"] == r["observed"] for r in rows)
    post_rows = [r for r in rows if r["a_posteriori"] is not None]
    res = {"config": args.config, "layers": args.layers, "nodes": args.nodes, "points": rows,
           "missing_points": missing,
           "hit_rate": hits / n if n else None, "hits": hits, "total": n,
           "false_stable": sum(m["kind"] == "false stable" for m in misses),
           "false_unstable": sum(m["kind"] == "false unstable" for m in misses),
           "a_posteriori_hit_rate": (sum(r["a_posteriori"] == r["observed"] for r in post_rows) / len(post_rows))
           if post_rows else None,
           "misses": misses}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", res)
    draw(args, rows, out / "stability_diagram.png")
    print(f"{'N':>4s} {'M':>5s} {'prior':>8s} {'post':>8s} {'observed':>9s} {'Newton':>7s} {'min rho':>10s} "
          f"{'dt*rate':>8s} {'dt*comp':>8s}")
    v = {True: "stable", False: "UNSTABLE", None: "-"}
    for r in rows:
        print(f"{r['layers']:4d} {r['nodes']:5d} {v[r['a_priori']]:>8s} {v[r['a_posteriori']]:>8s} "
              f"{v[r['observed']]:>9s} {('%d' % r['iterations']) if r['converged'] else 'FAIL':>7s} "
              f"{r['min_density']:10.2e} {r['dt_outflow_rate']['observed']:8.3g} {r['dt_compression']['observed']:8.3g}")
    print(f"a priori hit rate {hits}/{n}" + (f" = {hits / n:.2f}" if n else "")
          + f"; false stable {res['false_stable']}, false unstable {res['false_unstable']}"
          + (f"; a posteriori hit rate {res['a_posteriori_hit_rate']:.2f}" if post_rows else ""))
    for m in misses:
        print(f"miss ({m['kind']}): N = {m['layers']}, M = {m['nodes']}: positive {m['positive']}, "
              f"monotone {m['monotone']}, converged {m['converged']}, min density {m['min_density']:.2e}, "
              f"dt*rate {m['dt_outflow_rate']['a_priori']:.3g} (a priori) / {m['dt_outflow_rate']['observed']:.3g}, "
              f"dt*comp {m['dt_compression']['a_priori']:.3g} / {m['dt_compression']['observed']:.3g}")
    if missing:
        print(f"missing points: {missing}")
    return res


def draw(args, rows: list[dict], path: Path) -> None:
    """Observed stable (o) / unstable (x) points over the a priori boundary N_min(M)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mfc_hpc.config import load_config
    from mfc_hpc.problem import boundary_data, discretisation
    from mfc_hpc.stability import min_layers

    cfg = load_config(args.config)
    Ms = np.unique(np.geomspace(min(args.nodes), max(args.nodes), 40).astype(int))
    Nmin = [min_layers(discretisation(cfg.replace(mesh={"nodes": int(m)})),
                       boundary_data(cfg.replace(mesh={"nodes": int(m)}))) for m in Ms]
    Nmin = [np.nan if v is None else v for v in Nmin]  # None: rates overflow on that mesh
    Nmin = np.asarray(Nmin, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.plot(Ms, Nmin, "k-", label="a priori: smallest stable N")
    ax.fill_between(Ms, min(args.layers) / 1.5, Nmin, color="C3", alpha=0.12, label="predicted unstable")
    for obs, mk, c, lab in ((True, "o", "C0", "observed stable"), (False, "x", "C3", "observed unstable")):
        sel = [r for r in rows if r["observed"] == obs]
        if sel:
            ax.plot([r["nodes"] for r in sel], [r["layers"] for r in sel], mk, color=c, ms=9, mew=2, label=lab)
    miss = [r for r in rows if r["a_priori"] != r["observed"]]
    if miss:
        ax.plot([r["nodes"] for r in miss], [r["layers"] for r in miss], "s", mfc="none", color="k", ms=14,
                label="miss")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set(xlabel="nodes per layer M", ylabel="layers N", title="stability diagram")
    ax.set_ylim(min(args.layers) / 1.5, max(args.layers) * 1.5)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SLURM = """#!/bin/bash
#SBATCH --job-name=mfc-stability-sweep
#SBATCH --array=0-{last}
#SBATCH --ntasks={ranks}
#SBATCH --time=00:30:00
#SBATCH --output={out}/slurm-%A_%a.out
# One grid point per array task; afterwards: python scripts/stability_sweep.py --collect {common}
source {repo}/scripts/env.sh
srun $MFC_PYTHON {repo}/scripts/stability_sweep.py --index env {common}
"""


def main(argv: list[str] | None = None) -> int:
    args, petsc_args = parse(argv)
    out = Path(args.out)
    common = (f"--config {args.config} --layers {','.join(map(str, args.layers))} "
              f"--nodes {','.join(map(str, args.nodes))} --out {out} --positivity-tol {args.positivity_tol}"
              + (f" --accuracy {args.accuracy}" if args.accuracy else ""))
    if args.emit_slurm:
        out.mkdir(parents=True, exist_ok=True)
        Path(args.emit_slurm).write_text(SLURM.format(last=len(grid(args)) - 1, ranks=args.ranks, out=out,
                                                      common=common, repo=REPO))
        print(f"wrote {args.emit_slurm}: {len(grid(args))} array tasks")
        return 0
    if args.collect:
        collect(args)
        return 0
    petsc4py.init([sys.argv[0]] + petsc_args)
    from petsc4py import PETSc

    from mfc_hpc.logs import setup_logging
    from mfc_hpc.output import write_json

    setup_logging("WARNING")
    comm = PETSc.COMM_WORLD
    rank = comm.getRank()
    if args.index is not None:
        k = int(os.environ["SLURM_ARRAY_TASK_ID"]) if args.index == "env" else int(args.index)
        if not 0 <= k < len(grid(args)):
            print(f"stability_sweep: error: --index {k} outside 0..{len(grid(args)) - 1}", file=sys.stderr)
            return 2
        todo = [k]
    else:
        todo = list(range(len(grid(args))))
    for k in todo:
        rec = run_one(args, k, comm)
        if rank == 0:
            point_path(out, k).parent.mkdir(parents=True, exist_ok=True)
            write_json(point_path(out, k), rec)
            print(f"point {k}: N = {rec['layers']}, M = {rec['nodes']}: a priori "
                  f"{'stable' if rec['a_priori']['stable'] else 'unstable'}, observed "
                  f"{'stable' if rec['observed']['stable'] else 'unstable'}", flush=True)
    if args.index is None and rank == 0:
        collect(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
