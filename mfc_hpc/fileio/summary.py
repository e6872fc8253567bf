"""``summary.json`` and other JSON results: versions of the stack, atomic writes."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from ..errors import OutputError

__all__ = ["versions", "write_json", "json_default", "fsync_path"]


def versions() -> dict:
    """Versions of the package and of the stack it runs on."""
    import h5py
    import mpi4py
    import petsc4py
    from mpi4py import MPI
    from petsc4py import PETSc

    from .. import __version__

    return {
        "mfc_hpc": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "petsc": ".".join(map(str, PETSc.Sys.getVersion())),
        "petsc4py": petsc4py.__version__,
        "mpi4py": mpi4py.__version__,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "h5py_mpi": bool(h5py.get_config().mpi),
        "platform": platform.platform(),
    }


def json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value") and isinstance(getattr(o, "value"), str):  # enums
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: dict) -> Path:
    """Write JSON atomically (temporary file, fsync, rename); call on one rank. A failure
    (disk full, permissions) removes the temporary and raises
    :class:`~mfc_hpc.errors.OutputError` naming the file; the previous file is intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        text = json.dumps(data, indent=2, default=json_default, allow_nan=True)
        with open(tmp, "w") as f:
            f.write(text)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return path
