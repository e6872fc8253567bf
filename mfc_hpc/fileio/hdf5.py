"""One HDF5 writer and reader for every file of the package, with one fallback policy.

*Policy* (:func:`policy`): with an MPI build of h5py and several ranks every rank writes
and reads its own hyperslab through the ``mpio`` driver (collective I/O); without one, the
ranks' blocks are gathered to rank 0, which alone opens the file (never several ranks
writing one file with mode ``"w"``); on one rank plainly. Files use the HDF5 1.10 format
(``libver = "v110"``: checksummed superblock and object headers) and store text
attributes as fixed-length strings, so nothing lives in the unchecksummed global heap.

*Atomic*: a file is written under a temporary name in its directory, flushed, fsynced and
renamed. Rank 0 first checks that the file system has room for it (:func:`space_error`),
and the ranks agree on errors after every phase (create, metadata, data, flush, close:
under ``mpio`` a rank whose write failed would otherwise leave the others inside the next
collective HDF5 call); on any failure the temporary is truncated (so that closing it
cannot fail on a full disk), closed and removed, and :class:`~mfc_hpc.errors.OutputError`
names the file on every rank: the previous file of that name is never replaced by a
partial one.

*Digest* (:func:`file_digest`): the ``mix64-sum-v1`` checksum of the file's bytes as 64-bit
words, computed collectively (each rank reads its share of the byte range). Checkpoints
and ``solution.h5`` carry it in a sidecar ``NAME.sum`` and are verified against it
*before* HDF5 parses them: a flipped bit in HDF5 metadata can make HDF5 1.10 hang or
crash, and a file that fails the digest is never opened. A file without a sidecar (format
1, or a sidecar lost) is read by a child process with a time limit (:func:`read_in_child`)
and this process looks only at what the child read (:class:`ChildView`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")  # Debian's h5py: pick the MPI build
import h5py  # noqa: E402

from ..errors import EXIT_IO, BadInput, OutputError  # noqa: E402
from ..parallel.agreement import agree as _agree  # noqa: E402
from .checksum import MASK, _mix64, hex64  # noqa: E402
from .summary import fsync_path  # noqa: E402

__all__ = ["policy", "write_file", "agree", "open_read", "read_block", "file_digest", "write_sidecar",
           "read_sidecar", "verify_digest", "probe_in_child", "text_attr", "LIBVER", "HDF5_SIGNATURE",
           "PROBE_TIMEOUT", "read_in_child", "ChildView", "free_bytes", "estimate_bytes", "space_error", "human", "SPACE_MARGIN",
           "remove_temporaries"]

LIBVER = ("v110", "v110") if h5py.version.hdf5_version_tuple >= (1, 10, 0) else ("latest", "latest")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: seconds a child process may take to open a file that has no digest sidecar
PROBE_TIMEOUT = float(os.environ.get("MFC_HDF5_PROBE_TIMEOUT", "20"))
SIDECAR = "mfc_hpc.digest"


def policy(comm) -> str:
    """``"mpio"``, ``"gather"`` or ``"serial"`` (module docstring). ``MFC_HDF5_POLICY=gather``
    forces the gather policy (what a build of h5py without MPI gets; for tests)."""
    if comm.size == 1:
        return "serial"
    if os.environ.get("MFC_HDF5_POLICY") == "gather":
        return "gather"
    return "mpio" if h5py.get_config().mpi else "gather"


def agree(comm, err: str | None, code: int = EXIT_IO) -> str | None:
    """The first error message of any rank, on every rank (``None`` if none failed);
    :func:`mfc_hpc.parallel.agreement.agree` (a failing rank aborts the job if the others
    never arrive)."""
    return _agree(comm, err, code=code)


def free_bytes(path: str | Path) -> int | None:
    """Bytes available to this user on the file system of ``path`` (a directory), or
    ``None`` if the file system does not say."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    if st.f_blocks == 0:  # pseudo file systems report nothing
        return None
    return int(st.f_bavail) * int(st.f_frsize)


