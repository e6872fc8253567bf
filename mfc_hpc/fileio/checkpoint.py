"""Checkpoint files: the format only (writing, probing, verifying, reading blocks).

A checkpoint (format ``mfc_hpc.checkpoint``, version 2) holds the state of a run in the
global layout of ``solution.h5``, so a run restarts on any rank count or process grid,
each rank reading only its own hyperslab:

* ``rho``, ``phi``: float64 ``(N+1, K, M_1, .., M_d)``, the state;
* ``good/rho``, ``good/phi`` (only inside a continuation stage's Newton solve): the last
  accepted state, where the continuation goes back to if that solve fails;
* ``x1 .. xd`` (and ``x`` when ``d = 1``), ``t``; ``residuals``: the current Newton
  solve's ``|F|``;
* root attributes (JSON text where structured): ``format``, ``format_version``,
  ``created`` (UTC), ``reason`` (``newton``, ``stage``, ``level``, ``time``, ``signal``),
  ``sequence``, ``ranks``, ``process_grid``, ``mesh`` (dim, nodes, layers, classes,
  bounds, depth), ``config`` (the resolved configuration), ``resume`` (the
  :class:`~mfc_hpc.drivers.state.RunState`), ``versions``, ``checksum`` (the algorithm)
  and ``meta_crc32``: the CRC-32 of every other attribute;
* every dataset carries a ``checksum`` attribute (:mod:`mfc_hpc.fileio.checksum`);
* the sidecar ``ckpt_NNNNNN.h5.sum`` holds the digest of the file's bytes, verified before
  HDF5 opens the file (:mod:`mfc_hpc.fileio.hdf5`).

Version 1 checkpoints (1-D, ``(N+1, K, M)``, CRC over config/mesh/resume/versions, no
sidecar: probed in a child process) stay readable.
"""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInput
from .checksum import CHECKSUM, checksum_block, hex64
from .hdf5 import HDF5_SIGNATURE, ChildView, agree, open_read, read_block, read_in_child, verify_digest
from .layout import STATE

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "NAME", "meta_crc", "probe", "probe_collective",
           "verify", "find_checkpoints", "newest_good", "read_collective", "state_names"]

FORMAT = "mfc_hpc.checkpoint"
FORMAT_VERSION = 2
NAME = re.compile(r"^ckpt_(\d{6,})\.h5$")
_CRC_V1 = ("config", "mesh", "resume", "versions")
_JSON = ("mesh", "config", "resume", "versions", "process_grid")


class CheckpointError(BadInput):
    """A checkpoint that cannot be used; the one-line message says why (exit status 2)."""


def _fail(path: Path | str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {why}")


def _text(v: Any) -> Any:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode(errors="replace")
    return v


def meta_crc(attrs: dict, version: int = FORMAT_VERSION) -> int:
    """CRC-32 of the attributes (version 2: all but ``meta_crc32``, by name)."""
    keys = _CRC_V1 if version == 1 else sorted(k for k in attrs if k != "meta_crc32")
    return zlib.crc32("\x00".join(f"{k}={_text(attrs[k])}" if version > 1 else str(_text(attrs[k]))
                                  for k in keys).encode())


def state_names(has_good: bool) -> list[str]:
    return list(STATE) + (["good/rho", "good/phi"] if has_good else [])


def _mesh(m: Any, path) -> dict:
    """The ``mesh`` attribute, normalised to lists per axis (version 1 has scalars)."""
    if not isinstance(m, dict):
        raise _fail(path, "damaged: attribute 'mesh' is not a table")
    try:
        nodes = m["nodes"] if isinstance(m["nodes"], list) else [m["nodes"]]
        lo = m["x_min"] if isinstance(m["x_min"], list) else [m["x_min"]]
        hi = m["x_max"] if isinstance(m["x_max"], list) else [m["x_max"]]
        out = {"dim": len(nodes), "nodes": [int(v) for v in nodes], "layers": int(m["layers"]),
               "classes": int(m["classes"]), "x_min": [float(v) for v in lo], "x_max": [float(v) for v in hi],
               "depth": float(m["depth"])}
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "damaged: attribute 'mesh' lacks nodes, layers, classes, x_min, x_max or depth") from None
    if not (1 <= out["dim"] <= 3 and len(out["x_min"]) == len(out["x_max"]) == out["dim"]
            and all(2 <= n <= 1 << 24 for n in out["nodes"]) and 1 <= out["layers"] <= 1 << 24
            and 1 <= out["classes"] <= 1000 and out["depth"] > 0):
        raise _fail(path, f"damaged: impossible mesh {m}")
    return out


