"""Results on disk: ``solution.h5`` written in parallel in the global layout, and
``summary.json`` with the resolved configuration and versions.

``solution.h5`` (format ``mfc_hpc.solution``, version 1):

* ``rho``, ``phi``: float64 ``(N+1, K, M)``: ``rho[n, c, i] = rho^n_{c,i}``;
* ``x`` ``(M,)`` nodes, ``t`` ``(N+1,)`` depth levels;
* root attributes ``format``, ``format_version``, ``config`` (JSON), ``versions`` (JSON),
  and any extra attributes the caller passes.

Each rank writes its own block of the global datasets (h5py's ``mpio`` driver where h5py
was built for MPI; otherwise rank 0 gathers and writes). The file is written under a
temporary name in the same directory and renamed when complete, so a crash never leaves
a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")  # Debian's h5py: pick the MPI build
import h5py  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from .mesh import DepthTimeMesh  # noqa: E402
from .solver import EVENTS  # noqa: E402

__all__ = ["versions", "write_solution", "write_json", "read_solution", "fsync_path", "SOLUTION_FORMAT"]

SOLUTION_FORMAT = "mfc_hpc.solution"


def versions() -> dict:
    """Versions of the package and of the stack it runs on."""
    import mpi4py
    from mpi4py import MPI

    from . import __version__

    return {
        "mfc_hpc": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "petsc": ".".join(map(str, PETSc.Sys.getVersion())),
        "petsc4py": __import__("petsc4py").__version__,
        "mpi4py": mpi4py.__version__,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "h5py_mpi": bool(h5py.get_config().mpi),
        "platform": platform.platform(),
    }


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (temporary file, fsync, rename); call on one rank."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_solution(path: str | Path, mesh: DepthTimeMesh, X: PETSc.Vec,
                   attrs: dict | None = None, datasets: dict | None = None) -> Path:
    """Write ``rho``, ``phi``, ``x``, ``t`` of the state ``X`` (collective).

    ``attrs`` become root attributes (dicts and lists as JSON strings); ``datasets`` are
    small global arrays written by rank 0 (e.g. a residual history).
    """
    EVENTS["io"].begin()
    path = Path(path)
    d, s = mesh.d, mesh.slab
    comm = mesh.comm.tompi4py()
    tmp = path.with_name(f".{path.name}.tmp")
    Zo = mesh.owned(X)
    rho = np.ascontiguousarray(np.moveaxis(Zo[..., :d.K], 2, 1))  # [n, c, i]
    phi = np.ascontiguousarray(np.moveaxis(Zo[..., d.K:], 2, 1))
    shape = (d.N + 1, d.K, d.M)
    sel = (slice(s.ys, s.ye), slice(None), slice(s.xs, s.xe))

    def header(f: h5py.File) -> tuple:
        f.attrs["format"] = SOLUTION_FORMAT
        f.attrs["format_version"] = 1
        for k, v in (attrs or {}).items():
            f.attrs[k] = json.dumps(v, default=_json_default) if isinstance(v, (dict, list, tuple)) else v
        f.create_dataset("x", data=d.x)
        f.create_dataset("t", data=d.t)
        for k, v in (datasets or {}).items():
            f.create_dataset(k, data=np.asarray(v))
        return (f.create_dataset("rho", shape, dtype="f8"), f.create_dataset("phi", shape, dtype="f8"))

    if h5py.get_config().mpi:
        with h5py.File(tmp, "w", driver="mpio", comm=comm) as f:
            dr, dp = header(f)
            with dr.collective:
                dr[sel] = rho
            with dp.collective:
                dp[sel] = phi
    else:  # serial h5py: gather blocks to rank 0
        blocks = comm.gather((sel, rho, phi), root=0)
        if comm.rank == 0:
            with h5py.File(tmp, "w") as f:
                dr, dp = header(f)
                for sl, r, p in blocks:
                    dr[sl] = r
                    dp[sl] = p
    comm.Barrier()
    if comm.rank == 0:
        fsync_path(tmp)
        os.replace(tmp, path)
    comm.Barrier()
    EVENTS["io"].end()
    return path


def read_solution(path: str | Path) -> dict:
    """Read a whole ``solution.h5`` (serially) into numpy arrays and attributes."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != SOLUTION_FORMAT:
            raise ValueError(f"{path}: not an mfc_hpc solution file")
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out
