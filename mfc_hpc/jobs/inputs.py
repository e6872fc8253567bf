"""The one input boundary of a job: everything a command reads or writes is checked here,
collectively, before any work starts.

Every check ends in an agreement of all ranks (:mod:`mfc_hpc.parallel.agreement`), so a
failure on one rank (a file it cannot see, a directory read-only on its node) is raised on
every rank and no rank is left waiting in a collective call. Each failure is a
:class:`~mfc_hpc.errors.BadInput` whose one-line message names the key, file, option or
directory (exit status 2). In order:

1. the configuration (:func:`load_config_collective`: read and validated on rank 0,
   shared);
2. the user's PETSc options (:func:`mfc_hpc.parallel.options.check_user_options`);
3. the data (:func:`mfc_hpc.problem.build.build_problem` on rank 0, shared: tables,
   samples files, mass lost outside the mesh);
4. the output locations (:func:`prepare_dir`): a directory (created if missing), visible
   and writable on every rank, with room for the first file the job writes when the file
   system says how much is free;
5. the output directory's lock (:class:`~mfc_hpc.fileio.lock.DirectoryLock`: a concurrent
   run into the same directory is refused naming its owner; a stale lock is taken over)
   and the removal of temporaries a killed writer left there.

Other commands reuse the pieces: :func:`load_config_collective`, :func:`check_options`,
:func:`prepare_dir`, :func:`check_input_file`, :func:`lock_dirs`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, load_config
from ..config.sections import CheckpointConfig
from ..drivers.run import grid_levels
from ..errors import BadInput
from ..fileio.hdf5 import SPACE_MARGIN, HDF5_SIGNATURE, free_bytes, human, remove_temporaries
from ..fileio.lock import DirectoryLock
from ..parallel.agreement import collective, on_every_rank
from ..parallel.mesh import process_grid_error
from ..parallel.options import check_user_options
from ..problem.build import Problem, build_problem

__all__ = ["SolveInputs", "CheckpointOverrides", "check_solve_inputs", "load_config_collective", "check_options",
           "check_process_grid", "check_data_files",
           "prepare_dir", "check_input_file", "lock_dirs", "release_locks", "solution_bytes", "checkpoint_bytes",
           "OUTPUT_NAMES"]

#: the files a solve writes into its output directory (their temporaries are removed
#: when a run takes the directory's lock)
OUTPUT_NAMES = ("solution.h5", "summary.json", "solution.xmf")


def _mpi(comm):
    return comm.tompi4py() if hasattr(comm, "tompi4py") else comm


def load_config_collective(path: str | Path, comm) -> Config:
    """:func:`mfc_hpc.config.load_config` on rank 0, the result (or its error) on every rank."""
    return collective(_mpi(comm), load_config, path)


def check_options(comm) -> None:
    """The user's ``-mfc_*`` PETSc options (values, types, ranges), agreed by all ranks."""
    on_every_rank(_mpi(comm), check_user_options)


def check_data_files(cfg: Config) -> None:
    """HDF5 data tables are opened in a child process with a time limit before the
    problem reads them (a damaged HDF5 file can hang or crash the HDF5 library); call on
    the rank that reads them."""
    from ..fileio.hdf5 import probe_in_child

    files = []
    if cfg.data is not None and not cfg.data.file.startswith("builtin:"):
        files.append(("data.file", cfg.data.file))
    for f in [c.samples for c in cfg.classes] + [t.samples for t in cfg.loss.targets]:
        if f:
            files.append(("samples", f))
    for key, f in files:
        if Path(f).suffix.lower() in (".h5", ".hdf5"):
            with open(f, "rb") as fh:
                if fh.read(8) != HDF5_SIGNATURE:
                    raise BadInput(f"{key}: {f} is not an HDF5 file")
            try:
                probe_in_child(f)
            except BadInput as e:
                raise BadInput(f"{key}: {e}") from None


def check_process_grid(problem: Problem, size: int) -> None:
    """``solver.process_grid`` against the rank count and the mesh (every grid level is a
    coarsening of the finest mesh, whose decomposition is what is chosen here)."""
    why = process_grid_error(tuple(problem.cfg.solver.process_grid), tuple(problem.grid.nodes) + (problem.d.N + 1,),
                             size)
    if why:
        raise BadInput(why)


