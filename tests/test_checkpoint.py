"""Checkpoints (mfc_hpc/checkpoint.py): restart on other rank counts with the same answer,
kill -9 inside a write, SIGTERM -> checkpoint + exit 75 -> requeued run, refusal of
truncated / bit-flipped / foreign / future / other-mesh / other-problem files, the
decomposition-independent checksum, interpolation of a coarse checkpoint onto a fine mesh."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from conftest import PYTHON, REPO, mpi_env, run_cli
from mfc_hpc.config import ConfigError, config_from_dict
from mfc_hpc.fileio.checkpoint import CheckpointError, find_checkpoints, newest_good, probe, verify
from mfc_hpc.fileio.checksum import checksum_block
from mfc_hpc.fileio.restart import Checkpointer

# two classes, continuation in the loss weight and in nu (8 stages, 24 Newton steps)
TWO_CLASS = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = 33
layers = 8
[model]
nu = 0.05
eta = 0.1
[[classes]]
prior = 0.5
mean = -0.5
var = 0.09
[[classes]]
prior = 0.5
mean = 0.5
var = 0.09
[loss]
kind = "softmax"
weights = [-1.0, 1.0]
gamma = 5.0
[solver]
continuation = "always"
nu_start = 0.1
"""
RTOL = 1e-9


def state(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["rho"][()], f["phi"][()]


def assert_same(a: Path, b: Path, rtol: float = RTOL) -> None:
    (ra, pa), (rb, pb) = state(a), state(b)
    assert ra.shape == rb.shape
    assert np.abs(ra - rb).max() <= rtol * np.abs(ra).max()
    assert np.abs(pa - pb).max() <= rtol * np.abs(pa).max()


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


def start_solve(cfg: Path, out: Path, nranks: int = 2, env: dict | None = None, *extra: str) -> subprocess.Popen:
    cmd = ["mpiexec", "-n", str(nranks), PYTHON, "-m", "mfc_hpc", "solve", str(cfg), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**mpi_env(), **(env or {})})


def wait_for(pred, p: subprocess.Popen, timeout: float = 120) -> None:
    t = time.monotonic()
    while not pred():
        if p.poll() is not None:
            pytest.fail(f"the run ended (exit {p.returncode}) before the awaited moment:\n{p.stdout.read()[-3000:]}")
        if time.monotonic() - t > timeout:
            p.kill()
            pytest.fail("timed out")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """An uninterrupted 2-rank run that keeps all its checkpoints (every 4 Newton steps too)."""
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "two_class.toml"
    cfg.write_text(TWO_CLASS)
    run_cli(2, ["solve", cfg, "--out", d / "out", "--checkpoint-keep", "100", "--checkpoint-every-newton", "4"])
    return cfg, d / "out"


def test_checkpointing_does_not_change_the_answer(ref, tmp_path):
    cfg, out = ref
    run_cli(2, ["solve", cfg, "--out", tmp_path, "--no-checkpoint"])
    # not bit for bit: MUMPS on 2 ranks schedules its factorisation dynamically, so two runs
    # on a loaded machine can differ in the last bit (2.2e-16 seen) with or without checkpoints
    assert_same(out / "solution.h5", tmp_path / "solution.h5", rtol=1e-12)
    assert not (tmp_path / "checkpoints").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["checkpoint"]["written"] >= 8 and s["checkpoint"]["restarts"] == 0


