"""The exported network (d = 1, 2): the CPWL interpolant on the Kuhn triangulation and its
ReLU forms, files (NPZ v2, the releases' v1, ONNX), forward pass, invertibility where
METHOD.md 8's bound says so, the baselines (gradients against finite differences), the
push-forward tests, and the end-to-end classification of the shipped iris data (1-D)."""
from __future__ import annotations

import itertools
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mfc_hpc.learning.baseline import (LineReluNetwork, fit_thresholds, grid_cost_and_grad, line_cost_and_grad,
                                       threshold_predict, train_gd)
from mfc_hpc.learning.cpwl import (clip_to_box, grid_simplices, hat_relu, interpolate, interpolate_with_gradient,
                                   locate, sample_simplicial_density)
from mfc_hpc.learning.network import ModelError, ResidualNetwork, relu_parameters
from mfc_hpc.learning.onnx_export import OnnxModel, save_onnx
from mfc_hpc.learning.pushforward import density_cdf, energy_test, ks_statistic, sample_density
from mfc_hpc.numerics.grid import StateGrid
from mfc_hpc.problem.losses import SoftmaxHead, target_head

from conftest import REPO, run_cli

HEAD = target_head([-2.0, 0.0, 2.0], 1.0, 2.0)
HEAD2 = SoftmaxHead(np.array([[-1.0, 0.4], [0.8, 0.3], [0.2, -1.1]]), np.array([0.0, 0.1, -0.2]), 1.5)
GRID2 = StateGrid((-2.0, -1.5), (2.0, 1.5), (9, 7))


def _net(N=4, M=9, seed=0) -> ResidualNetwork:
    rng = np.random.default_rng(seed)
    return ResidualNetwork(StateGrid.line(-3.0, 3.0, M), rng.normal(size=(N, 1, M)), 0.25, 0.05, HEAD,
                           ("a", "b", "c"))


def _net2(N=4, seed=0, scale=1.0, grid=GRID2) -> ResidualNetwork:
    rng = np.random.default_rng(seed)
    return ResidualNetwork(grid, scale * rng.normal(size=(N, 2) + grid.nodes), 0.1, 0.05, HEAD2, ("a", "b", "c"))


# ---------------------------------------------------------------------------- the interpolant

def test_relu_form_is_the_piecewise_linear_drift():
    net = _net()
    x = np.linspace(-5, 5, 2001)  # also outside the nodes: constant extension
    for n in range(net.N):
        assert np.allclose(net.velocity(n, x), np.interp(x, net.nodes, net.drift[n, 0]), atol=1e-12)
    W1, B1, W2, B2 = relu_parameters(net.nodes, net.drift[:, 0])
    assert np.all(W1 == 1.0) and np.allclose(B1, -net.nodes) and np.allclose(B2, net.drift[:, 0, 0])
    assert np.allclose(W2.sum(axis=1), 0.0)  # slope returns to 0 beyond the last node
    # the 1-D hat form gives the same function
    xc = np.clip(x, -3, 3)[:, None]
    H = hat_relu(xc, net.nodes[:, None], net.grid.h)
    assert np.allclose(H @ net.drift[2, 0], net.velocity(2, x), atol=1e-12)