#: room kept on top of a file's estimated size (HDF5 object headers, heaps, alignment)
SPACE_MARGIN = 64 * 1024


def estimate_bytes(attrs: dict, small: dict, blocks: dict) -> int:
    """An upper estimate of the size of the file :func:`write_file` writes."""
    n = SPACE_MARGIN
    for v in attrs.values():
        n += 2 * len(str(v)) + 256
    for v, a in small.values():
        n += np.asarray(v).nbytes + 512 + sum(2 * len(str(x)) + 256 for x in a.values())
    for shape, _, _, a in blocks.values():
        n += 8 * int(np.prod(shape, dtype=np.int64)) + 512 + sum(2 * len(str(x)) + 256 for x in a.values())
    return n


def space_error(directory: Path, need: int) -> str | None:
    """Why ``need`` bytes cannot be written in ``directory`` (``None`` if they can, or if
    the file system does not say)."""
    free = free_bytes(directory)
    if free is not None and free < need:
        return f"not enough space on the file system of {directory}: about {human(need)} needed, {human(free)} free"
    return None


def human(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _msg(e: BaseException) -> str:
    """One line: the OS's reason where there is one (HDF5 puts it deep in its message)."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    if isinstance(e, OSError) and e.strerror and "\n" not in text and "error message" not in text:
        return text + (f" ({e.errno})" if e.errno else "")
    m = re.search(r"error message = '([^']*)'", text)  # HDF5's sec2 driver quotes the OS's reason
    t = text.strip().splitlines()
    first = t[0] if t else type(e).__name__
    if m:
        first = first.split(" (", 1)[0] + f" ({m.group(1)})"
    return first


def text_attr(v: Any) -> np.bytes_:
    """A text attribute as a fixed-length string (no global heap)."""
    return np.bytes_(str(v).encode())


def write_file(path: str | Path, comm, attrs: dict, small: dict[str, tuple[np.ndarray, dict]],
               blocks: dict[str, tuple[tuple[int, ...], tuple, np.ndarray, dict]],
               before_close: Callable[[], None] | None = None, digest: bool = False) -> Path:
    """Write an HDF5 file atomically (collective).

    ``attrs``: root attributes (identical on every rank; strings and JSON text become
    fixed-length strings); ``small``: ``name -> (array, attributes)`` written whole by one
    writer (identical on every rank); ``blocks``: ``name -> (global shape, selection,
    this rank's block, attributes)`` of the distributed datasets. ``before_close`` runs
    with the file complete but open (tests use it to widen the write window). With
    ``digest`` the sidecar ``NAME.sum`` is written before the rename. Raises
    :class:`~mfc_hpc.errors.OutputError` on any rank's failure, on every rank.

    Before anything is written, rank 0 checks that the file system has room for the file
    (:func:`estimate_bytes`). The ranks agree on errors after every phase (create,
    metadata, data, flush, close): under the ``mpio`` driver a rank whose write failed
    (disk full under one writer) would otherwise leave the others inside the next
    collective HDF5 call forever.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pol = policy(comm)
    writer = pol == "mpio" or comm.rank == 0
    err = None
    if comm.rank == 0:
        why = space_error(path.parent, estimate_bytes(attrs, small, blocks))
        err = f"cannot write {path}: {why}" if why else None
    err = agree(comm, err)
    gathered = None
    if err is None and pol == "gather":
        gathered = comm.gather({k: (sel, b) for k, (shape, sel, b, _) in blocks.items()}, root=0)
    f = None

    def phase(fn: Callable[[], None]) -> None:
        nonlocal err
        if err is not None:
            return
        e = None
        if writer:
            try:
                fn()
            except Exception as x:  # noqa: BLE001 - any failure ends in one agreed error
                e = f"cannot write {path}: {_msg(x)}"
        err = agree(comm, e)

    def create() -> None:
        nonlocal f
        kw = {"driver": "mpio", "comm": comm} if pol == "mpio" else {}
        f = h5py.File(tmp, "w", libver=LIBVER, **kw)

    def metadata() -> None:
        for k, v in attrs.items():
            f.attrs[k] = text_attr(v) if isinstance(v, str) else v
        for k, (v, a) in small.items():
            ds = f.create_dataset(k, data=v)
            for ak, av in a.items():
                ds.attrs[ak] = text_attr(av) if isinstance(av, str) else av
        for k, (shape, sel, b, a) in blocks.items():
            ds = f.create_dataset(k, shape, dtype="f8")
            for ak, av in a.items():
                ds.attrs[ak] = text_attr(av) if isinstance(av, str) else av

    def data() -> None:
        for k, (shape, sel, b, a) in blocks.items():
            ds = f[k]
            if pol == "mpio":
                with ds.collective:
                    ds[sel] = b
            elif pol == "gather":
                for part in gathered:
                    s2, b2 = part[k]
                    ds[s2] = b2
            else:
                ds[sel] = b

    def close() -> None:
        f.close()

    phase(create)
    opened = err is None
    phase(metadata)
    phase(lambda: f.flush())  # the metadata on disk before the data: a later failure is a data write's
    phase(data)
    phase(lambda: f.flush())
    if err is None and before_close is not None:
        before_close()
    full_note = None
    if err is not None and comm.rank == 0:
        free = free_bytes(path.parent)
        if free is not None and free < SPACE_MARGIN and "space" not in err.lower():
            full_note = f" (the file system is full: {human(free)} free)"
    if opened and err is not None:
        # the temporary is discarded: free its space first, or closing it (which flushes
        # HDF5's metadata) fails on a full disk and leaves a handle that crashes the exit
        if comm.rank == 0:
            try:
                os.truncate(tmp, 0)
            except OSError:
                pass
        agree(comm, None)
    if opened:  # every rank that opened the file closes it (collective under mpio), even after an error
        e_close = None
        if writer:
            try:
                close()
            except Exception as x:  # noqa: BLE001
                e_close = f"cannot write {path}: {_msg(x)}"
        e_close = agree(comm, e_close)
        err = err or e_close
    if err is None and digest:
        try:
            size, dg = file_digest(tmp, comm)
            if comm.rank == 0:
                write_sidecar(path, size, dg)
            e = None
        except Exception as x:  # noqa: BLE001
            e = f"cannot write the digest of {path}: {_msg(x)}"
        err = agree(comm, e)
    if err is None:
        e = None
        if comm.rank == 0:
            try:
                fsync_path(tmp)
                os.replace(tmp, path)
                fsync_path(path.parent)
            except OSError as x:
                e = f"cannot write {path}: {_msg(x)}"
        err = agree(comm, e)
    if err is not None:
        if comm.rank == 0:
            err += full_note or ""
            for p in (tmp, Path(f"{path}.sum.tmp")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
        err = comm.bcast(err, root=0) if comm.size > 1 else err
        raise OutputError(err)
    return path


def remove_temporaries(directory: str | Path, names: tuple[str, ...]) -> list[str]:
    """Remove the temporaries ``.NAME.tmp`` (and ``.NAME.sum.tmp``) that a writer killed
    while writing left in ``directory``; call only while holding its lock. Returns the
    names removed."""
    d = Path(directory)
    out = []
    for n in names:
        for p in (d / f".{n}.tmp", d / f"{n}.sum.tmp"):
            try:
                if p.is_file():
                    p.unlink()
                    out.append(p.name)
            except OSError:
                pass
    return out


# ---------------------------------------------------------------------------- digests

def _word_sum(path: Path, start: int, stop: int, size: int) -> int:
    """The ``mix64-sum`` term of the 64-bit words ``start .. stop-1`` of the file (the last
    word zero-padded)."""
    total = 0
    chunk = 1 << 21  # words
    with open(path, "rb") as f:
        f.seek(8 * start)
        w = start
        while w < stop:
            n = min(chunk, stop - w)
            raw = f.read(8 * n)
            if len(raw) % 8:
                raw += b"\0" * (8 - len(raw) % 8)
            a = np.frombuffer(raw, dtype="<u8")
            with np.errstate(over="ignore"):
                total = (total + int((a * _mix64(np.arange(w, w + a.size, dtype=np.uint64))).sum(dtype=np.uint64))) & MASK
            w += a.size
            if a.size < n:
                break
    return total


def file_digest(path: str | Path, comm=None) -> tuple[int, str]:
    """``(size, digest)`` of a file's bytes; collective over ``comm`` when given (each rank
    hashes its share), else serial."""
    path = Path(path)
    size = path.stat().st_size
    words = (size + 7) // 8
    if comm is None or comm.size == 1:
        return size, hex64(_word_sum(path, 0, words, size))
    a, b = comm.rank * words // comm.size, (comm.rank + 1) * words // comm.size
    part = _word_sum(path, a, b, size)
    return size, hex64(sum(comm.allgather(part)))


def write_sidecar(path: Path, size: int, digest: str) -> Path:
    """``NAME.sum``: the digest of ``NAME`` (JSON), written atomically."""
    side = Path(f"{path}.sum")
    tmp = Path(f"{path}.sum.tmp")
    with open(tmp, "w") as f:
        json.dump({"format": SIDECAR, "version": 1, "algorithm": "mix64-sum-v1 of 64-bit little-endian words",
                   "file": path.name, "size": size, "digest": digest}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, side)
    return side


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of ``path`` (``None`` if there is none); a damaged one raises BadInput."""
    side = Path(f"{path}.sum")
    if not side.is_file():
        return None
    try:
        if side.stat().st_size > 4096:
            raise ValueError("too large")
        s = json.loads(side.read_text())
        if not isinstance(s, dict) or s.get("format") != SIDECAR or not isinstance(s.get("size"), int) or not isinstance(s.get("digest"), str):
            raise ValueError("not a digest sidecar")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: its digest sidecar {side.name} is damaged ({_msg(e)})") from None
    return s


def verify_digest(path: str | Path, comm=None) -> bool:
    """Check ``path`` against its sidecar before anything parses it: ``True`` if it
    matches, ``False`` if there is no sidecar; raises BadInput on a mismatch."""
    path = Path(path)
    s = read_sidecar(path)
    if s is None:
        return False
    size = path.stat().st_size
    if size != s["size"]:
        raise BadInput(f"{path}: truncated or extended file ({size} bytes, the digest sidecar says {s['size']})")
    _, dg = file_digest(path, comm)
    if dg != s["digest"]:
        raise BadInput(f"{path}: corrupted file (digest {dg}, the sidecar says {s['digest']})")
    return True


_CHILD = r"""
import json, os, sys
os.environ.setdefault("H5PY_ALWAYS_USE_MPI", "1")
import numpy as np
import h5py
from mfc_hpc.fileio.checksum import checksum_block, hex64

SMALL = int(sys.argv[2])


def plain(v):
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()] if v.dtype.kind in "SUO" else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def attrs(o):
    return {k: plain(o.attrs[k]) for k in list(o.attrs.keys())}


try:
    with h5py.File(sys.argv[1], "r", driver=None) as f:
        names = []
        f.visit(names.append)
        out = {"attrs": attrs(f), "datasets": {}, "groups": []}
        for n in names:
            o = f[n]
            if isinstance(o, h5py.Dataset):
                d = {"shape": list(o.shape), "dtype": o.dtype.str, "attrs": attrs(o), "value": None,
                     "checksum": None}
                if o.dtype == np.float64:
                    a = o[()]  # every value read once here, so a damaged file fails here, not in the parent
                    d["checksum"] = hex64(checksum_block(a, a.shape, (0,) * a.ndim)) if a.size else hex64(0)
                    if a.size <= SMALL:
                        d["value"] = a.tolist()
                elif o.size <= SMALL:
                    d["value"] = plain(o[()])
                out["datasets"][n] = d
            else:
                out["groups"].append(n)
    print("OK " + json.dumps(out, allow_nan=True))
except Exception as e:
    print("ERR", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
"""
#: datasets up to this many elements come back from the child whole (coordinates, residuals)
CHILD_SMALL = 1 << 16


def read_in_child(path: str | Path, timeout: float | None = None) -> dict:
    """Read ``path`` in a child process with a time limit: every object's metadata, every
    attribute (as plain values), every dataset's shape and dtype, the whole of the small
    ones and the ``mix64-sum`` checksum of every float64 one. A file that hangs or
    crashes HDF5 (a flipped bit in the global heap of a file with variable-length strings
    made HDF5 1.10 loop forever) is refused with a BadInput instead of hanging or
    crashing this process, which then need not parse its attributes itself."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_", "PRTE_"))}
    pkg = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(CHILD_SMALL)], capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BadInput(f"{path}: damaged HDF5 file (HDF5 did not finish reading it within {timeout:g} s)") from None
    out = (p.stdout or "").strip().splitlines()
    if not out or not out[-1].startswith("OK "):
        why = out[-1][4:] if out and out[-1].startswith("ERR ") else f"the reader crashed: exit {p.returncode}"
        raise BadInput(f"{path}: damaged HDF5 file ({why})")
    try:
        return json.loads(out[-1][3:])
    except json.JSONDecodeError:
        raise BadInput(f"{path}: damaged HDF5 file (unreadable metadata)") from None


