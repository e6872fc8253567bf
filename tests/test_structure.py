"""The preserved structure (issues 6 and 11): Hamiltonian drift orders, the symplectic form
of linearised solutions, exact mass, the Euler-Poincare residual, for d = 1 and d = 2; a
serial reference (scipy Newton and LU on the exact Jacobian) and the parallel command on
2 ranks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cases import closed_form_config, two_class_config
from mfc_hpc.numerics.depth import serial_jacobian, split
from mfc_hpc.numerics.grid import BoxGeometry
from mfc_hpc.numerics.quantities import hamiltonian
from mfc_hpc.numerics.reference import reference_newton
from mfc_hpc.problem.build import build_problem
from mfc_hpc.studies.structure import (euler_poincare_residual, observed_order, perturbations, symplectic_form,
                                       symplectic_variation, with_scheme)

EX = Path(__file__).resolve().parents[1] / "mfc_hpc" / "examples"


def record(cfg, scheme: str = "midpoint") -> dict:
    """Every structure measurement of one serial solve: drift, symplectic form, mass, EP."""
    import scipy.sparse.linalg as spla

    p = with_scheme(build_problem(cfg), scheme)
    d, bd = p.d, p.bd
    r = reference_newton(d, bd, rtol=1e-12)
    assert r.converged, f"{scheme}: Newton did not converge (|F|/|F0| = {r.residual:.2e})"
    lu = spla.splu(serial_jacobian(r.Z, d, bd).tocsc())
    ra, rb = perturbations(d, bd)
    a, b = (lu.solve(v.ravel()).reshape(r.Z.shape) for v in (ra, rb))
    w = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes).w
    om, S = symplectic_form(a, b, w, d.K)
    rho, phi = split(r.Z, d.K)
    geom = BoxGeometry(d.grid, (0,) * d.ndim, d.grid.nodes)
    H = hamiltonian(rho, phi, geom, d)
    mass = (w * rho).reshape(d.N + 1, d.K, -1).sum(axis=2)
    pi = (w * bd.rho0).reshape(d.K, -1).sum(axis=1)
    return {"dt": d.dt, "h": d.grid.h[0], "hamiltonian_drift": float(np.abs(H - H[0]).max()),
            "symplectic": symplectic_variation(om, S), "mass_error": float(np.abs(mass - pi).max() / pi.sum()),
            "euler_poincare": euler_poincare_residual(r.Z, d)}


@pytest.fixture(scope="module")
def dt_series() -> dict:
    """Closed form on 33 nodes, N = 16, 32, 64, both schemes."""
    return {s: [record(closed_form_config(33, N), s) for N in (16, 32, 64)] for s in ("midpoint", "euler")}


def test_hamiltonian_drift_orders(dt_series):
    """Midpoint: max_n |H^n - H^0| = O(dt^2); implicit Euler: O(dt) (fixed node mesh)."""
    for scheme, (lo, hi) in (("midpoint", (1.8, 2.2)), ("euler", (0.75, 1.25))):
        recs = dt_series[scheme]
        p = observed_order([r["dt"] for r in recs], [r["hamiltonian_drift"] for r in recs])
        assert all(lo <= x <= hi for x in p), f"{scheme}: drift orders {p}"
    assert dt_series["euler"][-1]["hamiltonian_drift"] > 20 * dt_series["midpoint"][-1]["hamiltonian_drift"]


def test_symplectic_form_one_class(dt_series):
    """omega^n constant to 1e-10 of sum w(|a_rho b_phi| + |a_phi b_rho|) for the midpoint
    scheme with the exact Jacobian; implicit Euler changes it at the percent level."""
    for r in dt_series["midpoint"]:
        assert r["symplectic"]["relative_variation"] < 1e-10, r["symplectic"]["relative_variation"]
    for r in dt_series["euler"]:
        assert r["symplectic"]["relative_variation"] > 1e-3, r["symplectic"]["relative_variation"]
    om = np.array(dt_series["midpoint"][0]["symplectic"]["omega"])
    assert abs(om[0]) > 1e-3 * dt_series["midpoint"][0]["symplectic"]["reference"]  # not trivially zero


def test_mass_exact(dt_series):
    for s in ("midpoint", "euler"):
        for r in dt_series[s]:
            assert r["mass_error"] < 1e-13, (s, r["mass_error"])


def test_two_classes_symplectic_and_mass():
    cfg = two_class_config(33, 16, gamma=1.0, nu=0.05)
    mid, eul = record(cfg, "midpoint"), record(cfg, "euler")
    assert mid["symplectic"]["relative_variation"] < 1e-10
    assert eul["symplectic"]["relative_variation"] > 1e-5
    assert mid["mass_error"] < 1e-13 and eul["mass_error"] < 1e-13
    assert mid["euler_poincare"] is None  # the hydrodynamic pair is for one class


def test_euler_poincare_second_order():
    """The hydrodynamic pair's residual on the discrete solution shrinks like h^2 (d = 1)."""
    recs = [record(closed_form_config(M, N)) for M, N in ((33, 8), (65, 16), (129, 32))]
    h = [r["h"] for r in recs]
    for key in ("momentum", "continuity"):
        p = observed_order(h, [r["euler_poincare"][key] for r in recs])
        assert all(1.6 <= x <= 2.4 for x in p), (key, p)