def test_kuhn_interpolant_is_exact_on_affine_fields_and_continuous():
    g = GRID2
    rng = np.random.default_rng(1)
    P = g.points()
    A, c = rng.normal(size=(2, 2)), rng.normal(size=2)
    V = np.moveaxis(P @ A.T + c, -1, 0)  # an affine field [2, *nodes]
    x = rng.uniform([-2, -1.5], [2, 1.5], size=(3000, 2))
    s = locate(x, g.lower, g.h, g.nodes)
    val, grad = interpolate_with_gradient(V, s, g.h)
    assert np.allclose(val.T, x @ A.T + c, atol=1e-12)  # affine functions are reproduced exactly
    assert np.allclose(grad, np.broadcast_to(A[:, None, :], grad.shape), atol=1e-12)
    # at the nodes: the nodal values; outside the box: the value at the clipped point
    B = rng.normal(size=(2,) + g.nodes)
    s = locate(P.reshape(-1, 2), g.lower, g.h, g.nodes)
    assert np.allclose(interpolate(B, s), B.reshape(2, -1), atol=1e-12)
    far = np.array([[5.0, 0.3], [-7.0, -9.0], [0.1, 2.5]])
    near = clip_to_box(far, np.array(g.lower), np.array(g.upper))
    assert np.allclose(interpolate(B, locate(far, g.lower, g.h, g.nodes)),
                       interpolate(B, locate(near, g.lower, g.h, g.nodes)))
    # continuity across the diagonals and the cell edges: both sides agree
    eps = 1e-9
    t = rng.uniform(0.05, 0.95, size=200)
    cell = rng.integers(0, 6, size=(200, 2))
    on_diag = np.array(g.lower) + (cell + t[:, None]) * np.array(g.h)
    off = np.array([eps, -eps])
    a = interpolate(B, locate(on_diag + off, g.lower, g.h, g.nodes))
    b = interpolate(B, locate(on_diag - off, g.lower, g.h, g.nodes))
    assert np.abs(a - b).max() < 1e-7
    # the ReLU (hat) form is the same function
    xx = rng.uniform(-3, 3, size=(1000, 2))
    s = locate(xx, g.lower, g.h, g.nodes)
    H = hat_relu(clip_to_box(xx, np.array(g.lower), np.array(g.upper)), P.reshape(-1, 2), g.h)
    assert np.allclose(H.sum(axis=1), 1.0) and np.all(H >= 0)
    assert np.allclose(H @ B.reshape(2, -1).T, interpolate(B, s).T, atol=1e-12)


def test_triangles_are_those_of_the_invertibility_bound():
    """det(I + dt grad U) - 1 of the interpolant, measured by finite differences of the block
    at each triangle's centroid, is cell_det_excess of the drift triangle by triangle."""
    net = _net2(N=2, scale=2.0)
    g = net.grid
    S = grid_simplices(g.nodes)
    cent = g.points().reshape(-1, 2)[S].mean(axis=1)  # [T, 2]
    ex = net.det_excess()  # [n, M1-1, M2-1, 2]
    e = 1e-6
    for n in range(net.N):
        F = lambda x: x + net.dt * net.velocity(n, x)  # noqa: E731
        J = np.stack([(F(cent + e * np.eye(2)[k]) - F(cent - e * np.eye(2)[k])) / (2 * e) for k in range(2)], axis=-1)
        fd = np.linalg.det(J) - 1.0
        assert np.allclose(fd, ex[n].reshape(-1), atol=1e-7)


# ---------------------------------------------------------------------------- forward pass

def test_forward_is_the_residual_blocks():
    net = _net()
    x = np.linspace(-2, 2, 7)
    y = x.copy()
    for n in range(net.N):
        y = y + net.dt * np.interp(y, net.nodes, net.drift[n, 0])
    assert np.allclose(net.forward(x), y)
    P = net.forward(x, path=True)
    assert P.shape == (net.N + 1, 7) and np.allclose(P[-1], y)
    z = net.forward(np.full(20000, 2.9), noise=True, rng=3)
    assert z.min() >= -3.0 and z.max() <= 3.0  # reflecting walls
    assert np.array_equal(z, net.forward(np.full(20000, 2.9), noise=True, rng=3))
    # 2-D: the blocks, the noise with reflection at each wall
    net2 = _net2()
    g = net2.grid
    x2 = np.random.default_rng(4).uniform(-1.9, 1.9, size=(50, 2)) * [1, 0.7]
    y2 = x2.copy()
    for n in range(net2.N):
        y2 = y2 + net2.dt * interpolate(net2.drift[n], locate(y2, g.lower, g.h, g.nodes)).T
    assert np.allclose(net2.forward(x2), y2)
    assert net2.forward(x2, path=True).shape == (net2.N + 1, 50, 2)
    z2 = net2.forward(np.tile([1.95, -1.45], (20000, 1)), noise=True, rng=5)
    assert np.all(z2 >= np.array(g.lower)) and np.all(z2 <= np.array(g.upper))
    # reflection: the fraction that a near-wall start keeps inside the box is not piled at the wall
    assert (np.abs(z2[:, 0] - 2.0) < 1e-9).mean() < 1e-3


