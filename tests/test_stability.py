"""Stability bounds (issue 6): the frozen-coefficient formulas, the a priori rule, and a
sweep over (N, M) on 2 ranks in which the rule gives no false "stable" verdict."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mfc_hpc.config import load_config
from mfc_hpc.problem import boundary_data, discretisation
from mfc_hpc.stability import (a_priori, amplification, frozen_drift, frozen_rate, max_amplification,
                               max_nodes, min_layers)

REPO = Path(__file__).resolve().parents[1]
EX = REPO / "mfc_hpc" / "examples"


def test_frozen_rate_below_simple_bound():
    U = np.linspace(0.0, 20.0, 41)[:, None]
    h = np.geomspace(1e-3, 1.0, 31)[None, :]
    nu = 0.05
    r = frozen_rate(U, h, nu)
    simple = 2 * nu / h ** 2 + np.abs(frozen_drift(U, h, nu)) / h
    assert np.all(r <= simple * (1 + 1e-12))
    # b = u (1 + (U h/(2 nu))^2/6 + ...) -> u as h -> 0
    assert np.allclose(frozen_drift(U, 1e-4, nu), U * (1 + (U * 1e-4 / (2 * nu)) ** 2 / 6), rtol=1e-8)


def test_amplification_midpoint_unconditional_and_sawtooth():
    th = np.linspace(0, np.pi, 181)
    for dt in (1e-3, 1e-1, 10.0):
        for U in (0.0, 1.0, 30.0):
            G = amplification(th, dt, U, 0.05, 0.05)
            assert np.abs(G).max() <= 1 + 1e-12
            r = frozen_rate(U, 0.05, 0.05)
            saw = max_amplification(dt, U, 0.05, 0.05)["sawtooth"]
            assert abs(saw - (1 - dt * r) / (1 + dt * r)) < 1e-12
    # implicit Euler damps every mode (|G| < 1 except theta = 0) and never flips sign at theta = pi
    G = amplification(th[1:], 1.0, 1.0, 0.05, 0.05, "euler")
    assert np.all(np.abs(G) < 1) and G[-1].real > 0


def test_min_layers_and_max_nodes_are_the_boundary():
    cfg = load_config(EX / "closed_form.toml").replace(mesh={"nodes": 33})
    d, bd = discretisation(cfg), boundary_data(cfg)
    n = min_layers(d, bd)
    assert a_priori(dataclasses.replace(d, N=n), bd)["stable"]
    assert n == 1 or not a_priori(dataclasses.replace(d, N=n - 1), bd)["stable"]
    d2 = dataclasses.replace(d, N=n)
    m = max_nodes(d2, lambda M: boundary_data(cfg.replace(mesh={"nodes": M})), 4096)
    assert m is not None and m >= 33
    assert a_priori(dataclasses.replace(d2, M=m), boundary_data(cfg.replace(mesh={"nodes": m})))["stable"]
    assert not a_priori(dataclasses.replace(d2, M=m + 1),
                        boundary_data(cfg.replace(mesh={"nodes": m + 1})))["stable"]


def test_sweep_no_false_stable(tmp_path, mpirun):
    """Closed form on a small grid, 2 ranks per solve: no false "stable" verdict, and the
    grid holds observed failures and a priori stable points (the check can fail)."""
    out = tmp_path / "sweep"
    mpirun(2, [REPO / "scripts" / "stability_sweep.py", "--config", EX / "closed_form.toml",
               "--layers", "8,32,128", "--nodes", "17,33,65", "--out", out])
    res = json.loads((out / "sweep.json").read_text())
    assert res["total"] == 9 and not res["missing_points"]
    pts = res["points"]
    assert res["false_stable"] == 0, res["misses"]
    assert any(not p["observed"] for p in pts), "no observed failure: the grid tests nothing"
    assert any(p["a_priori"] for p in pts), "no a priori stable point: the grid tests nothing"
    # the Markov bound is sufficient: a posteriori dt * rate <= 2 always left densities non-negative
    for p in pts:
        if p["converged"] and p["dt_outflow_rate"]["observed"] <= 2.0:
            assert p["positive"], p
    assert (out / "stability_diagram.png").stat().st_size > 10_000
    hits = sum(p["a_priori"] == p["observed"] for p in pts)
    assert res["hit_rate"] == hits / 9


def test_stability_command(tmp_path, cli):
    out = tmp_path / "st"
    p = cli(1, ["stability", EX / "closed_form.toml", "--out", out, "--max-nodes-cap", "2048"])
    assert "smallest stable N for M = 129" in p.stdout
    res = json.loads((out / "stability.json").read_text())
    assert res["run"]["newton"]["converged"]
    assert res["a_priori"]["min_layers"] > res["a_priori"]["layers"]  # 32 layers are too few a priori
    assert (out / "stability.png").stat().st_size > 10_000
    bad = cli(1, ["stability", EX / "closed_form.toml", "--out", out, "--max-nodes-cap", "2"], check=False)
    assert bad.returncode == 2 and "max-nodes-cap" in bad.stderr
