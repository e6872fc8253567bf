#!/usr/bin/env python
"""Stability sweep over (N layers, M nodes per axis), d = 1 or 2: what each point shows
against the a priori, a posteriori and sharp rules (mfc_hpc.studies.sweep).

Each grid point ``k`` (row-major over ``--layers`` x ``--nodes``) is one solve on the base
configuration's box with ``M`` nodes per axis (other axes scaled alike) and ``N`` layers;
it records whether it failed and how (Newton failure, lost positivity, a non-invertible
block, test accuracy below the zero network's). Modes:

* default: run every point here (under ``mpiexec -n P`` each solve uses P ranks), then collect;
* ``--index k`` (or ``env``: ``SLURM_ARRAY_TASK_ID``): run point ``k`` only and write
  ``OUT/points/point_k.json`` (one task of an array job);
* ``--emit-slurm FILE``: write a SLURM array script (one task per point) and stop;
* ``--collect``: read ``OUT/points/*.json``, solve the sharp rule's coarse reference once,
  give every point each rule's verdict, print the table, hit rates and every miss, write
  ``OUT/sweep.json``, ``OUT/sweep.md`` (the tables in Markdown) and ``OUT/stability_diagram.png``.

Test accuracy: ``--accuracy MODULE:FUNC`` with ``FUNC(problem, Z) -> float | None`` (``Z[n, *i, a]``);
default ``mfc_hpc.learning.evaluate:sweep_accuracy`` when it imports, ``none`` to skip.

Example: ``mpiexec -n 2 python scripts/stability_sweep.py --config CFG --layers 2,4,8 --nodes 9,17,33 --out DIR``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_CONFIG = REPO / "mfc_hpc" / "examples" / "closed_form.toml"
DEFAULT_ACCURACY = "mfc_hpc.learning.evaluate:sweep_accuracy"


def _fail(msg: str) -> int:
    print(f"stability_sweep.py: error: {msg}", file=sys.stderr, flush=True)
    return 2


def ints(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {s!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return v


def mesh_pair(s: str) -> tuple[int, int]:
    try:
        m, n = (int(x) for x in s.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NODES:LAYERS, got {s!r}") from None
    if m < 3 or n < 1:
        raise argparse.ArgumentTypeError(f"expected NODES >= 3 and LAYERS >= 1, got {s!r}")
    return m, n


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="base TOML configuration (d = 1 or 2)")
    p.add_argument("--layers", type=ints, default=[4, 8, 16, 32, 64, 128], help="N values")
    p.add_argument("--nodes", type=ints, default=[17, 33, 65], help="M values (nodes per axis)")
    p.add_argument("--out", default="results/stability_sweep", help="output directory")
    p.add_argument("--index", default=None, help="run one grid point (an integer, or 'env' for SLURM_ARRAY_TASK_ID)")
    p.add_argument("--collect", action="store_true", help="only collect existing point files")
    p.add_argument("--emit-slurm", default=None, metavar="FILE", help="write a SLURM array job script and stop")
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks per point in the SLURM script")
    p.add_argument("--positivity-tol", type=float, default=None,
                   help="densities down to -tol * max density count as non-negative (default 1e-8)")
    p.add_argument("--accuracy-tol", type=float, default=None,
                   help="test accuracy may fall this far below the zero network's (default 0.01)")
    p.add_argument("--accuracy", default=None, metavar="MODULE:FUNC",
                   help=f"test accuracy of a solution: FUNC(problem, Z) -> float or None (default {DEFAULT_ACCURACY} "
                        "when it imports; 'none' to skip)")
    p.add_argument("--reference", type=mesh_pair, default=None, metavar="NODES:LAYERS",
                   help="the sharp rule's coarse solve (default: the base mesh with M - 1 and N halved)")
    p.add_argument("--sharp-sweeps", type=int, default=None,
                   help="forward-backward sweeps of the sharp rule when it freezes a coupling (default 3)")
    p.add_argument("--boundary-nodes", type=ints, default=None,
                   help="node counts at which the rules' boundaries are drawn (default the sweep's)")
    p.add_argument("--keep-solutions", action="store_true", help="keep OUT/solutions/point_k/solution.h5")
    return p.parse_known_args(argv)


def accuracy_fn(spec: str | None):
    """The accuracy function and a note on where it came from."""
    if spec is not None and spec.lower() == "none":
        return None, "not measured (--accuracy none)"
    name = spec or DEFAULT_ACCURACY
    mod, _, fn = name.partition(":")
    try:
        f = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        if spec is None:
            return None, f"not measured ({DEFAULT_ACCURACY} unavailable: {e})"
        raise SystemExit(_fail(f"--accuracy {name}: cannot import it ({e})"))
    return f, name


def main(argv: list[str] | None = None) -> int:
    args, petsc_args = parse(argv)
    from mfc_hpc.studies.stability import ACCURACY_TOL, POSITIVITY_TOL, SWEEPS
    from mfc_hpc.studies.sweep import SweepSpec

    ptol = POSITIVITY_TOL if args.positivity_tol is None else args.positivity_tol
    atol = ACCURACY_TOL if args.accuracy_tol is None else args.accuracy_tol
    if not ptol >= 0 or not atol >= 0:
        return _fail("--positivity-tol and --accuracy-tol must be >= 0")
    sweeps = SWEEPS if args.sharp_sweeps is None else args.sharp_sweeps
    if sweeps < 1:
        return _fail(f"--sharp-sweeps: must be >= 1, got {sweeps}")
    out = Path(args.out)
    spec = SweepSpec(args.config, args.layers, args.nodes, out, ptol, atol, args.keep_solutions, args.reference, sweeps)
    n = len(spec.grid())
    common = (f"--config {args.config} --layers {','.join(map(str, args.layers))} "
              f"--nodes {','.join(map(str, args.nodes))} --out {out} --positivity-tol {ptol} --accuracy-tol {atol}"
              + (f" --accuracy {args.accuracy}" if args.accuracy else "")
              + (f" --reference {args.reference[0]}:{args.reference[1]}" if args.reference else "")
              + (f" --sharp-sweeps {sweeps}" if args.sharp_sweeps is not None else "")
              + (" --keep-solutions" if args.keep_solutions else ""))
    if args.emit_slurm:
        out.mkdir(parents=True, exist_ok=True)
        Path(args.emit_slurm).write_text(SLURM.format(last=n - 1, ranks=args.ranks, out=out.resolve(), common=common,
                                                      repo=REPO))
        print(f"wrote {args.emit_slurm}: {n} array tasks; afterwards: python {REPO}/scripts/stability_sweep.py "
              f"--collect {common}")
        return 0
    import petsc4py

    petsc4py.init([sys.argv[0]] + petsc_args)
    from petsc4py import PETSc

    from mfc_hpc.errors import BadInput
    from mfc_hpc.config import load_config
    from mfc_hpc.jobs.solve import shared_problem
    from mfc_hpc.logs import setup_logging
    from mfc_hpc.studies.pictures import sweep_diagram
    from mfc_hpc.studies.sweep import collect, markdown, run_point, table

    setup_logging("WARNING")
    comm = PETSc.COMM_WORLD
    rank = comm.getRank()
    try:
        base = shared_problem(load_config(args.config), comm)
    except BadInput as e:
        return _fail(str(e)) if rank == 0 else 2
    acc, acc_note = accuracy_fn(args.accuracy)
    if args.index is not None:
        try:
            k = int(os.environ["SLURM_ARRAY_TASK_ID"]) if args.index == "env" else int(args.index)
        except (KeyError, ValueError):
            return _fail(f"--index {args.index}: expected an integer (or 'env' inside an array job)")
        if not 0 <= k < n:
            return _fail(f"--index {k} outside 0..{n - 1}")
        todo = [k]
    elif args.collect:
        todo = []
    else:
        todo = list(range(n))
    for k in todo:
        rec = run_point(spec, base, k, comm, acc)
        if rank == 0:
            o = rec["observed"]
            print(f"point {k}: N = {rec['layers']}, M = {rec['M']}: observed "
                  f"{'stable' if o['stable'] else 'UNSTABLE (' + ', '.join(o['failures']) + ')'}", flush=True)
    if args.index is None:
        res = collect(spec, base, comm, acc, args.boundary_nodes)
        if rank == 0:
            res["accuracy"] = acc_note
            from mfc_hpc.fileio.summary import write_json

            write_json(out / "sweep.json", res)
            print(table(res), flush=True)
            print(f"test accuracy: {acc_note}")
            sweep_diagram(res, out / "stability_diagram.png")
            (out / "sweep.md").write_text(markdown(res) + "\n")
            print(f"wrote {out}/sweep.json, {out}/sweep.md and {out}/stability_diagram.png")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
