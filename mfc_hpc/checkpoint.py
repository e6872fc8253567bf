"""Checkpoints: parallel HDF5 restart files that any number of ranks can resume from.

A checkpoint (format ``mfc_hpc.checkpoint``, version 1) holds the state of a run in the
global layout of ``solution.h5`` (independent of the decomposition), so a run restarts on
any rank count or process grid, each rank reading only its own hyperslab:

* ``rho``, ``phi``: float64 ``(N+1, K, M)`` (``rho[n, c, i] = rho^n_{c,i}``), the state;
* ``good/rho``, ``good/phi`` (only inside a continuation stage's Newton solve): the last
  accepted state, where the continuation goes back to if that solve fails;
* ``x`` ``(M,)``, ``t`` ``(N+1,)``; ``residuals``: the current Newton solve's ``|F|``;
* root attributes (JSON strings where structured): ``format``, ``format_version``,
  ``created`` (UTC), ``reason`` (``newton``, ``stage``, ``level``, ``time``, ``signal``),
  ``sequence``, ``ranks``, ``process_grid``, ``mesh`` (nodes, layers, classes, interval,
  depth), ``config`` (the resolved configuration), ``resume`` (the cursor: grid level,
  phase, continuation parameter/value/step/records, Newton iteration and residual
  history, loss weight and nu, wall time used, restarts), ``versions``, ``checksum``
  (the algorithm) and ``meta_crc32`` (CRC-32 of the structured attributes);
* every dataset carries a ``checksum`` attribute.

Checksum (``mix64-sum-v1``): the float64 words ``w_j`` of a dataset, ``j`` the flat index
in the *global* C-ordered array, give ``sum_j w_j * (splitmix64(j) | 1) mod 2^64``. The
sum is additive over any partition of the array, so every rank hashes its own block
(vectorised numpy) and one integer allreduce combines them: no rank holds the whole
array, and the value does not depend on the decomposition. Every single-bit error is
detected (the multiplier is odd), and a moved or swapped value changes the sum.
It guards against storage corruption, not against an adversary.

Writing is atomic: all ranks write ``.ckpt_NNNNNN.h5.tmp`` in the checkpoint directory
(h5py ``mpio``), rank 0 fsyncs it, renames it to ``ckpt_NNNNNN.h5`` and fsyncs the
directory; only then are checkpoints beyond the newest ``keep`` deleted. A crash (even
kill -9) during a write leaves at worst a stale temporary file (removed at the next
start) and the previous checkpoints intact.

Test hook (tests only): ``MFC_CHECKPOINT_TEST_SLEEP=SECONDS`` sleeps after the data are
written and before the file is closed and renamed, so a test can kill a run inside the
write window.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")  # Debian's h5py: pick the MPI build
import h5py  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from .cli import BadInput  # noqa: E402
from .config import CheckpointConfig, Config  # noqa: E402
from .output import _json_default, fsync_path, versions  # noqa: E402
from .solver import EVENTS, MeshSolver  # noqa: E402

__all__ = ["FORMAT", "FORMAT_VERSION", "CHECKSUM", "CheckpointError", "CheckpointAndExit",
           "Checkpointer", "probe", "verify", "find_checkpoints", "newest_good", "checksum_block",
           "write_xdmf", "read_block"]

log = logging.getLogger(__name__.split(".")[-1])

FORMAT = "mfc_hpc.checkpoint"
FORMAT_VERSION = 1
CHECKSUM = "mix64-sum-v1"
_NAME = re.compile(r"^ckpt_(\d{6,})\.h5$")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = (1 << 64) - 1
_STATE = ("rho", "phi")


class CheckpointError(BadInput):
    """A checkpoint that cannot be used; the one-line message says why (exit status 2)."""


class CheckpointAndExit(Exception):
    """A signal asked the run to stop: the checkpoint ``path`` is written; exit 75 (requeue)."""

    def __init__(self, path: Path, signum: int) -> None:
        super().__init__(f"checkpoint {path} written on {signal.Signals(signum).name}")
        self.path, self.signum = path, signum


# ---------------------------------------------------------------------------- checksums

def _mix64(j: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of the indices ``j`` (uint64), forced odd."""
    z = j + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) | np.uint64(1)


