"""Fault scenarios on 2 ranks: a full disk (at the input boundary, during a run, and inside
HDF5 past the free-space check), a read-only output directory (on every rank, and on one
rank only), kill -9 during a checkpoint write, SIGTERM, concurrent runs into one output
directory and stale locks, the lock released on every exit path, and an error on one
rank alone that would otherwise hang the job.

Full disks and read-only directories are real: small tmpfs mounts and, for "read-only on
one rank", a private mount namespace for that rank (``unshare -m`` + a read-only bind
mount, started through mpiexec's MPMD syntax). They need root (CAP_SYS_ADMIN); without it
the read-only cases fall back to ``chmod`` and the others are skipped with the reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, mpi_env, run_cli
from test_checkpoint import TWO_CLASS as TWO  # two classes, continuation: many Newton steps, many checkpoints
from mfc_hpc.fileio.lock import LOCK_NAME

#: one class, closed form on 65 x 16: fast, and large enough that a checkpoint is ~20 KiB
ONE = """
[mesh]
x_min = -3.0
x_max = 3.0
nodes = {M}
layers = {N}
[model]
nu = 0.1
[[classes]]
mean = -0.5
var = 0.25
[loss]
kind = "quadratic"
alpha = 1.0
target = 0.5
"""
ENV = {"MFC_AGREE_TIMEOUT": "20", "MFC_FS_SETTLE_SECONDS": "1"}


def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    d = Path("/tmp") / f"mfc_mount_probe_{os.getpid()}"
    d.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(d)], capture_output=True)
    d.rmdir()
    return ok


MOUNT = can_mount()
needs_mount = pytest.mark.skipif(not MOUNT, reason="needs root (CAP_SYS_ADMIN) to mount a small tmpfs")


@contextlib.contextmanager
def tmpfs(path: Path, size: str, ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def cli(n, args, **kw):
    env = {**mpi_env(), **ENV, **kw.pop("env", {})}
    cmd = ["mpiexec", "-n", str(n), PYTHON, "-m", "mfc_hpc"] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=kw.pop("timeout", 300))


def error_line(p) -> str:
    ours = [line for line in p.stderr.splitlines() if line.startswith("mfc-hpc")]
    assert len(ours) == 1 and ours[0].startswith("mfc-hpc: error: "), p.stderr[-3000:]
    assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
    return ours[0]


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def start(args, n=2, env=None) -> subprocess.Popen:
    cmd = ["mpiexec", "-n", str(n), PYTHON, "-m", "mfc_hpc"] + [str(a) for a in args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**mpi_env(), **ENV, **(env or {})}, start_new_session=True)


def wait_for(pred, p: subprocess.Popen, timeout: float = 180) -> None:
    t = time.monotonic()
    while not pred():
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"the run ended (exit {p.returncode}) before the awaited moment:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() - t > timeout:
            os.killpg(p.pid, signal.SIGKILL)
            pytest.fail("timed out")
        time.sleep(0.02)


@pytest.fixture
def one(tmp_path):
    cfg = tmp_path / "one.toml"
    cfg.write_text(ONE.format(M=65, N=16))
    return cfg


@pytest.fixture
def two(tmp_path):
    cfg = tmp_path / "two.toml"
    cfg.write_text(TWO)
    return cfg


# ---------------------------------------------------------------------------- full disk

@needs_mount
def test_full_disk_at_the_boundary_is_bad_input(tmp_path, one):
    """A file system without room for the first file: exit 2 before any work, naming --out."""
    with tmpfs(tmp_path / "small", "8k") as d:
        p = cli(2, ["solve", one, "--out", d / "out"])
        assert p.returncode == 2
        assert "--out: not enough space in" in error_line(p)
        assert not list((d / "out").glob("*.h5")) and not (d / "out" / LOCK_NAME).exists()


@needs_mount
def test_full_disk_during_the_run_exits_74_with_the_previous_files_intact(tmp_path, two):
    """Checkpoints fill the disk during the run: exit 74 naming the file, the earlier
    checkpoints verify, no temporary is left, the lock is released."""
    from mpi4py import MPI

    from mfc_hpc.fileio.checkpoint import find_checkpoints, verify

    with tmpfs(tmp_path / "disk", "200k") as d:
        p = cli(2, ["solve", two, "--out", d / "out", "--checkpoint-every-newton", "1", "--checkpoint-keep", "1000"])
        assert p.returncode == 74, p.stdout[-2000:] + p.stderr[-2000:]
        line = error_line(p)
        assert "cannot write" in line and "ckpt_" in line and "space" in line, line
        found = find_checkpoints(d / "out" / "checkpoints")
        assert len(found) >= 2
        for _, ck in found:
            verify(ck, MPI.COMM_SELF)  # every checkpoint written before the disk filled is intact
        leftovers = [q.name for q in (d / "out").rglob("*") if q.name.endswith(".tmp")]
        assert not leftovers and not (d / "out" / LOCK_NAME).exists()


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from mpi4py import MPI
    import mfc_hpc.fileio.hdf5 as H
    from mfc_hpc.errors import OutputError
    H.space_error = lambda *a: None  # the disk fills between the check and the write (another process)
    comm = MPI.COMM_WORLD
    n = int(sys.argv[2])
    a, b = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
    try:
        H.write_file(sys.argv[1], comm, {"format": "x", "config": "{}" * 500}, {"t": (np.arange(5.0), {})},
                     {"rho": ((n, 100), (slice(a, b),), np.ones((b - a, 100)), {})}, digest=True)
        out = f"{comm.rank} written"
    except OutputError as e:
        out = f"{comm.rank} OutputError {e}"
    # rank 0 prints both outcomes: lines printed by two ranks can interleave in mpiexec's output
    lines = comm.gather(out, root=0)
    if comm.rank == 0:
        print(*lines, sep=chr(10), flush=True)
""")


