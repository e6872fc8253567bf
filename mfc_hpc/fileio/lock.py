"""A lock on an output directory, so that two runs never write into the same one at once.

``DIR/.mfc_hpc.lock`` is a small JSON file naming its owner: host, pid, the process's
start time (to tell a reused pid apart), the UTC time it was taken, the command, and the
SLURM job, step and restart count when there is one. It is created atomically
(``link`` of a fully written temporary, which fails if the lock exists; ``O_EXCL`` where
the file system has no hard links), refreshed every :data:`HEARTBEAT` seconds by a
daemon thread (its mtime), and removed on release, only by its owner.

A lock that exists is *stale*, and taken over with a warning, when

* its owner ran on this host and that process is gone (or the pid now belongs to a
  process started at another time);
* it belongs to an earlier incarnation of this SLURM job step (a requeued job: same job
  and step ids, another restart count);
* it has not been refreshed for :func:`stale_after` seconds (``MFC_LOCK_STALE_SECONDS``,
  default 600; the owner ran on another host that died);
* it is unreadable and older than a few seconds (a writer killed while creating it).

Otherwise the directory is in use: :class:`LockHeld` (a :class:`~mfc_hpc.errors.BadInput`,
exit 2) names the owner and the lock file.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BadInput

__all__ = ["LOCK_NAME", "DirectoryLock", "LockHeld", "owner_info", "stale_reason", "stale_after", "HEARTBEAT"]

log = logging.getLogger(__name__.split(".")[-1])

LOCK_NAME = ".mfc_hpc.lock"
LOCK_FORMAT = "mfc_hpc.lock"
#: seconds between refreshes of a held lock's mtime
HEARTBEAT = 30.0
_GRACE = 5.0  # an unreadable lock younger than this may be being written


def stale_after() -> float:
    """Seconds without a refresh after which another host's lock is stale."""
    try:
        return max(float(os.environ.get("MFC_LOCK_STALE_SECONDS", "600")), 2 * HEARTBEAT)
    except ValueError:
        return 600.0


class LockHeld(BadInput):
    """The directory is locked by a run that is still alive (exit status 2)."""


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped: a rank whose ``mpiexec`` was
    killed too is reparented to an init that may reap late) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def owner_info(command: str | None = None) -> dict:
    """Who takes a lock now: this process."""
    pid = os.getpid()
    env = os.environ
    return {"format": LOCK_FORMAT, "version": 1, "host": socket.gethostname(), "pid": pid,
            "start_time": _start_time(pid), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command if command is not None else " ".join(["mfc-hpc"] + sys.argv[1:])[:500],
            "slurm_job": env.get("SLURM_JOB_ID"), "slurm_step": env.get("SLURM_STEP_ID"),
            "slurm_restart": env.get("SLURM_RESTART_COUNT", "0"), "token": uuid.uuid4().hex}


def stale_reason(info: dict | None, age: float, me: dict) -> str | None:
    """Why a lock with owner ``info`` (``None``: unreadable), last refreshed ``age``
    seconds ago, is stale for the process ``me``; ``None`` if its owner may be alive."""
    if info is None:
        return "unreadable lock file" if age > _GRACE else None
    host, pid = info.get("host"), info.get("pid")
    if host == me["host"] and isinstance(pid, int) and not isinstance(pid, bool):
        if pid == me["pid"]:
            return None  # this very process (never taken twice)
        if not _alive(pid):
            return f"process {pid} on {host} is not running"
        st = _start_time(pid)
        if info.get("start_time") is not None and st is not None and st != info["start_time"]:
            return f"pid {pid} on {host} now belongs to another process"
        return None
    if me.get("slurm_job") and info.get("slurm_job") == me["slurm_job"] and \
            info.get("slurm_step") == me.get("slurm_step") and info.get("slurm_restart") != me.get("slurm_restart"):
        return f"an earlier incarnation of SLURM job {me['slurm_job']} (restart {info.get('slurm_restart')})"
    if age > stale_after():
        return f"not refreshed for {age:.0f} s (owner on {host} presumed dead)"
    return None


