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
from ..errors import BadInput, OutputError
from ..parallel.events import phase_times
from ..parallel.snes import MeshSolver
from ..problem.build import Problem, build_problem
from ..fileio.solution import write_solution
from ..fileio.summary import versions, write_json
from ..fileio.xdmf import write_xdmf

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
    """Run ``fn`` on rank 0 and broadcast its result; its exception is raised on every rank."""
    res, err = None, None
    if comm.rank == 0:
        try:
            res = fn(*args)
        except (BadInput, OutputError) as e:
            err = e
        except Exception as e:  # noqa: BLE001 - never leave the other ranks waiting
            err = e
    res, err = comm.bcast((res, err), root=0)
    if err is not None:
        raise err
    return res


def shared_problem(cfg: Config, comm=None) -> Problem:
    """:func:`build_problem` on rank 0 (the data table read once), shared with all ranks."""
    comm = (comm or PETSc.COMM_WORLD).tompi4py()
    return collective(comm, build_problem, cfg)


def prepare_out_dir(out_dir: str | Path, comm=None) -> Path:
    """Create the output directory (rank 0) and check it is a writable directory; the
    verdict is shared (a rank that could not create it never leaves the others waiting)."""
    comm = (comm or PETSc.COMM_WORLD).tompi4py()
    out = Path(out_dir)

    def make() -> Path:
        if not str(out_dir).strip():
            raise BadInput("--out: the output directory name is empty")
        if out.exists() and not out.is_dir():
            raise BadInput(f"--out: {out} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"--out: cannot create {out}: {e.strerror or e}") from None
        probe = out / f".mfc_write_test.{__import__('os').getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise BadInput(f"--out: {out} is not writable: {e.strerror or e}") from None
        return out

    return collective(comm, make)


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