# ---------------------------------------------------------------------------- invertibility

def _cover_checks(net: ResidualNetwork, n: int, rng) -> tuple[int, int]:
    """(max cover count at the images of random box points, min cover count at the images of
    the centroids of flipped triangles)."""
    g = net.grid
    p = rng.uniform(g.lower, g.upper, size=(3000, 2))
    y = p + net.dt * net.velocity(n, p)
    x, count = net.inverse_block(n, y)
    ex = net.det_excess()[n].reshape(-1)
    S = grid_simplices(g.nodes)
    flipped = np.flatnonzero(ex < -1.0)
    if flipped.size == 0:
        assert np.all(count == 1), np.bincount(count)
        assert np.abs(x - p).max() < 1e-9  # the inverse recovers the input
        return int(count.max()), -1
    cen = g.points().reshape(-1, 2)[S[flipped]].mean(axis=1)
    _, c2 = net.inverse_block(n, cen + net.dt * net.velocity(n, cen))
    return int(count.max()), int(c2.min())


def test_blocks_invertible_exactly_where_the_bound_holds():
    """METHOD.md 8: a CPWL block is invertible on the box iff det(I + dt grad U) > 0 on every
    triangle. Smooth random fields: at the exported step the bound holds and every image
    point has exactly one preimage (which the inverse recovers); with the step scaled until
    some triangle flips, the images of the flipped triangles are covered at least twice."""
    rng = np.random.default_rng(7)
    g = StateGrid((-2.0, -2.0), (2.0, 2.0), (13, 13))
    P = g.points()
    # a smooth field: a swirl and a shear
    U = np.stack([np.sin(1.3 * P[..., 1]) + 0.5 * P[..., 0] * np.cos(P[..., 1]),
                  -np.sin(1.1 * P[..., 0]) * np.cos(0.7 * P[..., 1])], axis=0)[None]
    base = ResidualNetwork(g, U, 0.2, 0.0, HEAD2, ("a", "b", "c"))
    assert base.compression() < 1.0
    assert _cover_checks(base, 0, rng) == (1, -1)
    big = ResidualNetwork(g, U, 4.0, 0.0, HEAD2, ("a", "b", "c"))  # the same field, 20 times the step
    assert big.compression() > 1.0
    cmax, cflip = _cover_checks(big, 0, rng)
    assert cflip >= 2 and cmax >= 2


# ---------------------------------------------------------------------------- files

@pytest.mark.parametrize("dim", [1, 2])
def test_model_file_round_trip(tmp_path, dim):
    net = _net() if dim == 1 else _net2()
    p = net.save(tmp_path / "m.npz")
    back = ResidualNetwork.load(p)
    x = np.linspace(-3, 3, 50) if dim == 1 else np.random.default_rng(0).uniform(-3, 3, (50, 2))
    assert np.array_equal(back.forward(x), net.forward(x)) and back.class_names == net.class_names
    with np.load(p) as f:
        assert str(f["format"]) == "mfc_hpc.network" and int(f["format_version"]) == 2 and int(f["dim"]) == dim
        assert f["drift"].shape == (4, dim) + net.grid.nodes
        if dim == 1:
            assert f["output_weight"].shape == (4, 9)
    assert not any(q.name.startswith(".") for q in tmp_path.iterdir())  # the temporary is gone