@needs_mount
def test_disk_full_inside_parallel_hdf5(tmp_path):
    """ENOSPC inside the MPI-IO writes of HDF5 (past the free-space check) at many file
    sizes: every rank gets the same OutputError, nothing hangs or crashes, no temporary
    is left, the previous file is intact (the release hung here, or crashed at exit)."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with tmpfs(tmp_path / "disk", "256k") as d:
        (d / "previous.h5").write_bytes(b"previous" * 10000)  # 80 kB already there
        for n in (150, 190, 200, 205, 210, 212, 216, 220, 230, 300, 1000):
            p = subprocess.run(["mpiexec", "-n", "2", PYTHON, str(script), str(d / "x.h5"), str(n)],
                               capture_output=True, text=True, env={**mpi_env(), **ENV}, cwd=REPO, timeout=120)
            assert p.returncode == 0, (n, p.stdout, p.stderr[-2000:])
            lines = sorted(p.stdout.split("\n"))
            ok = [line for line in lines if line.endswith("written")]
            bad = [line.split(" ", 2)[2] for line in lines if " OutputError " in line]
            assert len(ok) + len(bad) == 2 and (not ok or not bad), (n, p.stdout)
            if bad:
                assert bad[0] == bad[1] and "x.h5" in bad[0], (n, bad)
                assert not (d / "x.h5").exists()
            names = sorted(q.name for q in d.iterdir())
            assert not [q for q in names if q.endswith(".tmp")], (n, names)
            assert (d / "previous.h5").read_bytes() == b"previous" * 10000
            for q in ("x.h5", "x.h5.sum"):
                (d / q).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- read-only directories

def _readonly(path: Path):
    if MOUNT:
        return tmpfs(path, "64k", ro=True)

    @contextlib.contextmanager
    def chmodded():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    return chmodded()


def test_read_only_output_directory_on_every_rank(tmp_path, one):
    with _readonly(tmp_path / "ro") as d:
        for target in (d, d / "sub"):
            p = cli(2, ["solve", one, "--out", target])
            assert p.returncode == 2
            line = error_line(p)
            assert "--out:" in line and ("not writable" in line or "cannot create" in line), line


RO_RANK = textwrap.dedent("""\
    #!/bin/sh
    # this rank sees DIR read-only (a private mount namespace)
    dir="$1"; shift
    exec unshare -m --propagation private sh -c 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"' "$dir" "$@"
