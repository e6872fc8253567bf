#!/usr/bin/env python3
"""Checkpoint write and read bandwidth (MB/s) for a state of about 1e6 unknowns, 1-D or 2-D.

    scripts/bench_checkpoint.py [--ranks 1,2] [--repeats 5] [--unknowns 1e6] [--dim 1|2] [--dir DIR] [--json FILE]

For each rank count it runs itself under ``mpiexec -n R``: every repeat writes one
checkpoint (:meth:`mfc_hpc.fileio.restart.Checkpointer.write`: per-rank hyperslabs
through h5py ``mpio`` or the gather policy of :mod:`mfc_hpc.fileio.hdf5`, checksums,
fsync, rename) and reads it back the way a restart does (each rank its own hyperslab,
checksums verified). Bandwidth = state bytes (rho + phi, float64) / seconds, median over
the repeats. Prints a table and writes JSON. Numbers depend on the file system of DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import petsc4py
    petsc4py.init([])
    import numpy as np
    from petsc4py import PETSc

    from mfc_hpc.config import config_from_dict
    from mfc_hpc.config.sections import CheckpointConfig
    from mfc_hpc.drivers.run import Run
    from mfc_hpc.fileio.checkpoint import probe_collective
    from mfc_hpc.fileio.restart import Checkpointer
    from mfc_hpc.jobs.solve import shared_problem

    N = 255 if a.dim == 1 else 63
    M = max(3, round((a.unknowns / (2 * (N + 1))) ** (1.0 / a.dim)))
    mesh = {"nodes": M if a.dim == 1 else [M] * a.dim, "layers": N}
    if a.dim > 1:
        mesh.update(x_min=[-3.0] * a.dim, x_max=[3.0] * a.dim)
    cls = {"mean": 0.0 if a.dim == 1 else [0.0] * a.dim, "var": 0.25 if a.dim == 1 else [0.25] * a.dim}
    loss = {"kind": "quadratic", "target": 0.0 if a.dim == 1 else [0.0] * a.dim}
    cfg = config_from_dict({"mesh": mesh, "classes": [cls], "loss": loss, "solver": {"linear": "direct"}})
    comm = PETSc.COMM_WORLD
    run = Run(shared_problem(cfg, comm), comm, verbose=False)
    ms = run.solvers[-1]
    X = ms.X
    rng = np.random.default_rng(comm.getRank())
    X.getArray()[:] = rng.random(X.getLocalSize())
    ck = Checkpointer(comm, Path(a.dir) / f"r{comm.getSize()}", CheckpointConfig(keep=1))
    mpi = comm.tompi4py()
    nbytes = X.getSize() * 8
    tw, tr = [], []
    for _ in range(a.repeats):
        mpi.Barrier()
        t = time.perf_counter()
        path = ck.write(run, ms, "time")  # a reason restart accepts (as a timed checkpoint)
        mpi.Barrier()
        tw.append(time.perf_counter() - t)
        mpi.Barrier()
        t = time.perf_counter()
        hdr = probe_collective(path, mpi)
        ck._load_exact(path, hdr, ms)
        mpi.Barrier()
        tr.append(time.perf_counter() - t)
    if mpi.rank == 0:
        res = {"ranks": mpi.size, "dim": a.dim, "unknowns": X.getSize(), "nodes": M, "layers": N, "bytes": nbytes,
               "repeats": a.repeats, "write_s": tw, "read_s": tr,
               "write_MBps": nbytes / 1e6 / float(np.median(tw)), "read_MBps": nbytes / 1e6 / float(np.median(tr))}
        Path(a.result).write_text(json.dumps(res))
    run.destroy(keep_final=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="rank counts (comma list)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--unknowns", type=float, default=1e6)
    p.add_argument("--dim", type=int, default=1, choices=[1, 2], help="state dimension")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    p.add_argument("--json", default="results/bench_checkpoint.json", help="result file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        for r in (int(x) for x in a.ranks.split(",")):
            res = Path(tmp) / f"res{r}.json"
            cmd = ["mpiexec", "-n", str(r), sys.executable, __file__, "--child", "--repeats", str(a.repeats),
                   "--unknowns", str(a.unknowns), "--dim", str(a.dim), "--dir", tmp, "--result", str(res)]
            env = dict(os.environ, OMP_NUM_THREADS="1", H5PY_ALWAYS_USE_MPI="1",
                       PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            rows.append(json.loads(res.read_text()))
        fs = subprocess.run(["df", "-T", tmp], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
    print(f"checkpoint bandwidth, {rows[0]['dim']}-D state, {rows[0]['unknowns']} unknowns "
          f"({rows[0]['bytes'] / 1e6:.1f} MB), median of {a.repeats}, file system {fs}")
    print(f"{'ranks':>5}  {'write MB/s':>10}  {'read MB/s':>10}  {'write s':>8}  {'read s':>8}")
    for r in rows:
        print(f"{r['ranks']:>5}  {r['write_MBps']:>10.1f}  {r['read_MBps']:>10.1f}  "
              f"{sorted(r['write_s'])[len(r['write_s']) // 2]:>8.3f}  {sorted(r['read_s'])[len(r['read_s']) // 2]:>8.3f}")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"filesystem": fs, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