def test_release_model_file_is_read():
    """A version-1 model file written by the 1-D release gives the release's numbers."""
    d = REPO / "tests" / "data" / "network_v1"
    net = ResidualNetwork.load(d / "model.npz")
    ref = np.load(d / "expected.npz")
    assert net.ndim == 1 and net.N == 4 and net.M == 9 and net.class_names == ("setosa", "versicolor", "virginica")
    assert net.projection.kind == "pca"
    assert np.allclose(net.projection(ref["X"])[:, 0], ref["x"], rtol=0, atol=1e-14)
    assert np.allclose(net.forward(ref["x"]), ref["xN"], rtol=0, atol=1e-14)
    assert np.allclose(net.forward(ref["x"], noise=True, rng=3), ref["xN_noisy"], rtol=0, atol=1e-14)
    assert np.array_equal(net.predict(ref["x"]), ref["pred"])
    assert np.allclose(net.head.probabilities(net.forward(ref["x"])), ref["prob"], atol=1e-14)


def _edited(tmp_path, net=None, **changes):
    p = (net or _net()).save(tmp_path / "m.npz")
    with np.load(p) as f:
        a = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v
    q = tmp_path / "edited.npz"
    np.savez(q, **a)
    return q


@pytest.mark.parametrize("dim, changes, match", [
    (1, {"format": np.array("something")}, "not an mfc_hpc.network file"),
    (1, {"format_version": np.array(7)}, "format_version 7"),
    (1, {"drift": None}, "lacks drift"),
    (1, {"drift": np.zeros((4, 1, 5))}, "does not match the grid"),
    (1, {"output_weight": np.zeros((4, 9))}, "output_weight disagrees with the drift"),
    (1, {"class_names": np.array(["a", "b"])}, "2 class names for a head of 3"),
    (1, {"grid_upper": np.array([-5.0])}, "grid_lower < grid_upper"),
    (2, {"drift": np.zeros((4, 2, 9, 6))}, "does not match the grid"),
    (2, {"dim": np.array(3)}, "d = 1 or 2"),
    (2, {"head_weights": np.zeros((3, 1))}, "head_weights \\(3, 1\\) for a 2-D state"),
    (2, {"drift": np.full((4, 2, 9, 7), np.nan)}, "non-finite"),
    (2, {"interpolant": np.array("bilinear")}, "unknown interpolant 'bilinear'"),
    (2, {"dt": np.array(-1.0)}, "dt must be > 0"),
])
def test_malformed_model_fails_clearly(tmp_path, dim, changes, match):
    with pytest.raises(ModelError, match=match) as e:
        ResidualNetwork.load(_edited(tmp_path, _net() if dim == 1 else _net2(), **changes))
    assert "\n" not in str(e.value)


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello")
    with pytest.raises(ModelError, match="not a readable NPZ model file"):
        ResidualNetwork.load(p)
    with pytest.raises(ModelError, match="no such file"):
        ResidualNetwork.load(tmp_path / "missing.npz")
    # a damaged file: truncated, and one with a flipped byte inside an array
    good = _net2().save(tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match="not a readable NPZ model file") as e:
        ResidualNetwork.load(tmp_path / "trunc.npz")
    assert "\n" not in str(e.value)
    with zipfile.ZipFile(tmp_path / "good.npz") as z:
        info = z.getinfo("drift.npy")
    bad = bytearray(good)
    bad[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(bad))
    with pytest.raises(ModelError, match="not a readable NPZ model file"):
        ResidualNetwork.load(tmp_path / "flip.npz")


@pytest.mark.parametrize("dim", [1, 2])
def test_onnx_forward_equals_the_package(tmp_path, dim):
    """The ONNX export (standard operators, run by onnxruntime) gives the package's states,
    probabilities and labels, inside and outside the box."""
    net = _net() if dim == 1 else _net2(scale=1.5)
    path = save_onnx(net, tmp_path / "m.onnx")
    m = OnnxModel(path)
    assert m.dim == dim and m.class_names == net.class_names and m.input == "x"
    rng = np.random.default_rng(2)
    x = rng.uniform(-4, 4, size=(500, dim))
    r = m.run(x)
    xN = net.forward(x[:, 0] if dim == 1 else x)
    assert np.abs(r["state"].reshape(xN.shape) - xN).max() < 1e-6
    assert np.abs(r["probabilities"] - net.head.probabilities(xN)).max() < 1e-6
    assert np.array_equal(r["label"], net.head.predict(xN))
    import onnx
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= {"Sub", "Div", "Mul", "Add", "MatMul", "Max", "Min", "Relu", "Split", "Identity", "Softmax",
                   "ArgMax"}, ops


