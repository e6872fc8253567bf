"""Checkpoints of a two-dimensional state (issue 11): the layout (N+1, K, M_1, M_2), kill -9
during a write, SIGTERM -> exit 75 -> requeued run, restart on another rank count with the
same answer, and a coarse checkpoint interpolated onto a finer mesh; the XDMF sidecar and
``mfc-hpc inspect`` in 2-D; a version 1 (1-D) solution file still reads."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import h5py
import numpy as np
from mpi4py import MPI

from conftest import PYTHON, REPO, mpi_env, run_cli
from test_checkpoint import assert_same, children, start_solve, wait_for
from mfc_hpc.fileio.checkpoint import find_checkpoints, probe, verify

TWO_CLASS_2D = """
[mesh]
x_min = [-3.0, -2.5]
x_max = [3.0, 2.5]
nodes = [{M1}, {M2}]
layers = {N}
[model]
nu = 0.08
eta = 0.1
[[classes]]
prior = 0.5
mean = [-0.5, 0.2]
var = [0.09, 0.16]
[[classes]]
prior = 0.5
mean = [0.5, -0.1]
var = [[0.09, 0.02], [0.02, 0.12]]
[loss]
kind = "softmax"
weights = [[-1.0, 0.3], [1.0, -0.2]]
gamma = 3.0
[solver]
{solver}
"""
#: continuation in the loss weight and in nu: many stages, checkpoints inside them
STAGED = 'continuation = "always"\nnu_start = 0.16'


def cfg_file(tmp_path, M1=17, M2=13, N=6, solver=STAGED):
    p = tmp_path / f"c{M1}x{M2}x{N}.toml"
    p.write_text(TWO_CLASS_2D.format(M1=M1, M2=M2, N=N, solver=solver))
    return p


def test_layout_xdmf_inspect_and_restart_on_other_rank_counts(tmp_path):
    cfg = cfg_file(tmp_path)
    ref = tmp_path / "ref"
    run_cli(2, ["solve", cfg, "--out", ref, "--checkpoint-keep", "100", "--checkpoint-every-newton", "3"])
    s = json.loads((ref / "summary.json").read_text())
    assert s["converged"] and s["mesh"]["dim"] == 2 and s["mesh"]["nodes"] == [17, 13]
    with h5py.File(ref / "solution.h5", "r") as f:
        assert f["rho"].shape == (7, 2, 17, 13) and f["phi"].shape == (7, 2, 17, 13)
        assert f.attrs["format_version"] == 2 and f.attrs["dim"] == 2
        for k, (n, a, b) in enumerate(((17, -3.0, 3.0), (13, -2.5, 2.5))):
            x = f[f"x{k + 1}"]
            assert x.shape == (n,) and x.attrs["nodes"] == n
            assert x.attrs["lower"] == a and x.attrs["upper"] == b
            assert np.isclose(x.attrs["spacing"], (b - a) / (n - 1))
    xmf = (ref / "solution.xmf").read_text()
    assert 'TopologyType="3DRectMesh" Dimensions="7 17 13"' in xmf and "solution.h5:/x2" in xmf
    r = subprocess.run([PYTHON, "-m", "mfc_hpc", "inspect", str(ref / "solution.h5")], capture_output=True,
                       text=True, env=mpi_env(), cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "state      d = 2" in r.stdout and "17 nodes on [-3, 3] x 13 nodes on [-2.5, 2.5], 6 layers" in r.stdout
    mid = [p for _, p in find_checkpoints(ref / "checkpoints") if probe(p)["has_good"]]
    assert mid, "no checkpoint inside a continuation stage's Newton solve"
    ck = mid[len(mid) // 2]
    hdr = probe(ck)
    assert hdr["mesh"]["dim"] == 2 and hdr["ranks"] == 2 and hdr["resume"]["newton"]["iteration"] > 0
    r = subprocess.run([PYTHON, "-m", "mfc_hpc", "inspect", str(ck)], capture_output=True, text=True,
                       env=mpi_env(), cwd=REPO, timeout=120)
    assert r.returncode == 0 and "state      d = 2" in r.stdout and "solving for" in r.stdout, r.stdout + r.stderr
    n_ref = s["newton_iterations_fine"]
    for n in (1, 3):
        o = tmp_path / f"r{n}"
        run_cli(n, ["solve", cfg, "--out", o, "--restart", ck])
        assert_same(ref / "solution.h5", o / "solution.h5")
        s2 = json.loads((o / "summary.json").read_text())
        assert s2["ranks"] == n and s2["newton_iterations_fine"] == n_ref


def test_kill9_and_sigterm_during_2d_runs(tmp_path):
    cfg = cfg_file(tmp_path)
    ref = tmp_path / "ref"
    run_cli(2, ["solve", cfg, "--out", ref, "--no-checkpoint"])
    o = tmp_path / "k"
    p = start_solve(cfg, o, 2, {"MFC_CHECKPOINT_TEST_SLEEP": "1.0"})
    tmp2 = o / "checkpoints" / ".ckpt_000002.h5.tmp"
    wait_for(tmp2.exists, p)
    for pid in children(p.pid):
        os.kill(pid, signal.SIGKILL)
    p.kill()
    p.communicate()
    good = o / "checkpoints" / "ckpt_000001.h5"
    assert [q for _, q in find_checkpoints(o / "checkpoints")] == [good]
    verify(good, MPI.COMM_SELF)
    run_cli(2, ["solve", cfg, "--out", o, "--restart", "auto"])
    assert not tmp2.exists()
    assert_same(ref / "solution.h5", o / "solution.h5")
    o = tmp_path / "t"
    p = start_solve(cfg, o, 2, {"MFC_CHECKPOINT_TEST_SLEEP": "0.3"})
    wait_for((o / "checkpoints" / "ckpt_000002.h5").exists, p)
    for pid in children(p.pid):
        os.kill(pid, signal.SIGTERM)
    text, _ = p.communicate(timeout=120)
    assert p.returncode == 75, text[-3000:]
    run_cli(3, ["solve", cfg, "--out", o, "--restart", "auto"])
    assert_same(ref / "solution.h5", o / "solution.h5")


CLOSED_2D = """
[mesh]
x_min = [-3.0, -2.5]
x_max = [3.0, 2.5]
nodes = [{M1}, {M2}]
layers = {N}
[model]
nu = 0.1
[[classes]]
mean = [-0.5, 0.3]
var = [0.25, 0.3]
[loss]
alpha = 1.0
target = [0.5, -0.2]
"""


def test_coarse_2d_checkpoint_seeds_a_finer_mesh(tmp_path):
    """``--restart-interpolate`` in 2-D: a 9 x 7 x 4 checkpoint is interpolated (each rank
    reading only the box around its own) onto 17 x 13 x 8, and direct Newton from there
    converges to the fine answer."""
    coarse, fine = tmp_path / "coarse.toml", tmp_path / "fine.toml"
    coarse.write_text(CLOSED_2D.format(M1=9, M2=7, N=4))
    fine.write_text(CLOSED_2D.format(M1=17, M2=13, N=8))
    run_cli(2, ["solve", coarse, "--out", tmp_path / "c"])
    ck = find_checkpoints(tmp_path / "c" / "checkpoints")[0][1]
    r = run_cli(2, ["solve", fine, "--out", tmp_path / "no", "--restart", ck], check=False)
    assert r.returncode == 2 and "other mesh: 9 x 7 x 4" in r.stderr
    run_cli(2, ["solve", fine, "--out", tmp_path / "f", "--restart", ck, "--restart-interpolate", "--no-checkpoint"])
    run_cli(2, ["solve", fine, "--out", tmp_path / "p", "--no-checkpoint"])
    assert_same(tmp_path / "p" / "solution.h5", tmp_path / "f" / "solution.h5")
    seeded = json.loads((tmp_path / "f" / "summary.json").read_text())
    plain = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert seeded["checkpoint"]["restarted_from"] == str(ck)
    first = [h["stages"][0] for h in (seeded["newton"][-1], plain["newton"][-1])]
    assert first[0]["param"] == "direct" and first[0]["converged"]  # Newton from the seed
    assert abs(first[0]["residuals"][0] - first[1]["residuals"][0]) > 1e-3 * first[1]["residuals"][0]


def test_version_1_solution_file_still_reads():
    from mfc_hpc.fileio.solution import read_solution

    s = read_solution(REPO / "tests" / "data" / "release_1d" / "closed_form_solution_v1.h5")
    assert s["dim"] == 1 and s["rho"].shape == (33, 1, 129) and s["grid"]["nodes"] == [129]
    assert s["attrs"]["format_version"] == 1 and s["attrs"]["config"]["mesh"]["nodes"] == 129
    ref = np.load(REPO / "tests" / "data" / "release_1d" / "closed_form.npz")
    assert np.array_equal(s["rho"], ref["rho"])
