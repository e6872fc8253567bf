"""The d-dimensional core changes nothing in 1-D: on the shipped examples the answers equal
the last 1-D release's (tests/data/release_1d, made by commit 3ccb3ed): ``rho``, ``phi``
within 1e-12 relative, the same Newton iterations in every converged stage, the same
diagnostics, cost and zero-network cost. With the release's matrix layout
(``-mfc_jacobian_preallocation box``: the DMDA's full box instead of the entries the scheme
sets) the Newton iterations of every *converged* stage are the same too, and those of the
failing stages of a continuation within :data:`FAILED_STAGE_SLACK` (they are chaotic: on
the hosts that made the reference and ran CI until 2026-12-01 they were equal; on an AMD EPYC
host, whose OpenBLAS kernels round differently, one failing stage of each example took one
iteration more)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import REPO, run_cli

DATA = REPO / "tests" / "data" / "release_1d"
#: how many Newton iterations a *failing* continuation stage may differ from the release's
#: on another host (the converged stages must match exactly)
FAILED_STAGE_SLACK = 2
EXAMPLES = ["closed_form", "two_class", "stability_sweep", "transport_kl", "bridge", "iris"]
#: examples whose solve ends in the optimisation route (continuation stalls at a fold).
#: The route's minimiser changed after the release (serial L-BFGS-B from the zero network,
#: symmetry broken by round-off -> PETSc TAO on the distributed tilts from a fixed
#: perturbation of it, mfc_hpc/docs/optimisation.md), and this symmetric non-convex
#: problem has several asymmetric KKT points: the release reached J_h 1.1598351, the
#: route now 1.1598559 (the one every start of TAO and, with the current kernels, of
#: L-BFGS-B reaches). Every stage before the route is still the release's.
ROUTE_CHANGED = {"two_class": 1e-4}


def route_changed(name: str, s: dict, sol: dict, ref, every_stage: bool) -> bool:
    """For :data:`ROUTE_CHANGED`: the stages match the release (the converged ones, or
    ``every_stage``), the last one is the optimisation route and converged, and the cost
    is within the given relative distance of the release's; ``False`` for the others."""
    if name not in ROUTE_CHANGED:
        return False
    its, conv = stages(s)
    assert conv == ref["converged"].tolist()
    if every_stage:
        assert same_stages(its, conv, ref)
    else:
        assert [i for i, c in zip(its, conv) if c] == [i for i, c in zip(ref["iterations"], ref["converged"]) if c]
    last = s["newton"][-1]["stages"][-1]
    assert last["param"] == "optimisation" and last["converged"]
    assert s["diagnostics"]["cost"]["total"] == pytest.approx(float(ref["cost"][3]), rel=ROUTE_CHANGED[name])
    assert s["diagnostics"]["min_density"] > 0.0
    zero = [s["zero_network_cost"][k] for k in ("kinetic", "running", "terminal", "total")]
    assert np.allclose(zero, ref["zero"], rtol=1e-12, atol=1e-14)
    return True


def run(tmp_path, name: str, extra: list[str] = ()) -> tuple[dict, dict]:
    out = tmp_path / name
    run_cli(1, ["solve", REPO / "mfc_hpc" / "examples" / f"{name}.toml", "--out", out, "--no-checkpoint", *extra],
            timeout=600)
    s = json.loads((out / "summary.json").read_text())
    with h5py.File(out / "solution.h5", "r") as f:
        return s, {"rho": f["rho"][()], "phi": f["phi"][()]}


def same_stages(its: list[int], conv: list[bool], ref) -> bool:
    """Every converged stage takes the release's Newton iterations, every failing one within
    :data:`FAILED_STAGE_SLACK`, and the stages converge or fail as in the release."""
    r_its, r_conv = ref["iterations"].tolist(), ref["converged"].tolist()
    assert conv == r_conv and len(its) == len(r_its)
    return all(i == r if c else abs(i - r) <= FAILED_STAGE_SLACK for i, r, c in zip(its, r_its, conv))


def stages(s: dict) -> tuple[list[int], list[bool]]:
    st = [x for lev in s["newton"] for x in lev["stages"]]
    return [x["iterations"] for x in st], [bool(x["converged"]) for x in st]


@pytest.mark.parametrize("name", EXAMPLES)
def test_shipped_example_unchanged(tmp_path, name):
    ref = np.load(DATA / f"{name}.npz")
    s, sol = run(tmp_path, name)
    assert s["converged"]
    if route_changed(name, s, sol, ref, every_stage=False):
        return
    for k in ("rho", "phi"):
        assert sol[k].shape == ref[k].shape
        rel = np.abs(sol[k] - ref[k]).max() / np.abs(ref[k]).max()
        assert rel <= 1e-12, (k, rel)
    its, conv = stages(s)
    assert conv == ref["converged"].tolist()
    assert [i for i, c in zip(its, conv) if c] == [i for i, c in zip(ref["iterations"], ref["converged"]) if c]
    d = s["diagnostics"]
    cost = [d["cost"][k] for k in ("kinetic", "running", "terminal", "total")]
    zero = [s["zero_network_cost"][k] for k in ("kinetic", "running", "terminal", "total")]
    assert np.allclose(cost, ref["cost"], rtol=1e-12, atol=1e-14)
    assert np.allclose(zero, ref["zero"], rtol=1e-12, atol=1e-14)
    diag = [d["mass_error_max"], d["hamiltonian_dev_mean"], d["hamiltonian_dev_first"], d["min_density"],
            d["dt_max_outflow_rate"], d["dt_max_compression"]]
    assert abs(diag[0] - ref["diag"][0]) < 1e-15  # mass error: round-off both
    assert np.allclose(diag[1:], ref["diag"][1:], rtol=1e-9, atol=1e-15)
    assert np.allclose(d["hamiltonian"], ref["hamiltonian"], rtol=1e-10, atol=1e-13)
    assert np.allclose(d["mass"], ref["mass"], rtol=1e-14)


@pytest.mark.parametrize("name", ["transport_kl", "two_class"])
def test_release_matrix_layout_reproduces_every_stage(tmp_path, name):
    ref = np.load(DATA / f"{name}.npz")
    s, sol = run(tmp_path, name, ["-mfc_jacobian_preallocation", "box"])
    if route_changed(name, s, sol, ref, every_stage=True):
        return
    its, conv = stages(s)
    assert same_stages(its, conv, ref), (its, ref["iterations"].tolist())
    assert np.abs(sol["rho"] - ref["rho"]).max() <= 1e-12 * np.abs(ref["rho"]).max()