def test_not_an_onnx_model(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX model") as e:
        OnnxModel(tmp_path / "x.onnx")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- baselines

def test_thresholds_are_the_best_ordered_ones():
    rng = np.random.default_rng(0)
    for _ in range(100):
        K = int(rng.integers(2, 4))
        x = rng.normal(size=int(rng.integers(3, 12))).round(1)  # ties included
        y = rng.integers(0, K, x.size)
        order = rng.permutation(K)
        acc = (threshold_predict(x, fit_thresholds(x, y, order), order) == y).mean()
        cands = np.concatenate([[x.min() - 1], np.unique(x) + 1e-9])
        best = max((threshold_predict(x, np.array(c), order) == y).mean()
                   for c in itertools.combinations_with_replacement(np.sort(cands), K - 1))
        assert acc == best


def test_backprop_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    nodes = np.linspace(-4, 4, 9)
    p = LineReluNetwork(0.3 * rng.normal(size=(3, 9)), 0.1 * rng.normal(size=3),
                        np.tile(nodes, (3, 1)) + 0.1 * rng.normal(size=(3, 9)), 1 / 3)
    x0, y, w = rng.normal(size=20), rng.integers(0, 3, 20), StateGrid.line(-4, 4, 9).weights()
    J, *g = line_cost_and_grad(p, x0, y, HEAD, nodes, w, 0.1, 0.0, None, True)
    for arr, grad in zip((p.c, p.B2, p.beta), g):
        for idx in [tuple(rng.integers(s) for s in arr.shape) for _ in range(3)]:
            old = arr[idx]
            arr[idx] = old + 1e-6
            Jp = line_cost_and_grad(p, x0, y, HEAD, nodes, w, 0.1, 0.0, None, True)[0]
            arr[idx] = old - 1e-6
            Jm = line_cost_and_grad(p, x0, y, HEAD, nodes, w, 0.1, 0.0, None, True)[0]
            arr[idx] = old
            assert abs((Jp - Jm) / 2e-6 - grad[idx]) < 1e-6 * max(1.0, abs(grad[idx]))


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_grid_gradient_matches_finite_differences(noise):
    """2-D baseline: the back-propagated gradient of J_S (kinetic + loss + weight decay with
    the product weights) against central differences; with noise the same draws are
    replayed (fresh generator of one seed), reflections at the walls included."""
    rng = np.random.default_rng(3)
    g = StateGrid((-1.5, -1.0), (1.5, 1.0), (7, 5))
    b = 0.6 * rng.normal(size=(3, 2) + g.nodes)
    x0 = rng.uniform([-1.4, -0.9], [1.4, 0.9], size=(40, 2))
    y = rng.integers(0, 3, 40)

    def J(bb):
        return grid_cost_and_grad(bb, g, 0.3, x0, y, HEAD2, 0.2, noise, np.random.default_rng(9), gradient=False)[0]

    J0, G = grid_cost_and_grad(b, g, 0.3, x0, y, HEAD2, 0.2, noise, np.random.default_rng(9))
    assert np.isclose(J0, J(b))
    if noise:  # the walls are hit: the reflection's sign flips are in play
        z = x0.copy()
        hits = 0
        r = np.random.default_rng(9)
        for n in range(3):
            z = z + 0.3 * interpolate(b[n], locate(z, g.lower, g.h, g.nodes)).T + noise * r.standard_normal(z.shape)
            hits += int(((z < g.lower) | (z > g.upper)).sum())
            z = np.clip(z, g.lower, g.upper)
        assert hits > 0
    for idx in [tuple(rng.integers(s) for s in b.shape) for _ in range(12)]:
        e = 1e-6
        bp, bm = b.copy(), b.copy()
        bp[idx] += e
        bm[idx] -= e
        fd = (J(bp) - J(bm)) / (2 * e)
        assert abs(fd - G[idx]) < 1e-6 * max(1.0, abs(G[idx])), (idx, fd, G[idx])


@pytest.mark.parametrize("dim", [1, 2])
def test_gradient_descent_lowers_the_cost(dim):
    rng = np.random.default_rng(0)
    if dim == 1:
        x0 = np.concatenate([rng.normal(-0.5, 0.3, 30), rng.normal(0.5, 0.3, 30)])
        head = target_head([-1.5, 1.5], 1.5, 2.0)
        grid = StateGrid.line(-3, 3, 17)
    else:
        x0 = np.concatenate([rng.normal([-0.5, 0.2], 0.3, (30, 2)), rng.normal([0.5, -0.2], 0.3, (30, 2))])
        head = SoftmaxHead(np.array([[-1.0, 0.5], [1.0, -0.5]]), np.zeros(2), 2.0)
        grid = StateGrid((-2.0, -2.0), (2.0, 2.0), (9, 9))
    y = np.repeat([0, 1], 30)
    r = train_gd(x0, y, head, grid, N=4, T=1.0, eta=0.1, steps=300)
    assert r.cost[-1] < 0.8 * r.cost[0]
    assert (head.predict(r.net.forward(x0)) == y).mean() >= (head.predict(x0) == y).mean()


# ---------------------------------------------------------------------------- samplers and tests

def test_density_sampler_matches_its_cdf():
    x = np.linspace(-3, 3, 33)
    p = np.exp(-x ** 2) + 0.3 * np.exp(-(x - 1.5) ** 2 / 0.1)
    s = sample_density(StateGrid.line(-3, 3, 33), p, 20000, np.random.default_rng(0))
    D, pv = ks_statistic(s, density_cdf(x, p))
    assert pv > 0.05 and D < 0.01


def test_planar_sampler_is_the_simplicial_density():
    """2-D: the triangle counts follow the triangle masses (chi-square) and the sample mean
    is the exact mean of the CPWL density (quadrature: int_T lambda_i lambda_j = A (1 +
    delta_ij) / 12)."""
    from scipy import stats

    g = StateGrid((-2.0, -1.0), (2.0, 2.0), (9, 7))
    P = g.points()
    p = np.exp(-((P[..., 0] - 0.5) ** 2 + (P[..., 1] - 0.3) ** 2)) + 0.2 * (P[..., 0] > 0)
    pts, S = P.reshape(-1, 2), grid_simplices(g.nodes)
    rng = np.random.default_rng(1)
    n = 40000
    s = sample_simplicial_density(pts, p, S, n, rng)
    V = pts[S]
    A = 0.5 * np.abs(np.linalg.det(V[:, 1:] - V[:, :1]))
    pv = p.ravel()[S]
    mass = A * pv.mean(axis=1)
    mean = (A[:, None] / 12 * ((pv[:, :, None] * V).sum(axis=1) + pv.sum(axis=1)[:, None] * V.sum(axis=1))).sum(0)
    mean /= mass.sum()
    se = s.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(s.mean(axis=0) - mean) < 4 * se)
    tri = locate(s, g.lower, g.h, g.nodes)
    k = (tri.cell[:, 0] * (g.nodes[1] - 1) + tri.cell[:, 1]) * 2 + tri.upper
    counts = np.bincount(k, minlength=S.shape[0])
    assert stats.chisquare(counts, mass / mass.sum() * n).pvalue > 1e-3