# ------------------------------------------------------------------------------ d = 2

@pytest.fixture(scope="module")
def dt_series_2d() -> list[dict]:
    """2-D closed form on 13 x 13 nodes, N = 4, 8, 16 (midpoint)."""
    return [record(closed_form_config((13, 13), N)) for N in (4, 8, 16)]


def test_2d_hamiltonian_drift_second_order(dt_series_2d):
    """Issue 11: drift O(dt^2) on a fixed node mesh, ratio >= 3.5 per halving of dt."""
    d = [r["hamiltonian_drift"] for r in dt_series_2d]
    assert all(d[k] / d[k + 1] >= 3.5 for k in range(len(d) - 1)), d


def test_2d_symplectic_form_and_mass(dt_series_2d):
    """Issue 11: the symplectic form of two linearised solutions is constant to round-off
    and mass is exact per class and level (1e-12)."""
    for r in dt_series_2d:
        assert r["symplectic"]["relative_variation"] < 1e-12, r["symplectic"]["relative_variation"]
        assert r["mass_error"] < 1e-12, r["mass_error"]
    om = np.array(dt_series_2d[0]["symplectic"]["omega"])
    assert abs(om[0]) > 1e-3 * dt_series_2d[0]["symplectic"]["reference"]


def test_2d_two_classes_and_euler():
    """Two classes in 2-D (F != 0 too): symplectic to round-off, mass exact; implicit Euler
    is not symplectic there either."""
    cfg = two_class_config((11, 9), 6, kappa=0.5)
    mid, eul = record(cfg, "midpoint"), record(cfg, "euler")
    assert mid["symplectic"]["relative_variation"] < 1e-12
    assert eul["symplectic"]["relative_variation"] > 1e-5
    assert mid["mass_error"] < 1e-12 and eul["mass_error"] < 1e-12


def test_2d_euler_poincare_shrinks():
    """The 2-D hydrodynamic pair's momentum residual falls under joint refinement."""
    recs = [record(closed_form_config((M, M), N)) for M, N in ((17, 8), (33, 16))]
    p = observed_order([r["h"] for r in recs], [r["euler_poincare"]["momentum"] for r in recs])
    assert p[0] is not None and p[0] >= 1.4, p


# ------------------------------------------------------------------------------ the command

def _toml(tmp_path: Path, M, N) -> Path:
    two = isinstance(M, (tuple, list))
    f = tmp_path / "cf.toml"
    mesh = (f"x_min = [-3.0, -3.0]\nx_max = [3.0, 3.0]\nnodes = [{M[0]}, {M[1]}]\n" if two else
            f"x_min = -3.0\nx_max = 3.0\nnodes = {M}\n")
    cls = "mean = [-0.5, 0.3]\nvar = [0.25, 0.3]\n" if two else "mean = -0.5\nvar = 0.25\n"
    tgt = "[0.5, -0.2]" if two else "0.5"
    f.write_text(f"[mesh]\n{mesh}layers = {N}\ndepth = 1.0\n[model]\nnu = 0.1\neta = 0.0\n"
                 f"[[classes]]\nprior = 1.0\n{cls}[loss]\nkind = \"quadratic\"\nalpha = 1.0\ntarget = {tgt}\n")
    return f