def probe_in_child(path: str | Path, timeout: float | None = None) -> None:
    """:func:`read_in_child`, keeping only the verdict (BadInput on a hang, a crash or a
    read error)."""
    read_in_child(path, timeout)


class ChildView:
    """What :func:`read_in_child` read, with the parts of h5py's ``File`` interface the
    readers use (``attrs``, ``in``, ``[name]`` with ``shape``, ``dtype``, ``attrs``, ``[()]``
    and ``checksum``), so that a file without a digest is never parsed by HDF5 in this
    process beyond its datasets' data."""

    class _Dataset:
        def __init__(self, d: dict) -> None:
            self.shape = tuple(d["shape"])
            self.dtype = np.dtype(d["dtype"])
            self.attrs = d["attrs"]
            self.value = d["value"]
            self.checksum = d["checksum"]
            self.size = int(np.prod(self.shape, dtype=np.int64))

        def __getitem__(self, key):
            if key != () or self.value is None:
                raise KeyError("only small datasets are read whole from the child")
            return np.asarray(self.value, dtype=self.dtype).reshape(self.shape)

    def __init__(self, info: dict) -> None:
        self.attrs = info["attrs"]
        self._d = {k: self._Dataset(v) for k, v in info["datasets"].items()}
        self._g = set(info.get("groups", []))

    def __contains__(self, name: str) -> bool:
        return name in self._d or name in self._g

    def __getitem__(self, name: str):
        return self._d[name]

    def keys(self):
        return [k for k in self._d if "/" not in k]


# ---------------------------------------------------------------------------- reading

def open_read(path: str | Path, comm) -> h5py.File:
    """Open for reading by the policy (``mpio`` on several ranks with an MPI h5py)."""
    if policy(comm) == "mpio":
        return h5py.File(path, "r", driver="mpio", comm=comm)
    return h5py.File(path, "r")


def read_block(f: h5py.File, name: str, sel: tuple) -> np.ndarray:
    """``f[name][sel]`` (a hyperslab; collective I/O under the MPI driver)."""
    d = f[name]
    if f.driver == "mpio":
        with d.collective:
            return d[sel]
    return d[sel]