def check_input_file(path: str | Path, what: str, comm, hdf5: bool = False) -> Path:
    """An input file every rank can read: exists, is a regular file, readable (and starts
    with the HDF5 signature with ``hdf5``); agreed by all ranks."""
    mpi = _mpi(comm)
    p = Path(path)
    if not str(path).strip():
        raise BadInput(f"{what}: the file name is empty")

    def check() -> None:
        where = _where(mpi)
        if not p.exists():
            raise BadInput(f"{what}: no such file: {p}{where}")
        if p.is_dir():
            raise BadInput(f"{what}: {p} is a directory, not a file{where}")
        if not p.is_file():
            raise BadInput(f"{what}: {p} is not a regular file{where}")
        try:
            with open(p, "rb") as fh:
                head = fh.read(8)
        except OSError as e:
            raise BadInput(f"{what}: cannot read {p}{where}: {e.strerror or e}") from None
        if hdf5 and head != HDF5_SIGNATURE:
            raise BadInput(f"{what}: {p} is not an HDF5 file" + (" (empty)" if not head else ""))

    on_every_rank(mpi, check)
    return p


def _settle_seconds() -> float:
    """How long a rank waits to see a directory rank 0 just created (``MFC_FS_SETTLE_SECONDS``,
    default 10: NFS caches that a name does not exist)."""
    try:
        return float(os.environ.get("MFC_FS_SETTLE_SECONDS", "10"))
    except ValueError:
        return 10.0


def _where(mpi) -> str:
    return f" (on rank {mpi.rank}, host {socket.gethostname()})" if mpi.size > 1 else ""