def probe(path: str | Path) -> dict:
    """Check ``path`` serially: its digest sidecar before HDF5 parses it (or, without one,
    a child process with a time limit reads it and this process only looks at what the
    child read), then the header and the small datasets.

    Returns the header (``mesh``, ``config``, ``resume``, ``versions``, checksums, ...).
    Raises :class:`CheckpointError` saying why the file is unusable: missing, not HDF5
    (foreign), truncated or damaged, another format (foreign), a newer format version,
    inconsistent metadata or a bad checksum of a small dataset.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    with open(path, "rb") as fh:
        sig = fh.read(8)
    if sig != HDF5_SIGNATURE:
        raise _fail(path, "foreign file: not HDF5" + (" (empty)" if not sig else ""))
    try:
        signed = verify_digest(path)
        # without a digest HDF5 never parses the file in this process: a child reads it
        info = None if signed else read_in_child(path)
    except BadInput as e:
        msg = str(e).split(": ", 1)[-1]
        raise _fail(path, msg if "truncated" in msg or "corrupted" in msg or "damaged" in msg
                    else f"damaged ({msg})") from None
    if info is not None:
        try:
            return _header(path, ChildView(info))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the child read is damaged
            raise _fail(path, f"damaged file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
                from None
    try:
        f = h5py.File(path, "r", driver=None)
    except Exception as e:  # noqa: BLE001 - h5py raises OSError with HDF5's reason
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg or "eof" in msg.lower():
            raise _fail(path, f"truncated file ({msg})") from None
        raise _fail(path, f"damaged HDF5 file ({msg})") from None
    try:
        with f:
            return _header(path, f)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any read error in a damaged file
        raise _fail(path, f"damaged file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _header(path: Path, f) -> dict:
    a = {k: _text(v) for k, v in f.attrs.items()}
    fmt = a.get("format")
    if fmt is None:
        raise _fail(path, "foreign HDF5 file (no 'format' attribute; not written by mfc_hpc)")
    if fmt != FORMAT:
        what = "an mfc_hpc solution file, not a checkpoint" if fmt == "mfc_hpc.solution" else f"format {fmt!r}"
        raise _fail(path, f"foreign file: {what}")
    try:
        ver = int(a.get("format_version", -1))
    except (TypeError, ValueError):
        raise _fail(path, f"invalid format version {a.get('format_version')!r}") from None
    if ver > FORMAT_VERSION:
        raise _fail(path, f"format version {ver} is newer than this mfc_hpc reads ({FORMAT_VERSION}): upgrade mfc_hpc")
    if ver < 1:
        raise _fail(path, f"invalid format version {ver}")
    for k in ("config", "mesh", "resume", "versions", "meta_crc32", "checksum"):
        if k not in a:
            raise _fail(path, f"damaged: attribute {k!r} missing")
    try:
        crc = int(a["meta_crc32"])
    except (TypeError, ValueError):
        raise _fail(path, "damaged: metadata CRC-32 unreadable") from None
    if crc != meta_crc(a, ver):
        raise _fail(path, "damaged: metadata CRC-32 mismatch")
    if a["checksum"] != CHECKSUM:
        raise _fail(path, f"unknown checksum algorithm {a['checksum']!r}")
    try:
        parsed = {k: json.loads(a[k]) for k in _JSON if k in a and isinstance(a[k], str)}
    except json.JSONDecodeError:
        raise _fail(path, "damaged: metadata is not valid JSON") from None
    mesh = _mesh(parsed.get("mesh"), path)
    pg = parsed.get("process_grid", [])
    if not isinstance(pg, list) or not all(isinstance(p, int) and p >= 1 for p in pg):
        raise _fail(path, f"damaged: process_grid {a.get('process_grid')!r}")
    if not isinstance(parsed.get("config"), dict) or not isinstance(parsed.get("resume"), dict):
        raise _fail(path, "damaged: config or resume is not a table")
    _check_attributes(path, a, parsed["resume"], mesh, pg)
    nodes, N, K = tuple(mesh["nodes"]), mesh["layers"], mesh["classes"]
    big = (N + 1, K) + nodes
    shapes = {"rho": big, "phi": big, "t": (N + 1,)}
    if ver == 1 or mesh["dim"] == 1:
        shapes["x"] = (nodes[0],)
    if ver >= 2:
        shapes.update({f"x{k + 1}": (n,) for k, n in enumerate(nodes)})
    if "good" in f:
        shapes.update({"good/rho": big, "good/phi": big})
    sums = {}
    for name, shp in shapes.items():
        if name not in f:
            raise _fail(path, f"damaged: dataset {name!r} missing")
        d = f[name]
        if d.shape != shp or d.dtype != np.float64:
            raise _fail(path, f"damaged: dataset {name!r} has shape {d.shape} {d.dtype}, expected {shp} float64")
        if "checksum" not in d.attrs:
            raise _fail(path, f"damaged: dataset {name!r} has no checksum")
        sums[name] = _text(d.attrs["checksum"])
    small = [n for n in shapes if n not in state_names("good" in f)]
    if "residuals" in f:
        small.append("residuals")
        sums["residuals"] = _text(f["residuals"].attrs.get("checksum"))
    arrays = {}
    for name in small:
        v = f[name][()]
        if v.dtype != np.float64 or v.ndim != 1:
            raise _fail(path, f"damaged: dataset {name!r} is {v.dtype} {v.shape}")
        got = hex64(checksum_block(v, v.shape, (0,))) if v.size else hex64(0)
        if got != sums[name]:
            raise _fail(path, f"checksum mismatch in dataset {name!r} (stored {sums[name]}, computed {got})")
        arrays[name] = v
    axes = [arrays.get(f"x{k + 1}", arrays.get("x")) for k in range(mesh["dim"])]
    for k, x in enumerate(axes):
        if not (np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)):
            raise _fail(path, f"damaged: the coordinates of axis {k + 1} do not increase")
        tol = 1e-9 * max(1.0, abs(mesh["x_max"][k] - mesh["x_min"][k]))
        if abs(x[0] - mesh["x_min"][k]) > tol or abs(x[-1] - mesh["x_max"][k]) > tol:
            raise _fail(path, f"damaged: the coordinates of axis {k + 1} span [{x[0]:g}, {x[-1]:g}], the mesh "
                              f"attribute says [{mesh['x_min'][k]:g}, {mesh['x_max'][k]:g}]")
    t = arrays["t"]
    if not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and abs(t[0]) <= 1e-12 * mesh["depth"]
            and abs(t[-1] - mesh["depth"]) <= 1e-9 * mesh["depth"]):
        raise _fail(path, f"damaged: the depth levels t do not increase from 0 to the depth {mesh['depth']:g}")
    return {"path": str(path), "format": fmt, "format_version": ver, "mesh": mesh, "config": parsed["config"],
            "resume": parsed["resume"], "versions": parsed.get("versions"), "checksums": sums,
            "has_good": "good" in f, "axes": axes, "t": arrays["t"],
            "residuals": arrays.get("residuals", np.zeros(0)).tolist(),
            "process_grid": pg, "created": a.get("created"), "reason": a.get("reason"),
            **{k: None if a.get(k) is None else int(a[k]) for k in ("sequence", "ranks")}}


#: why a checkpoint was written
REASONS = ("newton", "stage", "level", "time", "signal")
#: the most grid levels a run can have (``solver.grid_levels`` <= 30)
MAX_LEVELS = 31


def _check_attributes(path, a: dict, resume: dict, mesh: dict, pg: list) -> None:
    """The attributes restart and ``inspect`` trust, beyond the CRC: the resume cursor's
    schema (:meth:`mfc_hpc.drivers.state.RunState.from_json`: phase names, level range,
    counters, finite parameters), the reason, sequence and rank count, the process grid."""
    from ..drivers.state import RunState

    try:
        RunState.from_json(resume, MAX_LEVELS, where=f"checkpoint {path}")  # names the field
    except BadInput as e:
        raise CheckpointError(str(e)) from None
    for key in ("restarts", "newton_total"):
        v = resume.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10 ** 9:
            raise _fail(path, f"damaged resume metadata: {key} = {v!r}")
    w = resume.get("wall_used", 0.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0.0 <= w < 1e12):
        raise _fail(path, f"damaged resume metadata: wall_used = {w!r}")
    if a.get("reason") is not None and a.get("reason") not in REASONS:
        raise _fail(path, f"damaged: reason {a.get('reason')!r} (expected one of {', '.join(REASONS)})")
    for key in ("sequence", "ranks"):
        v = a.get(key)
        if v is None:
            continue
        try:
            ok = int(v) == v and 1 <= int(v) <= 10 ** 9
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise _fail(path, f"damaged: attribute {key!r} = {v!r}")
    if pg and len(pg) != mesh["dim"] + 1:
        raise _fail(path, f"damaged: process_grid {pg} has {len(pg)} entries for a {mesh['dim']}-D state")


def probe_collective(path: str | Path, comm) -> dict:
    """:func:`probe` on rank 0, the header (or the error) broadcast to all ranks."""
    hdr, err = None, None
    if comm.rank == 0:
        try:
            hdr = probe(path)
        except CheckpointError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 - never leave the other ranks waiting
            err = f"checkpoint {path}: {type(e).__name__}: {e}"
    hdr, err = comm.bcast((hdr, err), root=0)
    if err:
        raise CheckpointError(err)
    return hdr


def read_collective(path: str | Path, comm, names: list[str], sel: tuple) -> dict[str, np.ndarray]:
    """Each rank reads the hyperslab ``sel`` of every dataset in ``names``; an error on any
    rank is raised on all."""
    out, err = None, None
    try:
        with open_read(path, comm) as f:
            out = {k: read_block(f, k, sel) for k in names}
    except Exception as e:  # noqa: BLE001 - a read error in a damaged file
        err = f"checkpoint {path}: read error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    err = agree(comm, err)
    if err:
        raise CheckpointError(err)
    return out


def check_sums(path, hdr: dict, terms: dict, comm) -> None:
    """Compare the combined checksum terms of every rank with the stored checksums."""
    for k, v in terms.items():
        got = hex64(sum(comm.allgather(v)))
        if got != hdr["checksums"][k]:
            raise _fail(path, f"checksum mismatch in dataset {k!r} (stored {hdr['checksums'][k]}, "
                              f"computed {got}): corrupted")


def verify(path: str | Path, comm, hdr: dict | None = None) -> dict:
    """Verify every dataset's checksum, the ranks sharing the leading axis (collective).
    Returns the header; raises :class:`CheckpointError` on a mismatch or a read error."""
    hdr = hdr or probe_collective(path, comm)
    m = hdr["mesh"]
    n1 = m["layers"] + 1
    a, b = comm.rank * n1 // comm.size, (comm.rank + 1) * n1 // comm.size
    names = state_names(hdr["has_good"])
    shape = (n1, m["classes"]) + tuple(m["nodes"])
    blocks = read_collective(path, comm, names, (slice(a, b),))
    check_sums(path, hdr, {k: checksum_block(v, shape, (a,) + (0,) * (len(shape) - 1)) for k, v in blocks.items()},
               comm)
    return hdr


def find_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(sequence, path)`` of the checkpoint files in ``directory``, newest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := NAME.match(p.name))]
    return sorted(out, reverse=True)


def newest_good(directory: str | Path, comm, log=None) -> tuple[Path | None, dict | None]:
    """The newest checkpoint in ``directory`` whose header and checksums verify
    (collective: rank 0 lists the directory, so every rank tries the same files)."""
    from ..parallel.agreement import collective

    for _, p in collective(comm, find_checkpoints, directory):
        try:
            return p, verify(p, comm)
        except CheckpointError as e:
            if log is not None:
                log.warning("skipping %s", e)
    return None, None
