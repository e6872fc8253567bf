"""The collective side of the stability study: solve one mesh and record what it shows,
and the coarse reference solve of the sharp rule.

Every solve goes through :func:`mfc_hpc.jobs.solve.solve` (collective, any number of ranks)
and writes ``solution.h5``; what needs the whole state (the density's maximum, the test
accuracy of the extracted network, the reference densities) is read from that file on
rank 0 and broadcast, never gathered from the distributed vector.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from petsc4py import PETSc

from ..fileio.solution import read_solution
from ..jobs.solve import solve
from ..numerics.model import Discretisation
from ..problem.build import Problem
from .stability import (ACCURACY_TOL, POSITIVITY_TOL, AccuracyFn, Reference, a_posteriori, a_priori, observed,
                        zero_network_state)

__all__ = ["state_from_file", "on_root", "solve_point", "reference_mesh", "reference_solve"]

log = logging.getLogger("stability")


def state_from_file(path: str | Path) -> np.ndarray:
    """``Z[n, *i, a]`` (densities then adjoints) from a ``solution.h5`` (serial read)."""
    sol = read_solution(path)
    rho, phi = sol["rho"], sol["phi"]  # (N+1, K, *nodes)
    return np.concatenate([np.moveaxis(rho, 1, -1), np.moveaxis(phi, 1, -1)], axis=-1)


def on_root(comm, fn, *args):
    """``fn(*args)`` on rank 0, its result (or exception) on every rank; the other ranks wait
    in a non-blocking barrier and sleep between tests (serial post-processing that takes
    minutes does not keep them spinning on a shared machine)."""
    import time

    mpi = comm.tompi4py() if hasattr(comm, "tompi4py") else comm
    res, err = None, None
    if mpi.rank == 0:
        try:
            res = fn(*args)
        except Exception as e:  # noqa: BLE001 - raised on every rank below
            err = e
    req = mpi.Ibarrier()
    while not req.Test():
        time.sleep(0.05)
    res, err = mpi.bcast((res, err), root=0)
    if err is not None:
        raise err
    return res


def solve_point(problem: Problem, comm: PETSc.Comm | None = None, out_dir: str | Path = "point",
                positivity_tol: float = POSITIVITY_TOL, accuracy: AccuracyFn | None = None,
                accuracy_tol: float = ACCURACY_TOL, keep_solution: bool = True) -> dict:
    """Solve the problem's mesh (collective) and record, on every rank: the a priori verdict,
    how Newton went, the diagnostics, the a posteriori verdict and what the run shows
    (:func:`~mfc_hpc.studies.stability.observed`; the maximum density and the accuracies
    read from ``out_dir/solution.h5`` on rank 0)."""
    comm = comm or PETSc.COMM_WORLD
    out = Path(out_dir)
    res = solve(problem, comm, out_dir=out, verbose=False)
    try:
        s = res.summary
        ok = bool(s["converged"])
        diag = s["diagnostics"]
        rec: dict = {"nodes": _one(problem.grid.nodes), "layers": problem.d.N, "ranks": comm.getSize(),
                     "a_priori": a_priori(problem),
                     "newton": {"converged": ok, "iterations": s["newton_iterations_fine"], "failure": s["failure"],
                                "linear_solver": s["linear_solver"]},
                     "diagnostics": {k: diag[k] for k in ("min_density", "dt_max_outflow_rate", "dt_max_compression",
                                                          "min_block_determinant", "mass_error_max", "finite")}}
    finally:
        res.ms.destroy()

    def measure() -> dict:
        Z = state_from_file(out / "solution.h5")
        K = problem.d.K
        rmax = float(np.max(Z[..., :K]))
        acc = base = None
        if accuracy is not None and ok and diag["finite"]:
            acc = accuracy(problem, Z)
            if acc is not None:
                base = accuracy(problem, zero_network_state(Z, K))
        return {"max_density": rmax, "accuracy": None if acc is None else float(acc),
                "baseline_accuracy": None if base is None else float(base)}

    m = on_root(comm, measure)
    rec.update(max_density=m["max_density"], test_accuracy=m["accuracy"], baseline_accuracy=m["baseline_accuracy"])
    rec["a_posteriori"] = a_posteriori(diag) if ok else None
    rec["observed"] = observed(ok, diag, m["max_density"], positivity_tol, m["accuracy"], m["baseline_accuracy"],
                               accuracy_tol)
    if not keep_solution and comm.tompi4py().rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    return rec


def reference_mesh(problem: Problem) -> tuple[tuple[int, ...], int]:
    """The default coarse mesh of the sharp rule: every ``M_k - 1`` and ``N`` halved (at least
    9 nodes per axis and 2 layers), or the problem's own mesh when that is already that small."""
    nodes = tuple(max(9, (m - 1) // 2 + 1) if m > 9 else m for m in problem.grid.nodes)
    return nodes, max(2, problem.d.N // 2) if problem.d.N > 2 else problem.d.N


def reference_solve(problem: Problem, comm: PETSc.Comm | None = None, out_dir: str | Path = "reference",
                    nodes: tuple[int, ...] | None = None, layers: int | None = None) -> Reference | None:
    """Solve the problem on the coarse reference mesh (collective) and return its state as a
    :class:`~mfc_hpc.studies.stability.Reference` on rank 0 (``None`` on the other ranks)."""
    comm = comm or PETSc.COMM_WORLD
    if nodes is None or layers is None:
        n0, l0 = reference_mesh(problem)
        nodes, layers = nodes or n0, layers or l0
    coarse = problem.on_mesh(tuple(nodes), int(layers))
    label = f"coarse solve {' x '.join(map(str, coarse.grid.nodes))} nodes x {coarse.d.N} layers"
    log.info("sharp rule: reference %s", label)
    res = solve(coarse, comm, out_dir=Path(out_dir), verbose=False)
    ok = bool(res.summary["converged"])
    d: Discretisation = coarse.d
    res.ms.destroy()
    if not ok:
        log.warning("sharp rule: the reference solve did not converge (%s); its last iterate is used",
                    res.summary["failure"])
    if comm.tompi4py().rank != 0:
        return None
    return Reference(state_from_file(Path(out_dir) / "solution.h5"), d, ok, label + ("" if ok else " (not converged)"))


def _one(v: tuple):
    return v[0] if len(v) == 1 else list(v)
