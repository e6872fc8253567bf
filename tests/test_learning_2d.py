"""The learning layer end to end in 2-D (issue 12): train the half-moons on a small mesh on
2 ranks, then check the exported network against the solution file and the ONNX export,
its invertibility where METHOD.md 8's bound says so (and not where it fails), the
push-forward energy test, prediction from NPZ and ONNX, and the command-line failures.
The accuracy and time figures of the issue come from scripts/learning_benchmark.py."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mfc_hpc.config import load_config
from mfc_hpc.fileio.solution import read_solution
from mfc_hpc.learning.cpwl import grid_simplices
from mfc_hpc.learning.evaluate import export_network, sweep_accuracy
from mfc_hpc.learning.network import ResidualNetwork, state_from_solution
from mfc_hpc.learning.onnx_export import OnnxModel
from mfc_hpc.problem.build import build_problem
from mfc_hpc.problem.synthetic import make_table

from conftest import run_cli

MOONS_TOML = """
[mesh]
nodes = [17, 17]
layers = 8
depth = 1.0

[model]
nu = 0.05
eta = 0.1

[data]
file = "builtin:moons"
classes = ["0", "1"]
features = 2
projection = "none"
test_fraction = 0.5
gamma = 2.0

[checkpoint]
enabled = false
"""
SAMPLES, PERMS = 400, 99


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    d = tmp_path_factory.mktemp("moons")
    (d / "moons.toml").write_text(MOONS_TOML)
    p = run_cli(2, ["train", d / "moons.toml", "--out", d / "out", "--gd-steps", "100", "--samples", str(SAMPLES),
                    "--permutations", str(PERMS)], timeout=600)
    run_cli(1, ["data", "moons", "--out", d / "moons.csv"])
    return d, json.loads((d / "out" / "evaluation.json").read_text()), p


def test_train_2d_report(moons):
    d, rep, p = moons
    out = d / "out"
    mf = rep["mean_field"]
    assert rep["data"]["features"] == 2 and rep["data"]["train"] == 500 and rep["data"]["test"] == 500
    assert mf["test"]["accuracy"] > rep["head_only"]["test"]["accuracy"] + 0.01  # the network bends the data
    assert mf["J_h"] < mf["zero_network_J_h"]
    assert mf["invertible"] and mf["compression"] < 1.0
    # the fitted head is logistic regression on the same features: the same classifier
    lg = rep["logistic"]["same_features"]
    assert lg["test"]["accuracy"] == rep["head_only"]["test"]["accuracy"]
    assert rep["logistic"]["all_features"]["features"] == 2 and "thresholds" not in rep
    for k in ("gradient_descent", "gradient_descent_no_noise"):
        assert rep[k]["steps"] == 100 and rep[k]["cost_history"][-1] < rep[k]["cost_history"][0]
    assert "gradient descent (Adam, no noise)" in p.stdout
    names = {f.split("/")[-1] for f in rep["figures"]}
    assert names == {"untangle.png", "densities.png", "trajectories.png", "grid_deformation.png",
                     "decision_regions.png", "velocity.png"}
    assert all((out / f).stat().st_size > 20000 for f in names)


def test_noisy_pushforward_energy_test_2d(moons):
    """Samples of rho^0_c pushed through the noisy network against samples of rho^N_c: the
    energy test at 5 % (permutation threshold) does not reject (400 samples a side)."""
    d, rep, _ = moons
    rs = rep["pushforward"]["noisy_samples_vs_rhoN"]
    assert len(rs) == 2
    for r in rs:
        assert r["samples"] == SAMPLES and r["permutations"] == PERMS
        assert r["energy"] < r["threshold_5pct"] and r["p_value"] > 0.05, r
    # recomputed from the files with the same seed: the same statistics
    from mfc_hpc.learning.pushforward import pushforward_check
    net = ResidualNetwork.load(d / "out" / "model.npz")
    again = pushforward_check(net, read_solution(d / "out" / "solution.h5")["rho"], SAMPLES, 0, PERMS)
    assert [a["energy"] for a in again] == [r["energy"] for r in rs]


def test_exported_network_is_the_solution_drift(moons):
    d, rep, _ = moons
    out = d / "out"
    pb = build_problem(load_config(d / "moons.toml"))
    Z = state_from_solution(read_solution(out / "solution.h5"))
    net = ResidualNetwork.load(out / "model.npz")
    ref = export_network(pb, Z)
    assert net.grid == ref.grid and net.N == 8 and net.drift.shape == (8, 2, 17, 17)
    assert np.array_equal(net.drift, ref.drift)
    assert np.allclose(net.grid.axis(0), read_solution(out / "solution.h5")["x1"])
    # the test accuracy of the sweeps' helper is the report's
    assert sweep_accuracy(pb, Z) == rep["mean_field"]["test"]["accuracy"]


def test_onnx_equals_the_package_on_the_test_samples(moons):
    d, _, _ = moons
    out = d / "out"
    net = ResidualNetwork.load(out / "model.npz")
    m = OnnxModel(out / "model.onnx")
    pb = build_problem(load_config(d / "moons.toml"))
    X = pb.data.samples.X[pb.data.test_index]  # raw feature columns: the ONNX graph projects them
    r = m.run(X)
    x = pb.data.x_test
    assert np.abs(net.projection(X) - x).max() < 1e-12
    assert np.abs(r["state"] - net.forward(x)).max() < 1e-6
    assert np.abs(r["probabilities"] - net.head.probabilities(net.forward(x))).max() < 1e-6
    assert np.array_equal(r["label"], net.predict(x))
    assert m.input == "features" and m.feature_names == ("x1", "x2") and m.class_names == ("0", "1")


def test_exported_blocks_invertible_where_the_bound_says(moons):
    """Every exported block satisfies det(I + dt grad U_n) > 0 on every triangle: each point
    of its image has exactly one preimage in the box, and inverting recovers the input.
    The same drifts with the depth step scaled until the bound fails on some triangle:
    the images of the flipped triangles are covered twice or more (the block folds)."""
    d, _, _ = moons
    net = ResidualNetwork.load(d / "out" / "model.npz")
    g = net.grid
    rng = np.random.default_rng(0)
    S = grid_simplices(g.nodes)
    assert net.compression() < 1.0
    for n in range(net.N):
        p = rng.uniform(g.lower, g.upper, size=(1500, 2))
        x, count = net.inverse_block(n, p + net.dt * net.velocity(n, p))
        assert np.all(count == 1), (n, np.bincount(count))
        assert np.abs(x - p).max() < 1e-9
    n = int(np.argmax([np.max(-e) for e in net.det_excess()]))
    worst = float(np.max(-net.det_excess()[n]))
    folded = ResidualNetwork(g, net.drift, net.dt * 1.5 / worst, net.nu, net.head, net.class_names)
    ex = folded.det_excess()[n].reshape(-1)
    flipped = np.flatnonzero(ex < -1.0)
    assert flipped.size > 0
    cen = g.points().reshape(-1, 2)[S[flipped]].mean(axis=1)
    _, count = folded.inverse_block(n, cen + folded.dt * folded.velocity(n, cen))
    assert np.all(count >= 2)


@pytest.mark.parametrize("model", ["model.npz", "model.onnx"])
def test_predict_2d(moons, model, tmp_path):
    d, rep, _ = moons
    p = run_cli(2, ["predict", d / "out" / model, d / "moons.csv", "--json", tmp_path / "r.json"])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["samples"] == 1000 and np.array(r["confusion"]).sum() == 1000
    n_right = sum(rep["mean_field"][s]["accuracy"] * rep["mean_field"][s]["samples"] for s in ("train", "test"))
    assert abs(r["accuracy"] * 1000 - n_right) < 1e-9
    assert "accuracy" in p.stdout and p.stdout.count("confusion") == 1  # printed on rank 0 only


def test_data_command_writes_the_builtin_table(moons, tmp_path):
    d, _, _ = moons
    text = (d / "moons.csv").read_text().splitlines()
    ref = make_table("moons")
    assert text[0] == "x1,x2,label" and len(text) == 1001
    assert [float(v) for v in text[1].split(",")[:2]] == [ref["x1"][0], ref["x2"][0]]
    run_cli(1, ["data", "spirals", "--out", tmp_path / "s.csv", "--samples", "40", "--seed", "3"])
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 41


def _one_error(p) -> str:
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("mfc-hpc")]
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    return err[0]


@pytest.mark.parametrize("case, match", [
    ("header", "has a header but no samples"),
    ("jsondir", "--json: .* is a directory"),
    ("corrupt_npz", "is not a readable NPZ model file"),
    ("corrupt_onnx", "is not a readable ONNX model"),
    ("onnx_noise", "--noise needs an NPZ model"),
    ("onnx_feature", "this ONNX model takes the raw feature columns"),
    ("feature_count", "--feature names 1 column"),
    ("data_outdir", "data: --out: .* is a directory"),
])
def test_cli_2d_failures(moons, tmp_path, case, match):
    d, _, _ = moons
    out = d / "out"
    csv = d / "moons.csv"
    if case == "header":
        (tmp_path / "h.csv").write_text("x1,x2,label\n")
        args = ["predict", out / "model.npz", tmp_path / "h.csv"]
    elif case == "jsondir":
        args = ["predict", out / "model.onnx", csv, "--json", tmp_path]
    elif case == "corrupt_npz":
        (tmp_path / "m.npz").write_bytes((out / "model.npz").read_bytes()[:3000])
        args = ["predict", tmp_path / "m.npz", csv]
    elif case == "corrupt_onnx":
        (tmp_path / "m.onnx").write_bytes((out / "model.onnx").read_bytes()[:3000])
        args = ["predict", tmp_path / "m.onnx", csv]
    elif case == "onnx_noise":
        args = ["predict", out / "model.onnx", csv, "--noise"]
    elif case == "onnx_feature":
        args = ["predict", out / "model.onnx", csv, "--feature", "x1,x2"]
    elif case == "feature_count":
        args = ["predict", out / "model.npz", csv, "--feature", "x1"]
    else:
        args = ["data", "moons", "--out", tmp_path]
    err = _one_error(run_cli(2, args, check=False))
    assert re.search(match, err), err


def test_learning_benchmark_script(tmp_path):
    """scripts/learning_benchmark.py on the small half-moons: table, JSON, PNG, targets."""
    import subprocess

    from conftest import PYTHON, REPO, mpi_env

    (tmp_path / "m.toml").write_text(MOONS_TOML)
    cmd = [PYTHON, str(REPO / "scripts" / "learning_benchmark.py"), "--out", str(tmp_path / "b"), "--case",
           f"small={tmp_path / 'm.toml'}", "--gd-steps", "20", "--no-plots", "--ranks", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=mpi_env(), cwd=REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((tmp_path / "b" / "learning_benchmark.json").read_text())
    c = res["cases"]["small"]
    assert list(res["cases"]) == ["small"] and c["features"] == 2 and c["mesh"]["unknowns"] == 2 * 2 * 9 * 17 * 17
    ev = json.loads((tmp_path / "b" / "small" / "evaluation.json").read_text())
    assert c["methods"]["mean_field"]["test_accuracy"] == ev["mean_field"]["test"]["accuracy"]
    assert c["methods"]["gradient_descent"]["J_S"] == ev["gradient_descent"]["J_S"]
    assert "| mean-field (whole-mesh Newton)" in p.stdout and "J_S(mean-field) <= J_S(gradient_descent)" in p.stdout
    assert (tmp_path / "b" / "learning_benchmark.png").stat().st_size > 10000