""")


@needs_mount
def test_read_only_on_one_rank_does_not_hang(tmp_path, one):
    """The release: one rank failed in mkdir, the other waited forever. Now every rank
    checks the directory and they agree: exit 2 naming the rank."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    wrap = tmp_path / "ro_rank.sh"
    wrap.write_text(RO_RANK)
    wrap.chmod(0o755)
    base = tmp_path / "shared"
    base.mkdir()
    args = ["-m", "mfc_hpc", "solve", str(one), "--out", str(base / "out")]
    cmd = ["mpiexec", "-n", "1", PYTHON] + args + [":", "-n", "1", str(wrap), str(base), PYTHON] + args
    p = subprocess.run(cmd, capture_output=True, text=True, env={**mpi_env(), **ENV}, cwd=REPO, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    line = error_line(p)
    assert "--out:" in line and "not writable (on rank 1" in line, line
    assert not (base / "out" / LOCK_NAME).exists() and not list((base / "out").glob("*.h5"))


FILE_RANK = textwrap.dedent("""\
    #!/bin/sh
    # this rank sees PARENT as a fresh tmpfs in which NAME is a file (a private mount namespace)
    parent="$1"; name="$2"; shift 2
    exec unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs "$0" && touch "$0/$1" && shift && exec "$@"' "$parent" "$name" "$@"
""")


@needs_mount
def test_checkpoint_directory_a_file_on_one_rank_does_not_hang(tmp_path, one):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    wrap = tmp_path / "file_rank.sh"
    wrap.write_text(FILE_RANK)
    wrap.chmod(0o755)
    parent = tmp_path / "ckparent"
    parent.mkdir()
    args = ["-m", "mfc_hpc", "solve", str(one), "--out", str(tmp_path / "out"), "--checkpoint-dir", str(parent / "ck")]
    cmd = ["mpiexec", "-n", "1", PYTHON] + args + [":", "-n", "1", str(wrap), str(parent), "ck", PYTHON] + args
    p = subprocess.run(cmd, capture_output=True, text=True, env={**mpi_env(), **ENV}, cwd=REPO, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    line = error_line(p)
    assert "--checkpoint-dir:" in line and "is not a directory (on rank 1" in line, line


# ---------------------------------------------------------------------------- kill -9, SIGTERM, locks

def test_kill9_during_a_write_then_the_stale_lock_is_taken_over(tmp_path, two):
    out = tmp_path / "out"
    p = start(["solve", two, "--out", out], env={"MFC_CHECKPOINT_TEST_SLEEP": "1.0"})
    tmp2 = out / "checkpoints" / ".ckpt_000002.h5.tmp"
    wait_for(tmp2.exists, p)
    lock = json.loads((out / LOCK_NAME).read_text())
    for pid in children(p.pid):
        os.kill(pid, signal.SIGKILL)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    assert (out / LOCK_NAME).exists() and tmp2.exists()  # what kill -9 leaves behind
    r = cli(2, ["solve", two, "--out", out, "--restart", "auto"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"taking over the stale lock of host {lock['host']}, pid {lock['pid']}" in r.stdout
    assert "ckpt_000001.h5" in r.stdout  # resumed from the last good checkpoint
    assert not tmp2.exists() and not (out / LOCK_NAME).exists()


def test_sigterm_exits_75_and_releases_the_lock(tmp_path, two):
    out = tmp_path / "out"
    p = start(["solve", two, "--out", out], env={"MFC_CHECKPOINT_TEST_SLEEP": "0.3"})
    wait_for((out / "checkpoints" / "ckpt_000002.h5").exists, p)
    for pid in children(p.pid):
        os.kill(pid, signal.SIGTERM)
    o, e = p.communicate(timeout=120)
    assert p.returncode == 75, o[-2000:] + e[-2000:]
    assert not (out / LOCK_NAME).exists()


def test_concurrent_runs_into_one_directory(tmp_path, two):
    """Two solves into the same --out at once: the second refuses (exit 2) naming the
    first's host and pid, the first finishes undisturbed and releases the lock."""
    out = tmp_path / "out"
    a = start(["solve", two, "--out", out], env={"MFC_CHECKPOINT_TEST_SLEEP": "0.5"})
    wait_for((out / LOCK_NAME).exists, a)
    owner = json.loads((out / LOCK_NAME).read_text())
    b = cli(2, ["solve", two, "--out", out])
    assert b.returncode == 2
    line = error_line(b)
    assert f"is in use by another run (host {owner['host']}, pid {owner['pid']}" in line, line
    oa, ea = a.communicate(timeout=600)
    assert a.returncode == 0, ea[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] and not (out / LOCK_NAME).exists()
    assert s["checkpoint"]["written"] >= 2 and s["checkpoint"]["restarts"] == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, one):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket
    (out / LOCK_NAME).write_text(json.dumps({"format": "mfc_hpc.lock", "version": 1, "host": socket.gethostname(),
                                             "pid": dead.pid, "start_time": "1", "started": "then",
                                             "command": "mfc-hpc solve old.toml", "token": "x"}))
    (out / ".solution.h5.tmp").write_bytes(b"partial")  # what the dead writer left
    p = cli(2, ["solve", one, "--out", out])
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"pid {dead.pid}" in p.stdout and "is not running" in p.stdout
    assert not (out / LOCK_NAME).exists() and not (out / ".solution.h5.tmp").exists()


def test_the_lock_is_released_on_exit_2_3_and_74(tmp_path, one, two):
    # exit 3: a solve that does not converge
    cfg = tmp_path / "nc.toml"
    cfg.write_text(TWO.replace('continuation = "always"', 'continuation = "never"\nmax_it = 1'))
    out = tmp_path / "o3"
    p = cli(2, ["solve", cfg, "--out", out, "--no-checkpoint"])
    assert p.returncode == 3 and not (out / LOCK_NAME).exists()
    # exit 2 after the lock was taken: a checkpoint of another mesh refused by the restore
    ref = tmp_path / "ref"
    run_cli(1, ["solve", one, "--out", ref])
    ck = sorted((ref / "checkpoints").glob("ckpt_*.h5"))[0]
    other = tmp_path / "other.toml"
    other.write_text(ONE.format(M=33, N=8))
    out = tmp_path / "o2"
    p = cli(2, ["solve", other, "--out", out, "--restart", ck])
    assert p.returncode == 2 and "other mesh" in error_line(p)
    assert not (out / LOCK_NAME).exists()
    # exit 74: an output file that cannot be replaced (summary.json is a directory)
    out = tmp_path / "o74"
    (out / "summary.json").mkdir(parents=True)
    p = cli(2, ["solve", one, "--out", out, "--no-checkpoint"])
    assert p.returncode == 74, p.stderr[-2000:]
    assert "summary.json" in error_line(p) and not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------- one rank alone

LONE = textwrap.dedent("""
    import sys, types
    from mfc_hpc.cli import main as M
    from mfc_hpc.errors import BadInput

    mod = types.ModuleType("mfc_hpc.cli.commands.lonely")

    def run(args):
        from mpi4py import MPI
        if MPI.COMM_WORLD.rank == 1:
            raise BadInput("a rank-local failure nobody agreed on")
        MPI.COMM_WORLD.bcast(None, root=1)  # rank 0 waits for rank 1 forever
        return 0

    def add_parser(sub):
        sub.add_parser("lonely").set_defaults(func=run)

    mod.add_parser, mod.run = add_parser, run
    sys.modules["mfc_hpc.cli.commands.lonely"] = mod
    M.COMMANDS["lonely"] = "lonely"
    sys.exit(M.main(["lonely"]))
""")


def test_an_error_on_one_rank_alone_aborts_instead_of_hanging(tmp_path):
    """The safety net under the agreements: a rank that exits with an error waits at most
    MFC_AGREE_TIMEOUT seconds for the others to exit too, then aborts the job."""
    script = tmp_path / "lonely.py"
    script.write_text(LONE)
    t = time.monotonic()
    p = subprocess.run(["mpiexec", "-n", "2", PYTHON, str(script)], capture_output=True, text=True, cwd=REPO,
                       env={**mpi_env(), "MFC_AGREE_TIMEOUT": "5"}, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "a rank-local failure nobody agreed on (rank 1" in p.stderr
    assert time.monotonic() - t < 60