def _describe(info: dict | None) -> str:
    if info is None:
        return "an unknown owner"
    job = f", SLURM job {info['slurm_job']}" if info.get("slurm_job") else ""
    return (f"host {info.get('host')}, pid {info.get('pid')}, since {info.get('started')}{job}: "
            f"{info.get('command')}")


class DirectoryLock:
    """The lock of one directory (module docstring); :meth:`acquire`, :meth:`release`."""

    def __init__(self, directory: str | Path, option: str = "--out") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.option = option
        self.info: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: str | None = None
        self._raw: bytes | None = None

    # ------------------------------------------------------------------ reading
    def read(self) -> tuple[dict | None, float] | None:
        """The owner and the age (seconds since its last refresh) of the lock, ``None``
        if there is no lock; the owner is ``None`` if the file is unreadable."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        age = max(0.0, time.time() - st.st_mtime)
        try:
            if st.st_size > 65536:
                raise ValueError("too large")
            raw = self.path.read_bytes()
            self._raw = raw
            info = json.loads(raw.decode())
            if not isinstance(info, dict) or info.get("format") != LOCK_FORMAT:
                raise ValueError("not a lock")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            info = None
        return info, age

    # ------------------------------------------------------------------ taking
    def _create(self, text: str) -> bool:
        """Create the lock file with ``text`` atomically; ``False`` if it exists."""
        tmp = self.directory / f"{LOCK_NAME}.{socket.gethostname()}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:  # no hard links here: O_EXCL
                if e.errno not in (1, 38, 95):  # EPERM, ENOSYS, EOPNOTSUPP
                    raise
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            return True
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass

    def acquire(self, command: str | None = None) -> "DirectoryLock":
        """Take the lock or raise :class:`LockHeld` naming its owner (call on one rank).
        A stale lock (module docstring) is taken over with a warning."""
        me = owner_info(command)
        text = json.dumps(me, indent=1) + "\n"
        for _ in range(5):
            try:
                if self._create(text):
                    self.info = me
                    self._start_heartbeat()
                    return self
            except OSError as e:
                raise BadInput(f"{self.option}: cannot lock {self.directory}: cannot create {self.path.name}: "
                               f"{e.strerror or e}") from None
            self._raw = None
            got = self.read()
            if got is None:
                continue  # released meanwhile: try again
            info, age = got
            judged = self._raw
            why = stale_reason(info, age, me)
            if why is None:
                raise LockHeld(f"{self.option}: {self.directory} is in use by another run ({_describe(info)}); "
                               f"wait for it to finish or choose another directory (lock file {self.path})")
            aside = self.directory / f"{LOCK_NAME}.stale.{os.getpid()}"
            try:
                os.replace(self.path, aside)  # only one taker wins the rename of a given lock
            except FileNotFoundError:
                continue
            except OSError as e:
                raise BadInput(f"{self.option}: cannot take over the stale lock {self.path}: {e.strerror or e}") \
                    from None
            try:
                moved = aside.read_bytes()
            except OSError:
                moved = None
            if judged is not None and moved != judged:  # another run took it over meanwhile: give it back
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
                try:
                    aside.unlink()
                except OSError:
                    pass
                continue
            try:
                aside.unlink()
            except OSError:
                pass
            self.took_over = f"{_describe(info)}; {why}"
            log.warning("%s: taking over the stale lock of %s", self.directory, self.took_over)
        raise LockHeld(f"{self.option}: {self.directory}: could not take its lock {self.path} (other runs keep "
                       f"taking it)")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT):
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._stop.clear()
        self._thread = threading.Thread(target=beat, name="mfc-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Remove the lock if this process still owns it (idempotent)."""
        if self.info is None:
            return
        self._stop.set()
        try:
            got = self.read()
            if got is not None and got[0] is not None and got[0].get("token") == self.info["token"]:
                self.path.unlink()
        except OSError as e:
            log.warning("could not remove the lock %s: %s", self.path, e)
        self.info = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
