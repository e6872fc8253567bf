"""The solver with a two-dimensional state (METHOD.md section 8), verified against
independent answers: the closed form under refinement, the exact reduction to the 1-D
solver, mass and Hamiltonian, rank counts and process grids, the axis swap, local
optimality, and a two-class soft-max problem."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cases import ALPHA, MU0, NU, S0, T, TARGET, closed_form_config, solve_case, two_class_config
from conftest import run_cli
from mfc_hpc.config import ConfigError, config_from_dict
from mfc_hpc.numerics.closed_form import ClosedForm, closed_form_errors
from mfc_hpc.numerics.training import forward_walk, tilts_from_solution, training_cost

CF = ClosedForm(NU, ALPHA, T, (TARGET, -0.2), (MU0, 0.3), (S0, 0.3))


def toml(raw: dict) -> str:
    """A small TOML writer for the test configurations (tables of scalars and lists)."""
    out = []
    for sec, v in raw.items():
        if isinstance(v, list):
            for item in v:
                out.append(f"[[{sec}]]")
                out += [f"{k} = {json.dumps(x)}" for k, x in item.items()]
        else:
            out.append(f"[{sec}]")
            out += [f"{k} = {json.dumps(x)}" for k, x in v.items()]
    return "\n".join(out) + "\n"


def closed_form_raw(M, N, **solver):
    return {"mesh": {"x_min": -3.0, "x_max": 3.0, "nodes": [M, M], "layers": N, "depth": T},
            "model": {"nu": NU, "eta": 0.0}, "classes": [{"mean": [MU0, 0.3], "var": [S0, 0.3]}],
            "loss": {"kind": "quadratic", "alpha": ALPHA, "target": [TARGET, -0.2]}, "solver": solver}


def read(out):
    with h5py.File(out / "solution.h5", "r") as f:
        Z = np.concatenate([np.moveaxis(f["rho"][()], 1, -1), np.moveaxis(f["phi"][()], 1, -1)], axis=-1)
    return Z, json.loads((out / "summary.json").read_text())


def test_closed_form_second_order_in_both_axes_and_depth(tmp_path):
    """L1 density and rho-weighted velocity errors against section 8's closed form on three
    meshes refined together in both state axes and depth (finest 129^2 x 64, 2.2e6
    unknowns; nu dt / h^2 = 0.18, 0.36, 0.71, below 1, where the default multigrid needs
    3-4 linear iterations per Newton step), 2 ranks: order >= 1.8 on the finest refinement and
    >= 1.6 on every one."""
    errs = []
    for M, N in ((33, 16), (65, 32), (129, 64)):
        cfg = tmp_path / f"cf{M}.toml"
        cfg.write_text(toml(closed_form_raw(M, N)))
        out = tmp_path / f"o{M}"
        run_cli(2, ["solve", cfg, "--out", out, "--no-checkpoint"], timeout=900)
        Z, s = read(out)
        assert s["converged"] and s["mesh"]["dim"] == 2
        assert s["diagnostics"]["mass_error_max"] < 1e-12
        from mfc_hpc.problem.build import build_problem
        from mfc_hpc.config import load_config
        e = closed_form_errors(Z, build_problem(load_config(cfg)).d, CF)
        errs.append((e["density_L1"], e["velocity_L2_rho"]))
    e = np.array(errs)
    order = np.log2(e[:-1] / e[1:])  # [refinement, (density, velocity)]
    assert np.all(order >= 1.6), order
    assert np.all(order[-1] >= 1.8), order


def test_reduction_to_one_dimension():
    """One class, eta = 0, product data, the additive quadratic loss: each marginal of the 2-D
    density is the 1-D solver's answer on that axis, and phi is the sum of the two 1-D
    adjoints (1e-9); with a loss of x_1 alone, phi does not vary along x_2 and the
    x_1-marginal is the 1-D answer."""
    from mfc_hpc.numerics.grid import axis_weights
    from mfc_hpc.numerics.terminal import BoundaryData
    from mfc_hpc.parallel.snes import MeshSolver
    from mfc_hpc.problem.build import build_problem

    M1, M2, N = 33, 25, 8
    lo, hi = (-3.0, -2.5), (3.0, 2.0)
    two = config_from_dict({"mesh": {"x_min": list(lo), "x_max": list(hi), "nodes": [M1, M2], "layers": N},
                            "model": {"nu": NU}, "classes": [{"mean": [MU0, 0.3], "var": [S0, 0.3]}],
                            "loss": {"alpha": ALPHA, "target": [TARGET, -0.2]}})
    ms, s, Z = solve_case(two)
    g = ms.d.grid
    ms.destroy()
    one = []
    for k, (m, mu, var, tg) in enumerate(((M1, MU0, S0, TARGET), (M2, 0.3, 0.3, -0.2))):
        c = config_from_dict({"mesh": {"x_min": lo[k], "x_max": hi[k], "nodes": m, "layers": N},
                              "model": {"nu": NU}, "classes": [{"mean": mu, "var": var}],
                              "loss": {"alpha": ALPHA, "target": tg}})
        m1, s1, Z1 = solve_case(c)
        m1.destroy()
        one.append(Z1)
    rho, phi = Z[..., 0], Z[..., 1]
    a1, a2 = axis_weights(g.h[0], M1), axis_weights(g.h[1], M2)
    marg1 = (rho * a2).sum(axis=2)
    marg2 = (rho * a1[:, None]).sum(axis=1)
    for marg, Z1 in ((marg1, one[0]), (marg2, one[1])):
        assert np.abs(marg - Z1[..., 0]).max() <= 1e-9 * np.abs(Z1[..., 0]).max()
    phi_sum = one[0][:, :, None, 1] + one[1][:, None, :, 1]
    assert np.abs(phi - phi_sum).max() <= 1e-9 * np.abs(phi_sum).max()
    # a loss of x_1 alone: the same mesh and data, G = alpha/2 (x_1 - m_1)^2 only
    p = build_problem(two)
    G1 = np.broadcast_to(0.5 * ALPHA * (g.axis(0)[:, None] - TARGET) ** 2, (1, M1, M2)).copy()
    ms = MeshSolver(p.d, BoundaryData(p.bd.rho0, G1), verbose=False)
    ms.uncontrolled_guess()
    assert ms.solve().converged
    Zx = ms.mesh.gather(ms.X, root=None)
    ms.destroy()
    phix = Zx[..., 1]
    assert np.abs(phix - phix[:, :, :1]).max() <= 1e-9 * np.abs(phix).max()
    assert np.abs((Zx[..., 0] * a2).sum(axis=2) - one[0][..., 0]).max() <= 1e-9 * one[0][..., 0].max()


def test_mass_exact_and_hamiltonian_drift_second_order_in_dt():
    devs = []
    for N in (4, 8, 16, 32):  # on 17^2 nodes: 4.28, 4.08, 4.02
        ms, s, Z = solve_case(closed_form_config((17, 17), N))
        assert s["converged"]
        assert np.abs(np.array(s["diagnostics"]["mass"]) - 1.0).max() < 1e-12
        devs.append(s["diagnostics"]["hamiltonian_dev_first"])
        ms.destroy()
    devs = np.array(devs)
    ratio = devs[:-1] / devs[1:]
    assert np.all(ratio >= 3.5), (devs, ratio)


CASE = {"mesh": {"x_min": [-3.0, -2.5], "x_max": [3.0, 2.5], "nodes": [19, 14], "layers": 7},
        "model": {"nu": 0.15, "eta": 0.1, "running": "congestion", "kappa": 0.3},
        "classes": [{"prior": 0.4, "mean": [-0.5, 0.2], "var": [0.09, 0.16]},
                    {"prior": 0.6, "mean": [0.5, -0.1], "var": [[0.09, 0.02], [0.02, 0.12]]}],
        "loss": {"kind": "softmax", "weights": [[-1.0, 0.3], [1.0, -0.2]], "biases": [0.0, 0.2], "gamma": 2.0}}


@pytest.fixture(scope="module")
def by_ranks(tmp_path_factory):
    out = {}
    # 19 x 14 nodes and 8 levels do not divide evenly by 2 or 3
    for n, grid in [(1, [1, 1, 1]), (2, [2, 1, 1]), (2, [1, 2, 1]), (2, [1, 1, 2]), (3, [3, 1, 1]),
                    (3, [1, 3, 1]), (3, [1, 1, 3])]:
        d = tmp_path_factory.mktemp(f"r{n}_{''.join(map(str, grid))}")
        cfg = d / "c.toml"
        cfg.write_text(toml({**CASE, "solver": {"process_grid": grid}}))
        run_cli(n, ["solve", cfg, "--out", d / "out", "--no-checkpoint"])
        Z, s = read(d / "out")
        assert s["converged"] and s["ranks"] == n and s["process_grid"] == grid
        out[(n, tuple(grid))] = (Z, s)
    return out


def test_same_answer_on_1_2_3_ranks_splitting_every_axis(by_ranks):
    ref, s_ref = by_ranks[(1, (1, 1, 1))]
    assert ref.shape == (8, 19, 14, 4)
    for key, (Z, s) in by_ranks.items():
        rel = np.abs(Z - ref).max() / np.abs(ref).max()
        assert rel <= 1e-9, (key, rel)
        assert s["newton_iterations_fine"] == s_ref["newton_iterations_fine"]
        assert s["diagnostics"]["cost"]["total"] == pytest.approx(s_ref["diagnostics"]["cost"]["total"], rel=1e-9)


def test_swapping_the_axes_transposes_the_solution():
    def swap(v):
        return v[::-1] if isinstance(v, list) and v and not isinstance(v[0], list) else v

    raw = json.loads(json.dumps(CASE))
    sw = json.loads(json.dumps(CASE))
    for k in ("x_min", "x_max", "nodes"):
        sw["mesh"][k] = raw["mesh"][k][::-1]
    for c in sw["classes"]:
        c["mean"] = c["mean"][::-1]
        v = c["var"]
        c["var"] = [[v[1][1], v[1][0]], [v[0][1], v[0][0]]] if isinstance(v[0], list) else v[::-1]
    sw["loss"]["weights"] = [w[::-1] for w in raw["loss"]["weights"]]
    ms, s, Z = solve_case(config_from_dict(raw))
    ms.destroy()
    ms, s2, ZT = solve_case(config_from_dict(sw))
    ms.destroy()
    assert np.abs(np.swapaxes(ZT, 1, 2) - Z).max() <= 1e-10 * np.abs(Z).max()
    del swap


def test_converged_solution_is_local_optimum_of_discrete_training_problem():
    ms, s, Z = solve_case(config_from_dict(CASE))
    assert s["converged"]
    d, bd = ms.d, ms.bd
    ms.destroy()
    th = tilts_from_solution(Z, d)
    rho = forward_walk(bd.rho0, th, d)
    assert np.abs(rho - np.moveaxis(Z[..., :2], -1, 1)).max() < 1e-10
    J0 = training_cost(rho, th, d, bd)["total"]
    assert J0 == pytest.approx(s["diagnostics"]["cost"]["total"], rel=1e-10)
    dth = np.random.default_rng(7).normal(size=th.shape)
    eps = np.array([1e-1, 3e-2, 1e-2])
    rise = np.array([training_cost(forward_walk(bd.rho0, th + e * dth, d), th + e * dth, d, bd)["total"] - J0
                     for e in eps])
    assert np.all(rise > 0)
    slopes = np.log(rise[:-1] / rise[1:]) / np.log(eps[:-1] / eps[1:])
    assert np.all(np.abs(slopes - 2.0) < 0.15), slopes


def test_two_class_softmax_converges_with_the_default_solver(tmp_path):
    cfg = tmp_path / "c.toml"
    raw = json.loads(json.dumps(CASE))
    raw["mesh"] = {"x_min": [-3.0, -3.0], "x_max": [3.0, 3.0], "nodes": [21, 21], "layers": 10}
    raw["model"] = {"nu": 0.05, "eta": 0.1}
    raw["loss"]["gamma"] = 3.0
    cfg.write_text(toml(raw))
    run_cli(2, ["solve", cfg, "--out", tmp_path / "o", "--no-checkpoint"], timeout=900)
    Z, s = read(tmp_path / "o")
    assert s["converged"], s["failure"]
    d = s["diagnostics"]
    assert d["cost"]["total"] < 0.8 * s["zero_network_cost"]["total"]
    assert d["mass_error_max"] < 1e-12
    assert np.isfinite(d["dt_max_compression"]) and d["dt_max_outflow_rate"] > 0


@pytest.mark.parametrize("mesh, classes, loss, needle", [
    ({"nodes": [33, 33, 33]}, None, None, "mesh: the state dimension must be 1 or 2"),
    ({"nodes": [33, 33], "x_min": [-1.0, -1.0, 0.0]}, None, None, "mesh: x_min, x_max and nodes give different"),
    ({"nodes": [33, 33]}, [{"mean": [0.0], "var": 1.0}], None, "classes[0].mean: needs 2 entries"),
    ({"nodes": [33, 33]}, [{"mean": 0.0, "var": 1.0}], None, "classes[0].mean: needs a list of 2 numbers"),
    ({"nodes": [33, 33]}, [{"mean": [0.0, 0.0], "var": [1.0, 2.0, 3.0]}], None, "classes[0].var: needs 2 entries"),
    ({"nodes": [33, 33]}, [{"mean": [0.0, 0.0], "var": [[1.0, 2.0], [2.0, 1.0]]}], None,
     "classes[0].var: the covariance matrix must be positive definite"),
    ({"nodes": [33, 33]}, [{"mean": [0.0, 0.0], "var": [[1.0, 0.1], [0.2, 1.0]]}], None,
     "classes[0].var: the covariance matrix must be symmetric"),
    ({"nodes": [33, 33]}, None, {"kind": "quadratic", "target": 0.5}, "loss.target: needs a list of 2 numbers"),
    ({"nodes": [33, 33]}, [{"mean": [0.0, 0.0], "var": 1.0}, {"mean": [1.0, 0.0], "var": 1.0}],
     {"kind": "softmax", "weights": [1.0, -1.0]}, "loss.weights[0]: needs a list of 2 numbers"),
    ({"nodes": [33, 33]}, None, None, "solver.process_grid: must be [p1, p2, p_depth]"),
])
def test_wrong_lengths_and_shapes_name_the_key(mesh, classes, loss, needle):
    raw = {"mesh": {"layers": 4, **mesh}, "model": {"nu": 0.1, "eta": 0.1},
           "classes": classes or [{"mean": [0.0, 0.0], "var": 1.0}], "loss": loss or {"kind": "quadratic",
                                                                                  "target": [0.0, 0.0]}}
    if needle.startswith("solver"):
        raw["solver"] = {"process_grid": [1, 1]}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_finite_difference_colouring_reaches_the_same_solution(tmp_path):
    """``-mfc_snes_fd_color`` (the DMDA's colouring of the 3-D box stencil, finite
    differences instead of the analytic Jacobian) converges to the same 2-D solution."""
    cfg = tmp_path / "c.toml"
    raw = json.loads(json.dumps(CASE))
    raw["mesh"].update(nodes=[11, 9], layers=4)
    cfg.write_text(toml(raw))
    sols = {}
    for name, extra in (("analytic", []), ("fd", ["-mfc_snes_fd_color"])):
        p = run_cli(2, ["solve", cfg, "--out", tmp_path / name, "--no-checkpoint"] + extra)
        if extra:
            assert "There are no unused options" in p.stdout + p.stderr
        sols[name], s = read(tmp_path / name)
        assert s["converged"]
    assert np.abs(sols["analytic"] - sols["fd"]).max() <= 1e-7 * np.abs(sols["analytic"]).max()