def test_restart_on_1_and_3_ranks(ref, tmp_path):
    """A checkpoint written on 2 ranks inside a continuation stage's Newton solve (it holds
    the iterate and the last accepted state) resumes on 1 and 3 ranks to the same answer,
    with the same Newton iteration count."""
    cfg, out = ref
    mid = [p for _, p in find_checkpoints(out / "checkpoints") if probe(p)["has_good"]]
    assert mid, "no checkpoint inside a continuation stage's Newton solve"
    ck = mid[len(mid) // 2]
    hdr = probe(ck)
    assert hdr["ranks"] == 2 and hdr["resume"]["newton"]["iteration"] > 0 and hdr["reason"] == "newton"
    n_ref = json.loads((out / "summary.json").read_text())["newton_iterations_fine"]
    for n in (1, 3):
        o = tmp_path / f"r{n}"
        run_cli(n, ["solve", cfg, "--out", o, "--restart", ck])
        assert_same(out / "solution.h5", o / "solution.h5")
        s = json.loads((o / "summary.json").read_text())
        assert s["ranks"] == n and s["checkpoint"]["restarted_from"] == str(ck)
        assert s["newton_iterations_fine"] == n_ref


def test_kill9_during_checkpoint_write(ref, tmp_path):
    cfg, out = ref
    o = tmp_path / "out"
    p = start_solve(cfg, o, 2, {"MFC_CHECKPOINT_TEST_SLEEP": "1.0"})  # tests only: a wide write window
    tmp2 = o / "checkpoints" / ".ckpt_000002.h5.tmp"
    wait_for(tmp2.exists, p)
    for pid in children(p.pid):  # the ranks, then mpiexec
        os.kill(pid, signal.SIGKILL)
    p.kill()
    p.communicate()
    assert tmp2.exists()  # the write was cut off ...
    good = o / "checkpoints" / "ckpt_000001.h5"
    assert [q for _, q in find_checkpoints(o / "checkpoints")] == [good]
    verify(good, MPI.COMM_SELF)  # ... and the previous checkpoint is intact
    r = run_cli(2, ["solve", cfg, "--out", o, "--restart", "auto"])
    assert "ckpt_000001.h5" in r.stdout
    assert not tmp2.exists()  # stale partial file removed
    assert_same(out / "solution.h5", o / "solution.h5")


def test_sigterm_checkpoints_and_exits_75_then_requeued_run_finishes(ref, tmp_path):
    cfg, out = ref
    o = tmp_path / "out"
    p = start_solve(cfg, o, 2, {"MFC_CHECKPOINT_TEST_SLEEP": "0.3"})
    wait_for((o / "checkpoints" / "ckpt_000002.h5").exists, p)
    for pid in children(p.pid):  # what SLURM does at the time limit: SIGTERM to every task
        os.kill(pid, signal.SIGTERM)
    text, _ = p.communicate(timeout=120)
    assert p.returncode == 75, text[-3000:]
    assert "written on SIGTERM" in text
    newest = find_checkpoints(o / "checkpoints")[0][1]
    assert probe(newest)["reason"] == "signal"
    r = run_cli(2, ["solve", cfg, "--out", o, "--restart", "auto"])
    assert newest.name in r.stdout
    assert_same(out / "solution.h5", o / "solution.h5")
    assert json.loads((o / "summary.json").read_text())["checkpoint"]["restarts"] == 1


# ---------------------------------------------------------------------------- refusals

def _copy(ref, tmp_path: Path, name: str) -> Path:
    """A copy of the newest checkpoint and of its digest sidecar."""
    src = find_checkpoints(ref[1] / "checkpoints")[0][1]
    dst = tmp_path / name
    shutil.copy(src, dst)
    shutil.copy(f"{src}.sum", f"{dst}.sum")
    return dst


def test_refuses_damaged_foreign_and_future_files(ref, tmp_path):
    good = _copy(ref, tmp_path, "good.h5")
    verify(good, MPI.COMM_SELF)

    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    shutil.copy(f"{good}.sum", f"{trunc}.sum")
    with pytest.raises(CheckpointError, match="truncated"):
        verify(trunc, MPI.COMM_SELF)
    Path(f"{trunc}.sum").unlink()  # without its digest: HDF5 itself (in a child process) finds it
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        verify(trunc, MPI.COMM_SELF)

    flip = _copy(ref, tmp_path, "flip.h5")
    with h5py.File(flip, "r") as f:
        off = f["phi"].id.get_offset() + 8 * 100 + 3  # a byte inside phi's data
    with open(flip, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 0x10]))  # one bit
    with pytest.raises(CheckpointError, match="corrupted file"):  # the digest, before HDF5 opens it
        verify(flip, MPI.COMM_SELF)
    Path(f"{flip}.sum").unlink()  # without the digest: the dataset's own checksum
    with pytest.raises(CheckpointError, match="checksum mismatch in dataset 'phi'"):
        verify(flip, MPI.COMM_SELF)
    shutil.copy(f"{good}.sum", f"{flip}.sum")

    text = tmp_path / "notes.h5"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="foreign file: not HDF5"):
        verify(text, MPI.COMM_SELF)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["rho"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="foreign HDF5 file"):
        verify(other, MPI.COMM_SELF)
    with pytest.raises(CheckpointError, match="solution file, not a checkpoint"):
        verify(ref[1] / "solution.h5", MPI.COMM_SELF)

    future = _copy(ref, tmp_path, "future.h5")
    with h5py.File(future, "r+") as f:
        f.attrs["format_version"] = 3
    Path(f"{future}.sum").unlink(missing_ok=True)  # edited on purpose: no digest
    with pytest.raises(CheckpointError, match="format version 3 is newer"):
        verify(future, MPI.COMM_SELF)

    meta = _copy(ref, tmp_path, "meta.h5")
    with h5py.File(meta, "r+") as f:
        f.attrs["resume"] = np.bytes_(f.attrs["resume"].replace(b'"phase": "done"', b'"phase": "loss"'))
    Path(f"{meta}.sum").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="metadata CRC-32 mismatch"):
        verify(meta, MPI.COMM_SELF)

    # the command line (a plain process, as a user runs it): one line on stderr, exit 2, no traceback
    def inspect(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "mfc_hpc", "inspect", str(path)], capture_output=True, text=True,
                              env=mpi_env(), cwd=REPO, timeout=120)

    for bad, why in ((trunc, "truncated|damaged"), (flip, "corrupted"), (text, "foreign"), (future, "newer")):
        r = inspect(bad)
        assert r.returncode == 2, r.stderr
        import re
        assert re.search(why, r.stderr) and "Traceback" not in r.stderr + r.stdout
        assert len(r.stderr.strip().splitlines()) == 1
    r = inspect(good)
    assert r.returncode == 0, r.stderr
    for word in ("state      d = 1", "mesh       33 nodes on [-4, 4], 8 layers", "classes    2", "phase done",
                 "versions   mfc_hpc", "rho ok", "phi ok"):
        assert word in r.stdout
    # --restart auto skips a damaged newest checkpoint and takes the next good one
    d = tmp_path / "auto" / "checkpoints"
    d.mkdir(parents=True)
    for src, name in ((good, "ckpt_000001.h5"), (flip, "ckpt_000002.h5")):
        shutil.copy(src, d / name)
        shutil.copy(f"{src}.sum", d / f"{name}.sum")
    assert newest_good(d, MPI.COMM_SELF)[0] == d / "ckpt_000001.h5"