def prepare_dir(path: str | Path, option: str, comm, need_bytes: int = 0) -> Path:
    """An output directory: created on rank 0 if missing, then checked on every rank (a
    directory, visible, writable) and, on rank 0, for ``need_bytes`` of free space (when
    the file system says); agreed by all ranks. Raises BadInput naming ``option``."""
    mpi = _mpi(comm)
    if not str(path).strip():
        raise BadInput(f"{option}: the directory name is empty")
    p = Path(path)

    def make() -> None:
        if p.exists() and not p.is_dir():
            raise BadInput(f"{option}: {p} exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"{option}: cannot create {p}: {e.strerror or e}") from None

    collective(mpi, make)

    def check() -> None:
        where = _where(mpi)
        deadline = time.monotonic() + _settle_seconds()
        while not p.is_dir() and mpi.rank != 0 and time.monotonic() < deadline:
            try:  # a network file system may show rank 0's new directory a little later
                os.listdir(p.parent)
            except OSError:
                pass
            time.sleep(0.2)
        if not p.is_dir():
            raise BadInput(f"{option}: {p} is not a directory{where} (every rank must see the output directory)")
        probe = p / f".mfc_write_test.{socket.gethostname()}.{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"mfc_hpc")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise BadInput(f"{option}: {p} is not writable{where}: {e.strerror or e}") from None
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
        if need_bytes and mpi.rank == 0:
            free = free_bytes(p)
            if free is not None and free < need_bytes:
                raise BadInput(f"{option}: not enough space in {p}: the first file written needs about "
                               f"{human(need_bytes)}, {human(free)} free")

    on_every_rank(mpi, check)
    return p


def lock_dirs(dirs: list[tuple[Path, str]], comm, command: str | None = None) -> list[DirectoryLock]:
    """Lock each ``(directory, option)`` on rank 0 (agreed: a held lock is refused on
    every rank, naming its owner); returns the locks (empty on other ranks)."""
    mpi = _mpi(comm)
    locks: list[DirectoryLock] = []

    def take() -> list[str]:
        notes = []
        for d, opt in dirs:
            lk = DirectoryLock(d, opt)
            try:
                lk.acquire(command)
            except BaseException:
                release_locks(locks)
                raise
            locks.append(lk)
            if lk.took_over:
                notes.append(f"{d}: took over a stale lock ({lk.took_over})")
        return notes

    notes = collective(mpi, take)
    del notes
    return locks


def release_locks(locks: list[DirectoryLock]) -> None:
    for lk in reversed(locks):
        lk.release()


def _state_bytes(problem: Problem, arrays: int) -> int:
    n = (problem.d.N + 1) * problem.K * math.prod(problem.grid.nodes)
    return 8 * n * arrays + SPACE_MARGIN + 8 * (sum(problem.grid.nodes) + problem.d.N + 1)


def solution_bytes(problem: Problem) -> int:
    """About the size of ``solution.h5`` (rho, phi, coordinates, attributes)."""
    return _state_bytes(problem, 2)


def checkpoint_bytes(problem: Problem) -> int:
    """About the size of the largest checkpoint (the state and the last accepted state)."""
    return _state_bytes(problem, 4)


@dataclass(frozen=True)
class CheckpointOverrides:
    """Command-line overrides of the ``[checkpoint]`` section (``None``: not given)."""

    directory: str | None = None
    every_newton: int | None = None
    every_minutes: float | None = None
    keep: int | None = None
    disabled: bool = False

    def apply(self, st: CheckpointConfig) -> CheckpointConfig:
        ch: dict = {}
        if self.every_newton is not None:
            if self.every_newton < 0:
                raise BadInput(f"--checkpoint-every-newton: must be >= 0, got {self.every_newton}")
            ch["every_newton"] = self.every_newton
        if self.every_minutes is not None:
            v = self.every_minutes
            if not (v >= 0 and math.isfinite(v)):
                raise BadInput(f"--checkpoint-every-minutes: must be a number >= 0, got {v}")
            ch["every_minutes"] = v
        if self.keep is not None:
            if self.keep < 1:
                raise BadInput(f"--checkpoint-keep: must be >= 1, got {self.keep}")
            ch["keep"] = self.keep
        if self.disabled:
            ch["enabled"] = False
        if self.directory is not None and not str(self.directory).strip():
            raise BadInput("--checkpoint-dir: the directory name is empty")
        return dataclasses.replace(st, **ch)


@dataclass
class SolveInputs:
    """What a checked solve runs on; :meth:`release` frees the output locks (call it on
    every exit path)."""

    cfg: Config
    problem: Problem
    out: Path
    checkpoint: CheckpointConfig
    checkpoint_dir: Path | None
    restart: str | None
    interpolate: bool
    locks: list[DirectoryLock] = field(default_factory=list)

    def release(self) -> None:
        release_locks(self.locks)
        self.locks = []


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_solve_inputs(config: str | Path, out: str | Path, comm, overrides: CheckpointOverrides | None = None,
                       restart: str | None = None, interpolate: bool = False, lock: bool = True,
                       command: str | None = None) -> SolveInputs:
    """Check everything ``mfc-hpc solve`` reads and writes (module docstring), collectively;
    returns the inputs with the output directories locked (rank 0 holds the locks)."""
    mpi = _mpi(comm)
    overrides = overrides or CheckpointOverrides()
    cfg = load_config_collective(config, mpi)
    st = overrides.apply(cfg.checkpoint)
    if interpolate and not restart:
        raise BadInput("--restart-interpolate: needs --restart FILE|auto")
    if restart is not None and not str(restart).strip():
        raise BadInput("--restart: needs a checkpoint file or 'auto'")
    check_options(mpi)
    collective(mpi, check_data_files, cfg)
    problem = collective(mpi, build_problem, cfg)
    grid_levels(problem.cfg)  # ConfigError if the grid-sequencing levels do not fit the mesh
    check_process_grid(problem, mpi.size)
    if restart is not None and str(restart) != "auto":
        check_input_file(restart, "--restart", mpi, hdf5=False)
    ckdir = None
    if st.enabled or restart:
        ckdir = Path(overrides.directory) if overrides.directory is not None else Path(out) / st.directory
    ck_option = "--checkpoint-dir" if overrides.directory is not None else "checkpoint.directory"
    first = checkpoint_bytes(problem) if st.enabled else solution_bytes(problem)
    out_p = prepare_dir(out, "--out", mpi, need_bytes=0 if st.enabled and ckdir is not None
                        and not _inside(ckdir, Path(out)) else first)
    if ckdir is not None:
        if st.enabled:
            ckdir = prepare_dir(ckdir, ck_option, mpi, need_bytes=first)
        else:  # --restart auto with checkpoints off: only read
            def exists() -> None:
                if ckdir.exists() and not ckdir.is_dir():
                    raise BadInput(f"{ck_option}: {ckdir} exists and is not a directory")
            on_every_rank(mpi, exists)
    locks: list[DirectoryLock] = []
    if lock:
        dirs = [(out_p, "--out")]
        if ckdir is not None and st.enabled and not _inside(ckdir, out_p):
            dirs.append((ckdir, ck_option))
        locks = lock_dirs(dirs, mpi, command)
        if mpi.rank == 0:
            remove_temporaries(out_p, OUTPUT_NAMES)
    return SolveInputs(cfg, problem, out_p, st, ckdir, restart, interpolate, locks)