def checksum_block(block: np.ndarray, shape: tuple[int, ...], start: tuple[int, ...],
                   rows_per_chunk: int | None = None) -> int:
    """This block's term of the ``mix64-sum-v1`` checksum of a global float64 array.

    ``block`` is the part of the global array of ``shape`` that starts at ``start`` (one
    corner, any extent); the checksum of the array is the sum of the terms of blocks
    that partition it, mod 2^64. Vectorised, in chunks of leading-axis rows.
    """
    block = np.asarray(block, dtype="<f8")
    if block.size == 0:
        return 0
    strides = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1].astype(np.uint64)
    row = int(np.prod(block.shape[1:], dtype=np.int64)) or 1
    step = rows_per_chunk or max(1, (1 << 20) // row)
    tail = [np.arange(st, st + n, dtype=np.uint64) * s
            for st, n, s in zip(start[1:], block.shape[1:], strides[1:])]
    off = np.zeros((1,) * len(tail), dtype=np.uint64)
    for k, a in enumerate(tail):  # offsets of a leading-axis row, broadcast over the tail axes
        off = off + a.reshape((1,) * k + (-1,) + (1,) * (len(tail) - k - 1))
    total = 0
    with np.errstate(over="ignore"):
        for r0 in range(0, block.shape[0], step):
            part = np.ascontiguousarray(block[r0:r0 + step]).view("<u8")
            lead = np.arange(start[0] + r0, start[0] + r0 + part.shape[0], dtype=np.uint64) * strides[0]
            j = lead.reshape((-1,) + (1,) * len(tail)) + off[None]
            total = (total + int((part * _mix64(j)).sum(dtype=np.uint64))) & _MASK
    return total


def _hex(v: int) -> str:
    return f"{v & _MASK:016x}"


def _meta_crc(attrs: dict) -> int:
    return zlib.crc32("\x00".join(str(attrs[k]) for k in ("config", "mesh", "resume", "versions")).encode())


# ---------------------------------------------------------------------------- reading

def _fail(path: Path | str, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {why}")


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def probe(path: str | Path) -> dict:
    """Open ``path`` serially and check everything but the large datasets' checksums.

    Returns the header (``mesh``, ``config``, ``resume``, ``versions``, checksums, ...).
    Raises :class:`CheckpointError` saying why the file is unusable: missing,
    not HDF5 (foreign), truncated or damaged HDF5, another format (foreign), a newer
    format version, inconsistent metadata or a bad checksum of ``x``/``t``.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    with open(path, "rb") as fh:
        sig = fh.read(8)
    if sig != _HDF5_SIGNATURE:
        raise _fail(path, "foreign file: not HDF5" + (" (empty)" if not sig else ""))
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


def _header(path: Path, f: h5py.File) -> dict:
    a = {k: _text(v) for k, v in f.attrs.items()}
    fmt = a.get("format")
    if fmt is None:
        raise _fail(path, "foreign HDF5 file (no 'format' attribute; not written by mfc_hpc)")
    if fmt != FORMAT:
        what = "an mfc_hpc solution file, not a checkpoint" if fmt == "mfc_hpc.solution" else f"format {fmt!r}"
        raise _fail(path, f"foreign file: {what}")
    ver = int(a.get("format_version", -1))
    if ver > FORMAT_VERSION:
        raise _fail(path, f"format version {ver} is newer than this mfc_hpc reads ({FORMAT_VERSION}): upgrade mfc_hpc")
    if ver < 1:
        raise _fail(path, f"invalid format version {ver}")
    for k in ("config", "mesh", "resume", "versions", "meta_crc32", "checksum"):
        if k not in a:
            raise _fail(path, f"damaged: attribute {k!r} missing")
    if int(a["meta_crc32"]) != _meta_crc(a):
        raise _fail(path, "damaged: metadata CRC-32 mismatch")
    if a["checksum"] != CHECKSUM:
        raise _fail(path, f"unknown checksum algorithm {a['checksum']!r}")
    try:
        mesh, cfg, resume, vers = (json.loads(a[k]) for k in ("mesh", "config", "resume", "versions"))
    except json.JSONDecodeError:
        raise _fail(path, "damaged: metadata is not valid JSON") from None
    M, N, K = mesh["nodes"], mesh["layers"], mesh["classes"]
    shapes = {"rho": (N + 1, K, M), "phi": (N + 1, K, M), "x": (M,), "t": (N + 1,)}
    if "good" in f:
        shapes.update({"good/rho": (N + 1, K, M), "good/phi": (N + 1, K, M)})
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
    for name in ("x", "t"):
        got = _hex(checksum_block(f[name][()], shapes[name], (0,)))
        if got != sums[name]:
            raise _fail(path, f"checksum mismatch in dataset {name!r} (stored {sums[name]}, computed {got})")
    return {"path": str(path), "format": fmt, "format_version": ver, "mesh": mesh, "config": cfg,
            "resume": resume, "versions": vers, "checksums": sums, "has_good": "good" in f,
            "x": f["x"][()], "t": f["t"][()],
            "residuals": f["residuals"][()].tolist() if "residuals" in f else [],
            **{k: a.get(k) for k in ("created", "reason", "sequence", "ranks", "process_grid")}}


def _collective(comm, fn, *args) -> Any:
    """Run ``fn`` on every rank; if it raised on any, raise the first message on all."""
    try:
        out, err = fn(*args), None
    except CheckpointError as e:
        out, err = None, str(e)
    except Exception as e:  # noqa: BLE001 - a read error in a damaged file
        out, err = None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    errs = [e for e in comm.allgather(err) if e]
    if errs:
        raise CheckpointError(errs[0] if errs[0].startswith("checkpoint ") else f"read error: {errs[0]}")
    return out


def probe_collective(path: str | Path, comm) -> dict:
    """:func:`probe` on rank 0, the header (or the error) broadcast to all ranks."""
    if comm.rank == 0:
        try:
            hdr, err = probe(path), None
        except CheckpointError as e:
            hdr, err = None, str(e)
    else:
        hdr, err = None, None
    hdr, err = comm.bcast((hdr, err), root=0)
    if err:
        raise CheckpointError(err)
    return hdr


def _open(path: str | Path, comm) -> h5py.File:
    if h5py.get_config().mpi and comm.size > 1:
        return h5py.File(path, "r", driver="mpio", comm=comm)
    return h5py.File(path, "r")


def read_block(f: h5py.File, name: str, sel: tuple[slice, ...]) -> np.ndarray:
    """``f[name][sel]`` (a hyperslab; collective I/O under the MPI driver)."""
    d = f[name]
    if f.driver == "mpio":
        with d.collective:
            return d[sel]
    return d[sel]


def verify(path: str | Path, comm, hdr: dict | None = None) -> dict:
    """Verify every dataset's checksum, the ranks sharing the leading axis (collective).

    Returns the header; raises :class:`CheckpointError` on a mismatch or a read error.
    """
    hdr = hdr or probe_collective(path, comm)
    m = hdr["mesh"]
    n1 = m["layers"] + 1
    a, b = comm.rank * n1 // comm.size, (comm.rank + 1) * n1 // comm.size
    names = list(_STATE) + (["good/rho", "good/phi"] if hdr["has_good"] else [])

    def part():
        with _open(path, comm) as f:
            return {k: checksum_block(read_block(f, k, (slice(a, b), slice(None), slice(None))),
                                      f[k].shape, (a, 0, 0)) for k in names}

    terms = _collective(comm, part)
    _check_sums(path, hdr, terms, comm)
    return hdr


def _check_sums(path, hdr: dict, terms: dict, comm) -> None:
    for k, v in terms.items():
        got = _hex(sum(comm.allgather(v)))
        if got != hdr["checksums"][k]:
            raise _fail(path, f"checksum mismatch in dataset {k!r} (stored {hdr['checksums'][k]}, "
                              f"computed {got}): corrupted")


def find_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(sequence, path)`` of the checkpoint files in ``directory``, newest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(out, reverse=True)


def newest_good(directory: str | Path, comm) -> tuple[Path | None, dict | None]:
    """The newest checkpoint in ``directory`` whose header and checksums verify."""
    for _, p in find_checkpoints(directory):
        try:
            return p, verify(p, comm)
        except CheckpointError as e:
            log.warning("skipping %s", e)
    return None, None


# ---------------------------------------------------------------------------- XDMF

def write_xdmf(h5path: str | Path, M: int, N: int, K: int, names: tuple[str, ...] = _STATE) -> Path:
    """An XDMF sidecar ``*.xmf`` so ParaView/VisIt open ``rho_c``/``phi_c`` of ``h5path``
    on the (x, t) rectilinear mesh (call on one rank)."""
    h5path = Path(h5path)
    ref = h5path.name

    def item(name: str, c: int) -> str:
        return (f'      <Attribute Name="{name}_{c}" AttributeType="Scalar" Center="Node">\n'
                f'        <DataItem ItemType="HyperSlab" Dimensions="{N + 1} {M}" Type="HyperSlab">\n'
                f'          <DataItem Dimensions="3 3" Format="XML">{c * 0} {c} 0 1 1 1 {N + 1} 1 {M}</DataItem>\n'
                f'          <DataItem Dimensions="{N + 1} {K} {M}" NumberType="Float" Precision="8" '
                f'Format="HDF">{ref}:/{name}</DataItem>\n'
                f'        </DataItem>\n      </Attribute>\n')

    body = "".join(item(n, c) for n in names for c in range(K))
    text = ('<?xml version="1.0" ?>\n<Xdmf Version="3.0">\n  <Domain>\n'
            '    <Grid Name="depth_time" GridType="Uniform">\n'
            f'      <Topology TopologyType="2DRectMesh" Dimensions="{N + 1} {M}"/>\n'
            '      <Geometry GeometryType="VXVY">\n'
            f'        <DataItem Dimensions="{M}" NumberType="Float" Precision="8" Format="HDF">{ref}:/x</DataItem>\n'
            f'        <DataItem Dimensions="{N + 1}" NumberType="Float" Precision="8" Format="HDF">{ref}:/t</DataItem>\n'
            f'      </Geometry>\n{body}    </Grid>\n  </Domain>\n</Xdmf>\n')
    out = h5path.with_suffix(".xmf")
    out.write_text(text)
    return out


# ---------------------------------------------------------------------------- the driver side

def _problem(cfg: dict) -> dict:
    """The parts of a resolved configuration that define the problem (not the solver)."""
    m = cfg["mesh"]
    return json.loads(json.dumps({"domain": {k: m[k] for k in ("x_min", "x_max", "depth")},
                                  "model": cfg["model"], "classes": cfg["classes"], "loss": cfg["loss"]},
                                 default=_json_default))


def _first_difference(a: Any, b: Any, key: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{key}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{key} = {a!r} in the checkpoint, {b!r} here"


class Checkpointer:
    """Writes checkpoints at the safe points of :func:`mfc_hpc.run.solve_config` and
    resumes from one; collective over ``comm``.

    Parameters
    ----------
    cfg
        The run's configuration (echoed into every checkpoint, compared on restart).
    comm
        PETSc communicator of the run.
    directory
        Where checkpoints live (created if missing).
    settings
        When to write (:class:`mfc_hpc.config.CheckpointConfig`).
    restart
        ``None`` (fresh start), ``"auto"`` (newest good checkpoint in ``directory``, fresh
        start if there is none) or a file.
    interpolate
        Accept a checkpoint of another mesh and interpolate it onto this run's finest
        mesh (it seeds Newton there), instead of refusing it.

    Safe points are the Newton iterations (SNES monitor) and the ends of continuation
    stages and grid levels. At each one the ranks agree (one small allreduce) whether a
    signal arrived or the wall-clock interval passed; on SIGTERM/SIGUSR1 they write a
    checkpoint and raise :class:`CheckpointAndExit`.
    """

    def __init__(self, cfg: Config, comm: PETSc.Comm, directory: str | Path,
                 settings: CheckpointConfig | None = None, restart: str | Path | None = None,
                 interpolate: bool = False) -> None:
        self.cfg, self.settings = cfg, settings or CheckpointConfig()
        self.comm = comm.tompi4py()
        self.directory = Path(directory)
        self.restart, self.interpolate = restart, interpolate
        self.cursor: dict = {"level": 0, "mesh": None, "attempt": 0, "prior": None, "phase": "direct",
                             "record": None, "cont": None, "newton": None, "history": []}
        self.good: PETSc.Vec | None = None
        self.signum = 0
        self.written: list[str] = []
        self.write_times: list[float] = []
        self.restarted_from: str | None = None
        self.restarts = 0
        self.wall_before = 0.0
        self.newton_count = 0
        self.t0 = time.perf_counter()
        self.last_write = time.monotonic()
        self.seq = 0
        self._old_handlers: dict = {}
        self._solver: MeshSolver | None = None
        if self.comm.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            for p in self.directory.glob(".ckpt_*.h5.tmp*"):  # left by a run killed while writing
                log.info("removing stale partial checkpoint %s", p.name)
                p.unlink(missing_ok=True)
        self.comm.Barrier()
        found = find_checkpoints(self.directory)
        self.seq = self.comm.bcast(found[0][0] + 1 if found else 1, root=0)

    # ------------------------------------------------------------------ signals
    def _handler(self, signum, frame) -> None:  # only sets a flag: checked at the next safe point
        self.signum = signum

    def install_signals(self) -> None:
        """SIGTERM and SIGUSR1 set a flag (if ``settings.on_signal``)."""
        if self.settings.on_signal and self.settings.enabled:
            for s in (signal.SIGTERM, signal.SIGUSR1):
                self._old_handlers[s] = signal.signal(s, self._handler)

    def restore_signals(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers = {}

    # ------------------------------------------------------------------ restart
    def begin(self, solvers: list[MeshSolver], levels: list[tuple[int, int]]) -> tuple[int, dict | None, list, bool]:
        """Attach to the solvers; load the restart checkpoint if any (collective).

        Returns ``(start level, cursor or None, history of earlier levels, X loaded)``.
        """
        start = self._load(solvers, levels)
        if self.settings.enabled:
            for ms in solvers:
                ms.checkpointer = self
                ms.monitor_hooks.append(self._newton_hook)
        self.install_signals()
        return start

    def _load(self, solvers: list[MeshSolver], levels: list[tuple[int, int]]) -> tuple[int, dict | None, list, bool]:
        path, hdr = self._resolve_restart()
        if path is None:
            return 0, None, [], False
        self.restarted_from = str(path)
        r = hdr["resume"]
        self.restarts = int(r.get("restarts", 0)) + 1
        self.wall_before = float(r.get("wall_used", 0.0))
        self.newton_count = int(r.get("newton_total", 0))
        diff = _first_difference(_problem(hdr["config"]), _problem(self.cfg.to_dict()))
        ck_mesh = (hdr["mesh"]["nodes"], hdr["mesh"]["layers"])
        mesh_txt = f"{ck_mesh[0]}x{ck_mesh[1]} (nodes x layers) with {hdr['mesh']['classes']} classes"
        if hdr["mesh"]["classes"] != self.cfg.K:
            raise _fail(path, f"other problem: {hdr['mesh']['classes']} classes in the checkpoint, {self.cfg.K} here")
        if diff and not self.interpolate:
            raise _fail(path, f"other problem: {diff}")
        if diff:
            log.warning("checkpoint %s is of another problem (%s): using it only as a starting guess", path, diff)
        lev = next((k for k, l in enumerate(levels) if tuple(l) == ck_mesh), None)
        if lev is not None and not diff:
            self._load_exact(path, hdr, solvers[lev])
            r = dict(r)
            if r.get("cont") and r["cont"].get("target_u") is not None:
                r["cont"] = dict(r["cont"], good=self.good)
            self.good = None
            log.info("restart %d from %s: level %dx%d, phase %s%s", self.restarts, path, *ck_mesh, r["phase"],
                     f", Newton iteration {r['newton']['iteration']}" if r.get("newton") else "")
            return lev, r, list(r.get("history", [])), True
        if not self.interpolate:
            here = " / ".join(f"{m}x{n}" for m, n in levels)
            raise _fail(path, f"other mesh: {mesh_txt}, this run has {here}; "
                              f"use --restart-interpolate to interpolate it onto this mesh")
        fine = solvers[-1]
        self._load_interpolated(path, hdr, fine)
        log.info("seeding the %dx%d mesh from checkpoint %s (%s), interpolated", levels[-1][0], levels[-1][1],
                 path, mesh_txt)
        return len(levels) - 1, None, [], True

    def _resolve_restart(self) -> tuple[Path | None, dict | None]:
        if self.restart is None:
            return None, None
        if str(self.restart) == "auto":
            p, hdr = newest_good(self.directory, self.comm)
            if p is None:
                log.info("no usable checkpoint in %s: fresh start", self.directory)
            return p, hdr
        hdr = probe_collective(self.restart, self.comm)
        return Path(self.restart), hdr

    def _load_exact(self, path: Path, hdr: dict, ms: MeshSolver) -> None:
        """Each rank reads its own hyperslab of the state (and of ``good``), verifying the
        checksums of all of them together."""
        s, K = ms.mesh.slab, ms.d.K
        sel = (slice(s.ys, s.ye), slice(None), slice(s.xs, s.xe))
        shape = (ms.d.N + 1, K, ms.d.M)
        names = list(_STATE) + (["good/rho", "good/phi"] if hdr["has_good"] else [])

        def read():
            with _open(path, self.comm) as f:
                return {k: read_block(f, k, sel) for k in names}

        blocks = _collective(self.comm, read)
        _check_sums(path, hdr, {k: checksum_block(v, shape, (s.ys, 0, s.xs)) for k, v in blocks.items()}, self.comm)
        self._fill(ms, ms.X, blocks["rho"], blocks["phi"])
        if hdr["has_good"]:
            self.good = ms.X.duplicate()
            self._fill(ms, self.good, blocks["good/rho"], blocks["good/phi"])
        p = hdr["resume"].get("params", {})
        if "nu" in p:
            ms.set_problem(d=dataclasses.replace(ms.d, nu=float(p["nu"])))
        if "loss_weight" in p:
            ms.bd.scale = float(p["loss_weight"])
        if hdr["resume"].get("newton"):
            ms.resume_newton = hdr["resume"]["newton"]

    @staticmethod
    def _fill(ms: MeshSolver, X: PETSc.Vec, rho: np.ndarray, phi: np.ndarray) -> None:
        Z = ms.mesh.owned(X, readonly=False)
        Z[..., :ms.d.K] = np.moveaxis(rho, 1, 2)
        Z[..., ms.d.K:] = np.moveaxis(phi, 1, 2)
        del Z

    def _load_interpolated(self, path: Path, hdr: dict, ms: MeshSolver) -> None:
        """Bilinear interpolation in (t, x) of the checkpointed state onto ``ms``'s mesh;
        each rank reads only the source rows and columns around its own box."""
        verify(path, self.comm, hdr)
        xs_src, ts_src = np.asarray(hdr["x"]), np.asarray(hdr["t"])
        s, d = ms.mesh.slab, ms.d
        # positions of the owned nodes/levels in the source mesh (same interval scaled, so a
        # changed depth or interval maps end to end)
        xr = (d.x[s.xs:s.xe] - d.x[0]) / (d.x[-1] - d.x[0]) * (xs_src[-1] - xs_src[0]) + xs_src[0]
        tr = d.t[s.ys:s.ye] / d.t[-1] * ts_src[-1]

        def bracket(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            k = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, src.size - 2)
            w = np.clip((dst - src[k]) / (src[k + 1] - src[k]), 0.0, 1.0)
            return k, w

        kx, wx = bracket(xs_src, xr)
        kt, wt = bracket(ts_src, tr)
        x0, x1, t0, t1 = int(kx.min()), int(kx.max()) + 2, int(kt.min()), int(kt.max()) + 2

        def read():
            with _open(path, self.comm) as f:
                return {k: read_block(f, k, (slice(t0, t1), slice(None), slice(x0, x1))) for k in _STATE}

        src = _collective(self.comm, read)
        a, b = kt - t0, kx - x0
        wt_, wx_ = wt[:, None, None], wx[None, None, :]
        out = {}
        for k, A in src.items():
            out[k] = ((1 - wt_) * ((1 - wx_) * A[a][:, :, b] + wx_ * A[a][:, :, b + 1])
                      + wt_ * ((1 - wx_) * A[a + 1][:, :, b] + wx_ * A[a + 1][:, :, b + 1]))
        self._fill(ms, ms.X, out["rho"], out["phi"])

    # ------------------------------------------------------------------ cursor updates (driver)
    def level(self, lev: int, levels: list, history: list, attempt: int = 0, prior: dict | None = None) -> None:
        """The driver starts (or restarts, ``attempt = 1``) grid level ``lev``."""
        self.cursor.update(level=lev, mesh=list(levels[lev]), attempt=attempt, prior=prior, history=history,
                           phase="direct", record=None, cont=None, newton=None)

    def enter(self, phase: str, record: dict) -> None:
        """``solve_on`` enters ``phase`` with its record so far."""
        self.cursor.update(phase=phase, record=record, cont=None, newton=None)
        self.good = None

    def continuation(self, state: dict, good: PETSc.Vec | None) -> None:
        """``continue_parameter``'s state before a Newton solve (``target_u`` set, ``good``
        the last accepted state) or at the end of a stage."""
        self.cursor.update(cont=state, newton=None)
        self.good = good

    def level_done(self, ms: MeshSolver, rec: dict) -> None:
        """A grid level converged: a safe point (checkpoint with ``phase = done``)."""
        self.cursor.update(phase="done", record=rec, cont=None, newton=None, attempt=0, prior=None)
        self.good = None
        self.safe_point(ms, reason="level")

    # ------------------------------------------------------------------ safe points
    def _poll(self) -> tuple[int, bool]:
        """Collective: the signal (if any rank got one) and whether the timer is due."""
        s = self.settings
        due = s.every_minutes > 0 and time.monotonic() - self.last_write >= 60.0 * s.every_minutes
        v = np.array([self.signum, int(due)], dtype=np.int64)
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, v, op=MPI.MAX)
        return int(v[0]), bool(v[1])

    def _newton_hook(self, ms: MeshSolver, its: int, fnorm: float) -> None:
        self.cursor["newton"] = {"iteration": its, "history": list(ms._history)}
        if its > ms._its0:
            self.newton_count += 1
        signum, due = self._poll()
        k = self.settings.every_newton
        periodic = k > 0 and its > ms._its0 and self.newton_count % k == 0
        if signum or due or periodic:
            path = self.write(ms, "signal" if signum else ("time" if due else "newton"))
            if signum:  # propagates out of SNESSolve (petsc4py re-raises callback exceptions)
                raise CheckpointAndExit(path, signum)

    def safe_point(self, ms: MeshSolver, reason: str = "stage") -> None:
        """End of a stage or level: write if configured, due or signalled; on a signal,
        raise :class:`CheckpointAndExit` after writing."""
        self.cursor["newton"] = None
        if not self.settings.enabled:
            return
        signum, due = self._poll()
        if signum or due or self.settings.at_stage_end:
            path = self.write(ms, "signal" if signum else (reason if self.settings.at_stage_end else "time"))
            if signum:
                raise CheckpointAndExit(path, signum)

    # ------------------------------------------------------------------ writing
    def wall_used(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def write(self, ms: MeshSolver, reason: str) -> Path:
        """Write checkpoint number ``seq`` of ``ms``'s state atomically (collective)."""
        t = time.perf_counter()
        EVENTS["io"].begin()
        cur = self.cursor
        resume = {k: cur[k] for k in ("level", "mesh", "attempt", "prior", "phase", "record", "cont", "newton",
                                      "history")}
        resume.update(params={"nu": ms.d.nu, "loss_weight": float(ms.bd.scale)}, newton_total=self.newton_count,
                      wall_used=self.wall_used(), restarts=self.restarts)
        with_good = self.good is not None and bool(cur.get("cont")) and cur["cont"].get("target_u") is not None
        d = ms.d
        mesh = {"nodes": d.M, "layers": d.N, "classes": d.K, "x_min": float(d.x[0]), "x_max": float(d.x[-1]),
                "depth": float(d.t[-1]), "unknowns": ms.X.getSize()}
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "checksum": CHECKSUM,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "reason": reason, "sequence": self.seq, "ranks": self.comm.size,
                 "process_grid": json.dumps(list(ms.mesh.proc_sizes)),
                 "mesh": json.dumps(mesh), "config": json.dumps(self.cfg.to_dict(), default=_json_default),
                 "resume": json.dumps(resume, default=_json_default), "versions": json.dumps(versions())}
        attrs = self.comm.bcast(attrs, root=0)  # identical on all ranks (clocks differ)
        attrs["meta_crc32"] = _meta_crc(attrs)
        path = self.directory / f"ckpt_{self.seq:06d}.h5"
        tmp = self.directory / f".{path.name}.tmp"
        s = ms.mesh.slab
        shape = (d.N + 1, d.K, d.M)
        sel = (slice(s.ys, s.ye), slice(None), slice(s.xs, s.xe))
        blocks = {}
        for prefix, X in (("", ms.X),) + ((("good/", self.good),) if with_good else ()):
            Zo = ms.mesh.owned(X)
            blocks[prefix + "rho"] = np.ascontiguousarray(np.moveaxis(Zo[..., :d.K], 2, 1))
            blocks[prefix + "phi"] = np.ascontiguousarray(np.moveaxis(Zo[..., d.K:], 2, 1))
        terms = {k: checksum_block(v, shape, (s.ys, 0, s.xs)) for k, v in blocks.items()}
        sums = {k: _hex(sum(v)) for k, v in zip(terms, zip(*self.comm.allgather(list(terms.values()))))}
        small = {"x": np.asarray(d.x, dtype="f8"), "t": np.asarray(d.t, dtype="f8"),
                 "residuals": np.asarray((cur.get("newton") or {}).get("history", []), dtype="f8")}
        parallel = h5py.get_config().mpi and self.comm.size > 1
        kw = {"driver": "mpio", "comm": self.comm} if parallel else {}
        with h5py.File(tmp, "w", **kw) as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            for k, v in small.items():
                ds = f.create_dataset(k, data=v)
                ds.attrs["checksum"] = _hex(checksum_block(v, v.shape, (0,))) if v.size else _hex(0)
            for k, v in blocks.items():
                ds = f.create_dataset(k, shape, dtype="f8")
                ds.attrs["checksum"] = sums[k]
                if parallel:
                    with ds.collective:
                        ds[sel] = v
                else:
                    ds[sel] = v
            f.flush()
            pause = float(os.environ.get("MFC_CHECKPOINT_TEST_SLEEP", "0") or 0)
            if pause > 0:  # tests only: widen the write window to kill a run inside it
                time.sleep(pause)
        self.comm.Barrier()
        if self.comm.rank == 0:
            fsync_path(tmp)
            os.replace(tmp, path)
            fsync_path(self.directory)
            for _, old in find_checkpoints(self.directory)[self.settings.keep:]:
                old.unlink(missing_ok=True)
        self.comm.Barrier()
        EVENTS["io"].end()
        self.seq += 1
        self.last_write = time.monotonic()
        self.written.append(path.name)
        self.write_times.append(time.perf_counter() - t)
        log.info("checkpoint %s (%s, phase %s%s) in %.2f s", path.name, reason, cur["phase"],
                 f", Newton {cur['newton']['iteration']}" if cur.get("newton") else "", time.perf_counter() - t)
        return path

    def summary(self) -> dict:
        """For ``summary.json``: what was written, where the run restarted from, wall time."""
        return {"directory": str(self.directory), "written": len(self.written),
                "last": self.written[-1] if self.written else None,
                "write_seconds": float(sum(self.write_times)), "restarted_from": self.restarted_from,
                "restarts": self.restarts, "wall_used_all_runs": self.wall_used()}