def test_energy_test():
    """The energy statistic is the square of scipy's 1-D energy distance (independent
    formula); the permutation test keeps its level on equal laws and rejects a shift."""
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 1)), rng.normal(0.2, 1.1, size=(250, 1))
    r = energy_test(a, b, permutations=50)
    assert np.isclose(r["statistic"], stats.energy_distance(a[:, 0], b[:, 0]) ** 2, rtol=1e-10)
    rej = sum(energy_test(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), 99, seed=k)["p_value"] <= 0.05
              for k in range(40))
    assert rej <= 6  # level 5 %: 2 expected of 40, P(> 6) < 0.5 %
    shifted = energy_test(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + [0.5, 0.0], 99)
    assert shifted["statistic"] > 2 * shifted["threshold_5pct"] and shifted["p_value"] == 0.01


# ---------------------------------------------------------------------------- end to end (1-D)

IRIS_TOML = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = 65
layers = 16
depth = 1.0

[model]
nu = 0.05
eta = 0.1

[data]
file = "builtin:iris"
label = "species"
projection = "pca"
test_fraction = 0.5
seed = 0
gamma = 2.0

[solver]
nu_start = 0.2
"""
KS_SAMPLES = 500


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("iris")
    (d / "iris.toml").write_text(IRIS_TOML)
    p = run_cli(2, ["train", d / "iris.toml", "--out", d / "out", "--gd-steps", "200",
                    "--samples", str(KS_SAMPLES), "--no-checkpoint"], timeout=600)
    return d / "out", json.loads((d / "out" / "evaluation.json").read_text()), p


def test_train_beats_head_and_reaches_threshold_ceiling(trained):
    out, rep, p = trained
    mf = rep["mean_field"]
    assert rep["data"]["test"] == 75 and rep["data"]["classes"] == ["setosa", "versicolor", "virginica"]
    thr = rep["thresholds"]["test_accuracy"]
    assert mf["test"]["accuracy"] >= thr - 0.02  # within 2 points of the best ordered thresholds
    assert mf["test"]["accuracy"] > rep["head_only"]["test"]["accuracy"]
    assert mf["train"]["cross_entropy"] < rep["head_only"]["train"]["cross_entropy"]
    assert mf["J_h"] < mf["zero_network_J_h"]
    summ = json.loads((out / "summary.json").read_text())
    assert summ["diagnostics"]["cost"]["total"] == mf["J_h"] < summ["zero_network_cost"]["total"]
    assert "best ordered thresholds" in p.stdout and "gradient descent" in p.stdout
    assert rep["logistic"]["all_features"]["features"] == 4


def test_noisy_pushforward_matches_terminal_densities(trained):
    out, rep, _ = trained
    for r in rep["pushforward"]["noisy_samples_vs_rhoN"]:
        assert r["samples"] == KS_SAMPLES
        assert r["ks_D"] < r["critical_D_5pct"], r  # KS at 5%: not rejected
        assert r["ks_D"] < r["ks_D_without_noise"]  # and the noise matters
    # recompute from the files (fixed seed): the same statistics
    from mfc_hpc.fileio.solution import read_solution
    from mfc_hpc.learning.pushforward import pushforward_check
    net = ResidualNetwork.load(out / "model.npz")
    again = pushforward_check(net, read_solution(out / "solution.h5")["rho"], KS_SAMPLES, seed=0)
    assert [a["ks_D"] for a in again] == [r["ks_D"] for r in rep["pushforward"]["noisy_samples_vs_rhoN"]]


def test_exported_network_matches_solution(trained):
    out, rep, _ = trained
    from mfc_hpc.fileio.solution import read_solution
    net = ResidualNetwork.load(out / "model.npz")
    sol = read_solution(out / "solution.h5")
    assert net.N == 16 and net.M == 65 and np.allclose(net.nodes, sol["x"])
    assert net.projection is not None and net.projection.kind == "pca"
    assert rep["mean_field"]["compression"] < 1.0  # invertible blocks
    assert {p.split("/")[-1] for p in rep["figures"]} == {"densities.png", "trajectories.png",
                                                          "velocity.png", "histograms.png"}
    assert all((out / f).stat().st_size > 10000 for f in ("densities.png", "histograms.png"))
    gd = rep["gradient_descent"]
    assert gd["steps"] == 200 and gd["cost_history"][-1] < gd["cost_history"][0]
    assert rep["gradient_descent_no_noise"]["noise_nu"] == 0.0


def test_predict_cli(trained, tmp_path):
    out, rep, _ = trained
    from mfc_hpc.problem.projection import prepare
    from mfc_hpc.config import config_from_dict
    iris = REPO / "mfc_hpc" / "data" / "iris.csv"
    n_right = sum(rep["mean_field"][s]["accuracy"] * rep["mean_field"][s]["samples"] for s in ("train", "test"))
    for model in ("model.npz", "model.onnx"):
        p = run_cli(1, ["predict", out / model, iris, "--json", tmp_path / "r.json"])
        r = json.loads((tmp_path / "r.json").read_text())
        assert r["samples"] == 150 and np.array(r["confusion"]).sum() == 150
        assert "accuracy" in p.stdout and "confusion" in p.stdout
        # on the whole data = train + test split of the report
        assert abs(r["accuracy"] * 150 - n_right) < 1e-9
    # projected states in one column
    cfg = config_from_dict({"mesh": {"x_min": -4.0, "x_max": 4.0, "nodes": 65}, "model": {"eta": 0.1}, "data": {
        "file": str(iris), "label": "species", "projection": "pca", "test_fraction": 0.5}})
    d = prepare(cfg.data)
    np.savez(tmp_path / "x.npz", x=d.x_test[:, 0], species=np.array(d.class_names)[d.y_test])
    p = run_cli(1, ["predict", out / "model.npz", tmp_path / "x.npz", "--feature", "x"])
    assert f"accuracy      {rep['mean_field']['test']['accuracy']:.4f}" in p.stdout


@pytest.mark.parametrize("case, match", [
    ("missing", "model: no such file"),
    ("labels", "labels 'daisy' .* are not classes of the model"),
    ("columns", "lacks the model's feature column"),
    ("header", "has a header but no samples"),
    ("jsondir", "--json: .* is a directory"),
    ("corrupt", "is not a readable NPZ model file"),
])
def test_predict_fails_clearly(trained, tmp_path, case, match):
    out, _, _ = trained
    model = out / "model.npz" if case != "missing" else tmp_path / "none.npz"
    data = tmp_path / "d.csv"
    extra = []
    if case == "columns":
        data.write_text("sepal_length,species\n5.0,setosa\n")
    elif case == "header":
        data.write_text("sepal_length,sepal_width,petal_length,petal_width,species\n")
    else:
        data.write_text("sepal_length,sepal_width,petal_length,petal_width,species\n5,3,1,0.2,daisy\n")
    if case == "jsondir":
        extra = ["--json", str(tmp_path)]
    if case == "corrupt":
        b = (out / "model.npz").read_bytes()
        model = tmp_path / "model.npz"
        model.write_bytes(b[:-200])
    p = run_cli(2, ["predict", model, data, *extra], check=False)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("mfc-hpc")]  # mpiexec adds its own
    assert len(err) == 1 and err[0].startswith("mfc-hpc: error:") and "Traceback" not in p.stderr, p.stderr
    import re
    assert re.search(match, err[0]), err[0]


def test_iris_strong_loss_little_noise_converges():
    """The hard corner on the shipped data: gamma = 10, nu = 0.01
    (mfc_hpc/examples/iris_hard.toml, 65 x 128, three classes). Continuation folds there;
    the driver's optimisation route (chunked L-BFGS, Newton after each chunk) must end in a
    converged KKT point with positive densities, a cost below the zero network's and an
    invertible network (dt * max compression < 1). About 2-4 minutes on one rank."""
    from mfc_hpc.config import load_config
    from mfc_hpc.jobs.solve import solve

    cfg = load_config(Path(__file__).resolve().parents[1] / "mfc_hpc" / "examples" / "iris_hard.toml")
    assert cfg.model.nu == 0.01 and cfg.data.gamma == 10.0
    res = solve(cfg, verbose=False)
    res.ms.destroy()
    s = res.summary
    assert s["converged"], s["failure"]
    st = s["newton"][-1]["stages"]
    assert st[-1]["param"] == "optimisation" and st[-1]["converged"]
    assert st[-1]["residuals"][-1] < 1e-9
    dg = s["diagnostics"]
    assert dg["min_density"] > 0.0
    assert dg["cost"]["total"] < 0.7 * s["zero_network_cost"]["total"]
    assert dg["dt_max_compression"] < 1.0 and dg["dt_max_outflow_rate"] <= 2.0
