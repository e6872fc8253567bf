"""``solution.h5``: the solved state in the global layout (format ``mfc_hpc.solution``).

Format version 2 (any state dimension ``d``):

* ``rho``, ``phi``: float64 ``(N+1, K, M_1, .., M_d)``, ``rho[n, c, i_1, .., i_d] = rho^n_{c,i}``;
* one coordinate dataset per state axis, ``x1 .. xd`` (``(M_k,)``), each with attributes
  ``nodes``, ``lower``, ``upper``, ``spacing``; ``x`` is the same as ``x1`` when ``d = 1``;
* ``t`` ``(N+1,)`` depth levels;
* root attributes ``format``, ``format_version``, ``dim``, ``config`` and ``versions``
  (JSON text), ``converged`` and any extra the caller passes; every dataset carries a
  ``checksum`` attribute (:mod:`mfc_hpc.fileio.checksum`);
* the sidecar ``solution.h5.sum`` holds the digest of the file's bytes, checked before
  HDF5 parses the file (:mod:`mfc_hpc.fileio.hdf5`).

Version 1 (1-D, written before the d-dimensional core) has ``rho``, ``phi`` of shape
``(N+1, K, M)``, ``x``, ``t`` and no ``dim``; :func:`read_solution` reads both. Written by
:func:`mfc_hpc.fileio.hdf5.write_file` (every rank its hyperslab; atomic).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from petsc4py import PETSc

from ..errors import BadInput
from ..parallel.events import EVENTS
from ..parallel.mesh import DepthTimeMesh
from .checksum import CHECKSUM, checksum_block, hex64
from .hdf5 import HDF5_SIGNATURE, read_in_child, verify_digest, write_file
from .layout import global_shape, owned_blocks, selection
from .summary import json_default

__all__ = ["SOLUTION_FORMAT", "SOLUTION_VERSION", "write_solution", "read_solution", "axis_datasets"]

SOLUTION_FORMAT = "mfc_hpc.solution"
SOLUTION_VERSION = 2


def axis_datasets(grid, t: np.ndarray) -> dict[str, tuple[np.ndarray, dict]]:
    """The coordinate datasets ``x1 .. xd`` (and ``x`` for ``d = 1``) and ``t``."""
    out = {}
    for k in range(grid.ndim):
        x = grid.axis(k)
        out[f"x{k + 1}"] = (x, {"nodes": grid.nodes[k], "lower": grid.lower[k], "upper": grid.upper[k],
                                "spacing": grid.h[k], "checksum": hex64(checksum_block(x, x.shape, (0,)))})
    if grid.ndim == 1:
        out["x"] = out["x1"]
    out["t"] = (np.asarray(t, dtype=float), {"checksum": hex64(checksum_block(t, t.shape, (0,)))})
    return out


def write_solution(path: str | Path, mesh: DepthTimeMesh, X: PETSc.Vec, attrs: dict | None = None) -> Path:
    """Write ``rho``, ``phi``, the coordinates and ``t`` of the state ``X`` (collective)."""
    EVENTS["io"].begin()
    try:
        d, s = mesh.d, mesh.slab
        comm = mesh.mpi
        shape = global_shape(d)
        sel = selection(s)
        start = (s.ys, 0) + tuple(s.xs)
        blocks = owned_blocks(mesh.owned(X), d.K)
        sums = {k: hex64(sum(comm.allgather(checksum_block(v, shape, start)))) for k, v in blocks.items()}
        a = {"format": SOLUTION_FORMAT, "format_version": SOLUTION_VERSION, "dim": d.ndim, "checksum": CHECKSUM}
        for k, v in (attrs or {}).items():
            a[k] = json.dumps(v, default=json_default) if isinstance(v, (dict, list, tuple)) else v
        a = comm.bcast(a, root=0)
        return write_file(path, comm, a, axis_datasets(d.grid, d.t),
                          {k: (shape, sel, v, {"checksum": sums[k]}) for k, v in blocks.items()}, digest=True)
    finally:
        EVENTS["io"].end()


def _text(v):
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    return v


def read_solution(path: str | Path, verify: bool = True, probe: bool = True) -> dict:
    """Read a whole ``solution.h5`` (version 1 or 2, serially): the arrays, ``attrs``
    (JSON attributes decoded), ``dim`` and ``grid`` (``lower``, ``upper``, ``nodes``).
    With ``verify`` every dataset's checksum is checked; with ``probe`` the file is
    first checked against its digest sidecar ``solution.h5.sum`` (written since format
    version 2) or, without one, opened in a child process with a time limit, so a damaged
    file can neither hang nor crash this process."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"solution: no such file: {path}")
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_SIGNATURE:
            raise BadInput(f"{path}: not an mfc_hpc solution file (not HDF5)")
    info = read_in_child(path) if probe and not verify_digest(path) else None  # no digest: a child reads it first
    try:
        with h5py.File(path, "r") as f:
            if info is None:
                root = {k: _text(v) for k, v in f.attrs.items()}
                names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                sums = {k: _text(f[k].attrs.get("checksum")) for k in names}
            else:  # this process never parses the attributes of an unsigned file (HDF5's global heap)
                root = dict(info["attrs"])
                names = [k for k in info["datasets"] if "/" not in k]
                sums = {k: info["datasets"][k]["attrs"].get("checksum") for k in names}
            fmt = root.get("format")
            if fmt != SOLUTION_FORMAT:
                raise BadInput(f"{path}: not an mfc_hpc solution file (format {fmt!r})")
            ver = int(root.get("format_version", 1))
            if ver > SOLUTION_VERSION:
                raise BadInput(f"{path}: format version {ver} is newer than this mfc_hpc reads ({SOLUTION_VERSION})")
            out = {k: f[k][()] for k in names}
            out["attrs"] = {}
            for k, v in root.items():
                v = v.item() if isinstance(v, np.generic) else v  # plain types, whoever read them
                if k in ("config", "versions") and isinstance(v, str):
                    try:
                        v = json.loads(v)
                    except json.JSONDecodeError:
                        raise BadInput(f"{path}: attribute {k!r} is not valid JSON") from None
                out["attrs"][k] = v
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file
        raise BadInput(f"{path}: damaged HDF5 file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if "rho" not in out or "phi" not in out:
        raise BadInput(f"{path}: no rho/phi datasets")
    try:
        dim = int(out["attrs"].get("dim", 1))
        if dim not in (1, 2, 3):
            raise ValueError(f"dim = {dim}")
        axes = [out[f"x{k + 1}"] for k in range(dim)] if dim > 1 or "x1" in out else [out["x"]]
        if any(a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or not np.all(np.diff(a) > 0)
               for a in axes) or "t" not in out:
            raise ValueError("coordinates")
    except (KeyError, ValueError, TypeError) as e:
        raise BadInput(f"{path}: damaged solution file (its dimension or coordinates: {e})") from None
    out["dim"] = dim
    out["grid"] = {"lower": [float(a[0]) for a in axes], "upper": [float(a[-1]) for a in axes],
                   "nodes": [int(a.size) for a in axes]}
    if out["rho"].shape != out["phi"].shape or out["rho"].ndim != 2 + dim or \
            tuple(out["rho"].shape[2:]) != tuple(out["grid"]["nodes"]) or out["rho"].shape[0] != out["t"].size:
        raise BadInput(f"{path}: inconsistent shapes rho {out['rho'].shape}, phi {out['phi'].shape}, "
                       f"nodes {out['grid']['nodes']}, t {out['t'].shape}")
    if verify and ver >= 2:
        for k, v in out.items():
            if not isinstance(v, np.ndarray):
                continue
            if not sums.get(k):
                raise BadInput(f"{path}: dataset {k!r} has no checksum")
            if v.dtype != np.float64:
                raise BadInput(f"{path}: dataset {k!r} is {v.dtype}, not float64")
            got = hex64(checksum_block(v.astype("<f8"), v.shape, (0,) * v.ndim))
            if got != sums[k]:
                raise BadInput(f"{path}: checksum mismatch in dataset {k!r} (stored {sums[k]}, computed {got})")
    return out
