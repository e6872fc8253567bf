"""The preserved structure (issue 6): Hamiltonian drift orders, the symplectic form of
linearised solutions, exact mass, the Euler-Poincare residual; serial reference and the
parallel command on 2 ranks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mfc_hpc.config import load_config
from mfc_hpc.problem import boundary_data, discretisation
from mfc_hpc.structure import (linearised_serial, observed_order, solve_serial, structure_record)

EX = Path(__file__).resolve().parents[1] / "mfc_hpc" / "examples"


def _cf(**mesh):
    return load_config(EX / "closed_form.toml").replace(mesh=mesh)


def _two_class(**mesh):
    # the two-class example at milder noise and loss weight: Newton converges directly
    return load_config(EX / "two_class.toml").replace(mesh=mesh, model={"nu": 0.05},
                                                       loss={"gamma": 1.0})


def _record(cfg, scheme: str) -> dict:
    cfg = cfg.replace(model={"scheme": scheme})
    d, bd = discretisation(cfg), boundary_data(cfg)
    r = solve_serial(d, bd)
    assert r.converged, f"{scheme}: Newton did not converge (|F|/|F0| = {r.residual:.2e})"
    a, b = linearised_serial(r.Z, d, bd)
    return structure_record(r.Z, a, b, d, bd)


@pytest.fixture(scope="module")
def dt_series() -> dict:
    """Closed form on 33 nodes, N = 16, 32, 64, both schemes."""
    return {s: [_record(_cf(nodes=33, layers=N), s) for N in (16, 32, 64)] for s in ("midpoint", "euler")}


def test_hamiltonian_drift_orders(dt_series):
    """Midpoint: max_n |H^n - H^0| = O(dt^2); implicit Euler: O(dt) (fixed node mesh)."""
    for scheme, (lo, hi) in (("midpoint", (1.8, 2.2)), ("euler", (0.75, 1.25))):
        recs = dt_series[scheme]
        p = observed_order([r["dt"] for r in recs], [r["hamiltonian_drift"] for r in recs])
        assert all(lo <= x <= hi for x in p), f"{scheme}: drift orders {p}"
    # and Euler's drift is far larger at the same dt
    assert dt_series["euler"][-1]["hamiltonian_drift"] > 20 * dt_series["midpoint"][-1]["hamiltonian_drift"]


def test_symplectic_form_one_class(dt_series):
    """omega^n constant to 1e-10 of sum w(|a_rho b_phi| + |a_phi b_rho|) for the midpoint
    scheme with the exact Jacobian; implicit Euler changes it at the percent level."""
    for r in dt_series["midpoint"]:
        assert r["symplectic"]["relative_variation"] < 1e-10, r["symplectic"]["relative_variation"]
    for r in dt_series["euler"]:
        assert r["symplectic"]["relative_variation"] > 1e-3, r["symplectic"]["relative_variation"]
    # the form is not trivially zero
    om = np.array(dt_series["midpoint"][0]["symplectic"]["omega"])
    assert abs(om[0]) > 1e-3 * dt_series["midpoint"][0]["symplectic"]["reference"]


def test_mass_exact(dt_series):
    for s in ("midpoint", "euler"):
        for r in dt_series[s]:
            assert r["mass_error"] < 1e-13, (s, r["mass_error"])


def test_two_classes_symplectic_and_mass():
    cfg = _two_class(nodes=33, layers=16)
    mid, eul = _record(cfg, "midpoint"), _record(cfg, "euler")
    assert mid["symplectic"]["relative_variation"] < 1e-10
    assert eul["symplectic"]["relative_variation"] > 1e-5
    assert mid["mass_error"] < 1e-13 and eul["mass_error"] < 1e-13
    assert mid["euler_poincare"] is None  # the hydrodynamic pair is for one class


def test_euler_poincare_second_order():
    """The hydrodynamic pair's residual on the discrete solution shrinks like h^2."""
    recs = [_record(_cf(nodes=M, layers=N), "midpoint") for M, N in ((33, 8), (65, 16), (129, 32))]
    h = [r["h"] for r in recs]
    for key in ("momentum", "continuity"):
        p = observed_order(h, [r["euler_poincare"][key] for r in recs])
        assert all(1.6 <= x <= 2.4 for x in p), (key, p)


def test_structure_command_two_ranks(tmp_path, cli):
    """``mfc-hpc structure`` on 2 ranks (MUMPS linear solves of the PETSc solver) agrees
    with the serial reference and writes its table, JSON and picture."""
    cfg = tmp_path / "cf.toml"
    cfg.write_text((EX / "closed_form.toml").read_text().replace("nodes = 129", "nodes = 33")
                   .replace("layers = 32", "layers = 16"))
    out = tmp_path / "out"
    p = cli(2, ["structure", cfg, "--out", out, "--layers", "8,16", "--nodes", "17,33", "--depths", "1,2"])
    assert "Hamiltonian drift order in dt" in p.stdout
    res = json.loads((out / "structure.json").read_text())
    assert res["ranks"] == 2
    assert (out / "structure.png").stat().st_size > 10_000
    mid = res["schemes"]["midpoint"]["dt_refinement"][-1]
    eul = res["schemes"]["euler"]["dt_refinement"][-1]
    assert mid["converged"] and eul["converged"]
    assert mid["symplectic"]["relative_variation"] < 1e-10
    assert eul["symplectic"]["relative_variation"] > 1e-3
    assert mid["mass_error"] < 1e-13 and eul["mass_error"] < 1e-13
    ref = _record(_cf(nodes=33, layers=16), "midpoint")
    assert mid["hamiltonian_drift"] == pytest.approx(ref["hamiltonian_drift"], rel=1e-6)
    o = res["schemes"]["midpoint"]["orders"]["hamiltonian_drift_in_dt"][0]
    assert 1.8 <= o <= 2.2
