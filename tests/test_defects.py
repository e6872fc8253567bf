"""Regression tests of defects found in the 1-D release (issue 10), each failing there:

* ``solver.guess = "optimisation"`` with ``--restart auto`` resuming on the first mesh
  level crashed with ``UnboundLocalError`` (exit 1);
* ``--checkpoint-every-newton 1`` during the optimisation fallback crashed a valid run
  (a checkpoint of a continuation cursor whose last accepted state had been freed);
* without an MPI build of h5py and with several ranks every rank opened the same file
  with mode ``"w"``; the documented behaviour is a gather to one writer.
"""
from __future__ import annotations

import json

import h5py
import numpy as np

from conftest import run_cli

TWO = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = {M}
layers = {N}
[model]
nu = {nu}
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
gamma = {gamma}
[solver]
{solver}
"""


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_optimisation_guess_resumes_on_the_first_level(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TWO.format(M=33, N=8, nu=0.05, gamma=3.0, solver='guess = "optimisation"\noptimisation_chunk = 200'))
    out = tmp_path / "o"
    run_cli(1, ["solve", cfg, "--out", out, "--checkpoint-keep", "50"])
    first = summary(out)
    assert first["converged"] and first["checkpoint"]["written"] >= 1
    p = run_cli(1, ["solve", cfg, "--out", out, "--restart", "auto"], check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    again = summary(out)
    assert again["converged"] and again["checkpoint"]["restarted_from"]
    assert again["diagnostics"]["cost"]["total"] == first["diagnostics"]["cost"]["total"]


def test_checkpoint_every_newton_during_the_optimisation_fallback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TWO.format(M=65, N=16, nu=0.02, gamma=5.0, solver="nu_start = 0.1"))
    out = tmp_path / "o"
    p = run_cli(1, ["solve", cfg, "--out", out, "--checkpoint-every-newton", "1", "--checkpoint-keep", "3"],
                check=False, timeout=900)
    assert p.returncode in (0, 3), p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    s = summary(out)
    phases = [st["param"] for st in s["newton"][-1]["stages"]]
    assert "optimisation" in phases  # the fallback ran, with checkpoints at every Newton step
    assert s["checkpoint"]["written"] > len(phases)


def test_without_parallel_hdf5_one_rank_writes(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TWO.format(M=33, N=8, nu=0.1, gamma=2.0, solver=""))
    monkeypatch.setenv("MFC_HDF5_POLICY", "gather")  # what a serial build of h5py gets
    run_cli(2, ["solve", cfg, "--out", tmp_path / "g", "--checkpoint-keep", "10"])
    monkeypatch.delenv("MFC_HDF5_POLICY")
    run_cli(2, ["solve", cfg, "--out", tmp_path / "m", "--no-checkpoint"])
    with h5py.File(tmp_path / "g" / "solution.h5") as f, h5py.File(tmp_path / "m" / "solution.h5") as g:
        assert np.array_equal(f["rho"][()], g["rho"][()]) and np.array_equal(f["phi"][()], g["phi"][()])
    ck = sorted((tmp_path / "g" / "checkpoints").glob("ckpt_*.h5"))[0]
    monkeypatch.setenv("MFC_HDF5_POLICY", "gather")
    run_cli(2, ["solve", cfg, "--out", tmp_path / "r", "--restart", str(ck), "--no-checkpoint"])
    assert summary(tmp_path / "r")["converged"]
