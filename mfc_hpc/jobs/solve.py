"""One configuration to results on disk: build the problem (once, on rank 0, shared), run
the driver with its observers, write ``solution.h5``, ``summary.json`` and the XDMF
sidecar. Collective over the communicator; every error is agreed on by all ranks first
(no rank waits for another that failed)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from petsc4py import PETSc

from ..config import Config
from ..drivers.run import Run
from ..parallel.agreement import collective as _collective
from ..parallel.events import phase_times
from ..parallel.snes import MeshSolver
from ..problem.build import Problem, build_problem
from ..fileio.solution import write_solution
from ..fileio.summary import versions, write_json
from ..fileio.xdmf import write_xdmf
from .inputs import prepare_dir

__all__ = ["Outcome", "shared_problem", "prepare_out_dir", "solve", "collective"]

log = logging.getLogger(__name__.split(".")[-1])


@dataclass
class Outcome:
    """What a solve gives: the fine-mesh solver (caller destroys it), the summary, the
    problem."""

    ms: MeshSolver
    summary: dict
    problem: Problem

    @property
    def converged(self) -> bool:
        return bool(self.summary["converged"])


def collective(comm, fn, *args):
    """Run ``fn`` on rank 0 and broadcast its result; its exception is raised on every rank
    (:func:`mfc_hpc.parallel.agreement.collective`)."""
    return _collective(comm, fn, *args)


def shared_problem(cfg: Config, comm=None) -> Problem:
    """:func:`build_problem` on rank 0 (the data table read once), shared with all ranks."""
    comm = (comm or PETSc.COMM_WORLD).tompi4py()
    return collective(comm, build_problem, cfg)


def prepare_out_dir(out_dir: str | Path, comm=None) -> Path:
    """Create the output directory (rank 0) and check on every rank that it is a writable
    directory (:func:`mfc_hpc.jobs.inputs.prepare_dir`); the verdict is shared, so a rank
    that could not create or write it never leaves the others waiting."""
    comm = (comm or PETSc.COMM_WORLD).tompi4py()
    return prepare_dir(out_dir, "--out", comm)


def solve(cfg: Config | Problem, comm: PETSc.Comm | None = None, out_dir: str | Path | None = None,
          observers=(), verbose: bool = True, xdmf: bool | None = None) -> Outcome:
    """Run one configuration to the end; with ``out_dir`` write ``summary.json`` and
    ``solution.h5`` there (also when the solve fails: then the summary says why and the
    solution holds the last iterate)."""
    comm = comm or PETSc.COMM_WORLD
    mpi = comm.tompi4py()
    problem = cfg if isinstance(cfg, Problem) else shared_problem(cfg, comm)
    for note in problem.notes:
        log.info("%s", note)
    out = prepare_out_dir(out_dir, comm) if out_dir is not None else None
    run = Run(problem, comm, observers=observers, verbose=verbose)
    try:
        ms, summary = run.execute()
    except BaseException:
        run.destroy(keep_final=False)
        raise
    summary["versions"] = versions()
    if out is not None:
        write_solution(out / "solution.h5", ms.mesh, ms.X,
                       attrs={"config": summary["config"], "versions": summary["versions"],
                              "converged": bool(summary["converged"])})
        summary["timings"] = dict(summary["timings"], **phase_times())
        collective(mpi, write_json, out / "summary.json", summary)
        st = problem.cfg.checkpoint
        if (st.xdmf if xdmf is None else xdmf) and mpi.rank == 0:
            try:
                write_xdmf(out / "solution.h5", ms.d.grid.nodes, ms.d.N, ms.d.K)
            except OSError as e:
                log.warning("could not write %s: %s", out / "solution.xmf", e)
    run.destroy(keep_final=True)
    return Outcome(ms, summary, problem)