def test_structure_command_two_ranks(tmp_path, cli):
    """``mfc-hpc structure`` on 2 ranks (d = 1) agrees with the serial reference and writes
    its table, JSON and picture."""
    out = tmp_path / "out"
    p = cli(2, ["structure", _toml(tmp_path, 33, 16), "--out", out, "--layers", "8,16", "--nodes", "17,33",
                "--depths", "1,2"])
    assert "Hamiltonian drift order in dt" in p.stdout
    res = json.loads((out / "structure.json").read_text())
    assert res["ranks"] == 2 and res["dim"] == 1
    assert (out / "structure.png").stat().st_size > 10_000
    mid = res["schemes"]["midpoint"]["dt_refinement"][-1]
    eul = res["schemes"]["euler"]["dt_refinement"][-1]
    assert mid["converged"] and eul["converged"]
    assert mid["symplectic"]["relative_variation"] < 1e-10
    assert eul["symplectic"]["relative_variation"] > 1e-3
    assert mid["mass_error"] < 1e-13 and eul["mass_error"] < 1e-13
    ref = record(closed_form_config(33, 16))
    assert mid["hamiltonian_drift"] == pytest.approx(ref["hamiltonian_drift"], rel=1e-6)
    assert mid["euler_poincare"]["momentum"] == pytest.approx(ref["euler_poincare"]["momentum"], rel=1e-6)
    o = res["schemes"]["midpoint"]["orders"]["hamiltonian_drift_in_dt"][0]
    assert 1.8 <= o <= 2.2
    assert not list(out.glob("runs/*/solution.h5"))  # the per-solve files are removed


def test_structure_command_2d_two_ranks(tmp_path, cli):
    """Issue 11, point 3 through the command, d = 2 on 2 ranks: mass exact per class and level
    (1e-12), drift ratio >= 3.5 per halving of dt on a fixed node mesh, the symplectic form
    constant to round-off; the drift agrees with the serial reference."""
    out = tmp_path / "out2"
    cli(2, ["structure", _toml(tmp_path, (13, 13), 16), "--out", out, "--layers", "4,8,16", "--nodes", "7,13",
            "--depths", "1", "--schemes", "midpoint", "--no-plot"])
    res = json.loads((out / "structure.json").read_text())
    assert res["dim"] == 2 and res["ranks"] == 2
    recs = res["schemes"]["midpoint"]["dt_refinement"]
    assert all(r["converged"] for r in recs)
    ratios = res["schemes"]["midpoint"]["orders"]["hamiltonian_drift_ratio_per_halving"]
    assert len(ratios) == 2 and min(ratios) >= 3.5, ratios
    for r in recs:
        assert r["mass_error"] < 1e-12
        assert r["symplectic"]["relative_variation"] < 1e-12
    ref = record(closed_form_config((13, 13), 16))
    assert recs[-1]["hamiltonian_drift"] == pytest.approx(ref["hamiltonian_drift"], rel=1e-6)
    assert recs[-1]["symplectic"]["omega"][0] == pytest.approx(ref["symplectic"]["omega"][0], rel=1e-8)


def test_structure_command_bad_input(tmp_path, cli):
    f = _toml(tmp_path, 33, 16)
    for args, word in ((["--schemes", "rk4"], "--schemes"), (["--nodes", "10"], "--nodes"),
                       (["--depths", "0.3"], "--depths")):
        p = cli(1, ["structure", f, "--out", tmp_path / "x"] + args, check=False)
        assert p.returncode == 2 and word in p.stderr and p.stderr.startswith("mfc-hpc: error:"), p.stderr