def test_refuses_other_mesh_and_other_problem(ref, tmp_path):
    cfg, out = ref
    ck = find_checkpoints(out / "checkpoints")[0][1]
    finer = tmp_path / "finer.toml"
    finer.write_text(TWO_CLASS.replace("nodes = 33", "nodes = 65"))
    r = run_cli(2, ["solve", finer, "--out", tmp_path / "a", "--restart", ck], check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "other mesh: 33 x 8 (nodes x layers)" in r.stderr and "--restart-interpolate" in r.stderr
    other = tmp_path / "other.toml"
    other.write_text(TWO_CLASS.replace("gamma = 5.0", "gamma = 2.0"))
    r = run_cli(1, ["solve", other, "--out", tmp_path / "b", "--restart", ck], check=False)
    assert r.returncode == 2 and "other problem: loss.gamma = 5.0 in the checkpoint, 2.0 here" in r.stderr


# ---------------------------------------------------------------------------- in process

def test_checksum_is_decomposition_independent_and_catches_bit_flips():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((9, 2, 17))
    whole = checksum_block(A, A.shape, (0, 0, 0))
    for cuts_n, cuts_i in (((0, 4, 9), (0, 17)), ((0, 2, 3, 9), (0, 5, 11, 17)), ((0, 9), (0, 1, 17))):
        s = 0
        for n0, n1 in zip(cuts_n, cuts_n[1:]):
            for i0, i1 in zip(cuts_i, cuts_i[1:]):
                s += checksum_block(A[n0:n1, :, i0:i1], A.shape, (n0, 0, i0), rows_per_chunk=2)
        assert s % 2**64 == whole
    B = A.copy()
    B.view(np.uint64)[4, 1, 7] ^= np.uint64(1) << np.uint64(52)
    assert checksum_block(B, B.shape, (0, 0, 0)) != whole
    C = A.copy()
    C[0, 0, [0, 1]] = C[0, 0, [1, 0]]  # swapped values
    assert checksum_block(C, C.shape, (0, 0, 0)) != whole


def test_checkpoint_config_section():
    base = {"classes": [{"mean": 0.0, "var": 0.25}]}
    cfg = config_from_dict({**base, "checkpoint": {"every_newton": 3, "keep": 4, "every_minutes": 30}})
    c = cfg.checkpoint
    assert (c.every_newton, c.keep, c.every_minutes, c.at_stage_end) == (3, 4, 30.0, True)
    for bad, msg in (({"keep": 0}, "checkpoint.keep: must be an integer >= 1"),
                     ({"every_newton": -1}, "checkpoint.every_newton"),
                     ({"every_minutes": "often"}, "checkpoint.every_minutes: must be a number"),
                     ({"at_stage_end": 1}, "checkpoint.at_stage_end: must be true or false"),
                     ({"when": 1}, "checkpoint.when: unknown key")):
        with pytest.raises(ConfigError, match=msg):
            config_from_dict({**base, "checkpoint": bad})


def closed_form(M: int, N: int) -> dict:
    return {"mesh": {"x_min": -3.0, "x_max": 3.0, "nodes": M, "layers": N},
            "model": {"nu": 0.1}, "classes": [{"mean": -0.5, "var": 0.25}],
            "loss": {"alpha": 1.0, "target": 0.5}}


def test_coarse_checkpoint_seeds_a_fine_run(tmp_path):
    """``--restart-interpolate``: a 17x4 checkpoint is interpolated onto 33x8 (each rank
    reading only the rows and columns around its box) and Newton, started there instead of
    from the uncontrolled flow, converges to the fine answer."""
    from petsc4py import PETSc

    from cases import solve_case

    coarse, fine = config_from_dict(closed_form(17, 4)), config_from_dict(closed_form(33, 8))
    ck = Checkpointer(PETSc.COMM_WORLD, tmp_path / "c")
    ms, _, _ = solve_case(coarse, observers=[ck])
    ck.restore_signals()
    ms.destroy()
    path = find_checkpoints(tmp_path / "c")[0][1]
    with pytest.raises(CheckpointError, match="other mesh: 17 x 4"):
        solve_case(fine, observers=[Checkpointer(PETSc.COMM_WORLD, tmp_path / "f", restart=path)])
    ck = Checkpointer(PETSc.COMM_WORLD, tmp_path / "f", restart=path, interpolate=True)
    ms, seeded, Z = solve_case(fine, observers=[ck])
    ck.restore_signals()
    ms2, plain, Z2 = solve_case(fine)
    assert np.abs(Z - Z2).max() <= RTOL * np.abs(Z2).max()
    assert seeded["checkpoint"]["restarted_from"] == str(path)
    first = [h["stages"][0] for h in (seeded["newton"][-1], plain["newton"][-1])]
    assert first[0]["param"] == "direct" and first[0]["converged"]  # Newton from the seed, no continuation
    assert abs(first[0]["residuals"][0] - first[1]["residuals"][0]) > 1e-3 * first[1]["residuals"][0]
    ms.destroy()
    ms2.destroy()
