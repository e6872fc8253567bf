"""Labelled data: reading, projection to d = 1 or 2 features, split, the [data] section,
the synthetic sets, densities and domain from the data, and clear failures."""
from __future__ import annotations

import numpy as np
import pytest

from mfc_hpc.config import ConfigError, config_from_dict
from mfc_hpc.problem.build import build_problem
from mfc_hpc.problem.losses import SoftmaxHead, default_targets, fit_logistic, target_head
from mfc_hpc.problem.projection import Projection, prepare, stratified_split
from mfc_hpc.problem.synthetic import DEFAULTS, make_table, moons, spirals, write_csv
from mfc_hpc.problem.tables import labelled_samples, read_table, resolve_data_path

IRIS = resolve_data_path("builtin:iris")
MESH = {"x_min": -4.0, "x_max": 4.0, "nodes": 65, "layers": 8}


def _cfg(mesh=MESH, **data):
    d = {"file": "builtin:iris", "label": "species"}
    d.update(data)
    return config_from_dict({"mesh": mesh, "model": {"nu": 0.05, "eta": 0.1}, "data": d})


def test_shipped_iris_is_fishers_table():
    s = labelled_samples(IRIS, "species")
    assert s.X.shape == (150, 4)
    assert s.class_names == ("setosa", "versicolor", "virginica")
    assert np.bincount(s.y).tolist() == [50, 50, 50]
    # column means of Fisher's data (R datasets::iris)
    assert np.allclose(s.X.mean(axis=0), [5.843333, 3.057333, 3.758, 1.199333], atol=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "npz", "h5"])
def test_formats_read_the_same(tmp_path, fmt):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    lab = np.array(["a", "b"] * 20)
    p = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        p.write_text("f1,f2,cls\n" + "".join(f"{a!r},{b!r},{c}\n" for (a, b), c in zip(X, lab)))
    elif fmt == "npz":
        np.savez(p, f1=X[:, 0], f2=X[:, 1], cls=lab)
    else:
        import h5py
        with h5py.File(p, "w") as f:
            f["f1"], f["f2"], f["cls"] = X[:, 0], X[:, 1], lab.astype("S")
    s = labelled_samples(p, "cls")
    assert s.feature_names == ("f1", "f2") and s.class_names == ("a", "b")
    assert np.array_equal(s.X, X) and np.array_equal(s.y, (lab == "b").astype(int))


def test_split_is_stratified_and_seeded():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    tr, te = stratified_split(y, 0.3, seed=7)
    assert np.bincount(y[te]).tolist() == [15, 9, 6]
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == y.size
    assert np.array_equal(te, stratified_split(y, 0.3, seed=7)[1])
    assert not np.array_equal(te, stratified_split(y, 0.3, seed=8)[1])


@pytest.mark.parametrize("kind, features", [("pca", 1), ("lda", 1), ("pca", 2), ("lda", 2)])
def test_projection_standardised_and_ordered(kind, features):
    d = prepare(_cfg(projection=kind, test_fraction=0.3, features=features,
                     mesh=dict(MESH, nodes=[17] * features) if features == 2 else MESH).data)
    assert d.x_train.shape == (105, features)
    assert np.allclose(d.x_train.mean(axis=0), 0.0, atol=1e-12) and np.allclose(d.x_train.std(axis=0), 1.0)
    m = d.class_means()
    assert m[0, 0] < m[1, 0] < m[2, 0]  # setosa < versicolor < virginica on the first component
    assert np.all(m[-1] > m[0])  # every component oriented: the last class's mean above the first's
    assert np.allclose(d.projection(d.samples.X[:3]), d.projection(d.samples.X)[:3])
    # directions are unit vectors; the two components of PCA are orthogonal
    V = d.projection.direction
    assert np.allclose(np.linalg.norm(V, axis=0), 1.0)
    if kind == "pca" and features == 2:
        assert abs(V[:, 0] @ V[:, 1]) < 1e-12


def test_lda_separates_better_than_pca():
    """LDA maximises between/within class variance: its Fisher ratio beats PCA's."""
    def ratio(kind):
        d = prepare(_cfg(projection=kind, test_fraction=0.0).data)
        x = d.x_train[:, 0]
        m = d.class_means()[:, 0]
        w = sum(((x[d.y_train == c] - m[c]) ** 2).sum() for c in range(3))
        return ((m - x.mean()) ** 2 * np.bincount(d.y_train)).sum() / w
    assert ratio("lda") > 1.5 * ratio("pca")


def test_lda_two_components_separate_iris():
    """On two LDA components a linear classifier separates the three species almost
    perfectly (the reason for the iris_lda2 example): training accuracy >= 0.95."""
    d = prepare(_cfg(projection="lda", features=2, test_fraction=0.5, mesh=dict(MESH, nodes=[17, 17])).data)
    head = fit_logistic(d.x_train, d.y_train, 3)
    assert (head.predict(d.x_train) == d.y_train).mean() >= 0.95


def test_data_section_makes_classes_and_head():
    pb = build_problem(_cfg(projection="pca", test_fraction=0.5, gamma=3.0))
    assert pb.K == 3 and pb.class_names == ("setosa", "versicolor", "virginica")
    assert np.isclose(sum(c.prior for c in pb.classes), 1.0)
    assert all(c.samples.shape == (25, 1) and c.bandwidth[0] >= 8.0 / 64 for c in pb.classes)
    # default head in 1-D: targets -2, 0, 2 (evenly spaced in [-4, 4]); width = half the spacing
    head = pb.head
    ref = target_head([-2.0, 0.0, 2.0], 1.0, 3.0)
    assert np.allclose(head.weights, ref.weights) and np.allclose(head.biases, ref.biases)
    assert head.gamma == 3.0
    assert head.predict(np.array([-2.0, 0.0, 2.0])).tolist() == [0, 1, 2]
    assert np.allclose(head.logits(np.array([0.7])) - 0.5 * 0.7 ** 2,  # = -(x-t)^2/2 up to a constant
                       -0.5 * (0.7 - np.array([-2.0, 0.0, 2.0])) ** 2)
    # densities: KDE + floor normalised to the priors
    w = pb.grid.weights()
    assert np.allclose((pb.bd.rho0 * w).sum(axis=1), [1 / 3] * 3)
    assert pb.resolved_config()["data"]["projection"] == "pca"


def test_two_dimensional_data_section_defaults():
    """d = 2: the fitted head (logistic regression on the training states) is the default;
    the domain comes from the data; per-axis kernel widths, at least the node spacing."""
    cfg = config_from_dict({"mesh": {"nodes": [17, 17], "layers": 4}, "model": {"nu": 0.05, "eta": 0.1},
                            "data": {"file": "builtin:moons", "features": 2, "projection": "none",
                                     "test_fraction": 0.5}})
    pb = build_problem(cfg)
    d = pb.data
    assert pb.ndim == 2 and d.x_train.shape == (500, 2) and d.x_test.shape == (500, 2)
    ref = fit_logistic(d.x_train, d.y_train, 2, gamma=1.0)
    assert np.allclose(pb.head.weights, ref.weights) and np.allclose(pb.head.biases, ref.biases)
    x = np.concatenate([d.x_train, d.x_test])
    lo, hi = np.array(pb.grid.lower), np.array(pb.grid.upper)
    assert np.all(x.min(axis=0) > lo) and np.all(x.max(axis=0) < hi)
    for c in pb.classes:
        assert len(c.bandwidth) == 2 and all(b >= h for b, h in zip(c.bandwidth, pb.grid.h))
    assert np.allclose((pb.bd.rho0 * pb.grid.weights()).sum(axis=(1, 2)), pb.data.priors)
    assert any("domain chosen from the data" in n for n in pb.notes)
    # a scalar bandwidth is the same width on both axes
    cfg = config_from_dict({"mesh": {"nodes": [17, 17], "layers": 4}, "model": {"nu": 0.05, "eta": 0.1},
                            "data": {"file": "builtin:moons", "features": 2, "projection": "none",
                                     "bandwidth": 0.5}})
    assert cfg.data.bandwidth == (0.5, 0.5)
    assert build_problem(cfg).classes[0].bandwidth == (0.5, 0.5)


def test_data_outside_the_given_domain_fails_clearly():
    cfg = config_from_dict({"mesh": {"nodes": [17, 17], "layers": 4, "x_min": [-1.0, -1.0], "x_max": [1.0, 1.0]},
                            "model": {"nu": 0.05, "eta": 0.1},
                            "data": {"file": "builtin:moons", "features": 2, "projection": "none"}})
    with pytest.raises(ConfigError, match="lie outside the mesh") as e:
        build_problem(cfg)
    assert "\n" not in str(e.value)


def test_synthetic_sets_are_seeded_and_shaped(tmp_path):
    X, y = moons(1000, 0.15, seed=0)
    assert X.shape == (1000, 2) and np.bincount(y).tolist() == [500, 500]
    X2, y2 = moons(1000, 0.15, seed=0)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, moons(1000, 0.15, seed=1)[0])
    # without noise the moons are exactly the two half circles
    Xc, yc = moons(400, 0.0, seed=3)
    r0 = np.hypot(Xc[yc == 0, 0], Xc[yc == 0, 1])
    r1 = np.hypot(Xc[yc == 1, 0] - 1.0, Xc[yc == 1, 1] - 0.5)
    assert np.allclose(r0, 1.0) and np.allclose(r1, 1.0)
    assert np.all(Xc[yc == 0, 1] >= 0) and np.all(Xc[yc == 1, 1] <= 0.5)
    Xs, ys = spirals(600, 0.0, seed=0)
    r = np.hypot(Xs[:, 0], Xs[:, 1])
    th = np.arctan2(Xs[:, 1], Xs[:, 0])
    # r = t / (2 pi) on the spiral: the angle matches t (+ pi for class 1) modulo 2 pi
    t = 2 * np.pi * r
    off = np.angle(np.exp(1j * (th - t - np.pi * ys)))
    assert np.allclose(off, 0.0, atol=1e-9)
    # the CSV the 'data' command writes is the builtin table
    p = write_csv("moons", tmp_path / "m.csv")
    cols = read_table(p)
    ref = make_table("moons")
    assert list(cols) == ["x1", "x2", "label"]
    assert np.array_equal(cols["x1"].astype(float), ref["x1"]) and np.array_equal(cols["label"], ref["label"])
    assert DEFAULTS["moons"] == {"samples": 1000, "noise": 0.15, "seed": 0}


def test_default_targets_follow_class_means():
    assert default_targets(np.array([0.5, -1.0, 2.0]), -3.0, 3.0).tolist() == [0.0, -1.5, 1.5]


def test_two_class_subset_and_user_head():
    cfg = config_from_dict({"mesh": MESH, "model": {"nu": 0.05, "eta": 0.1},
                            "data": {"file": str(IRIS), "label": "species",
                                     "classes": ["virginica", "versicolor"], "columns": ["petal_width"],
                                     "projection": "none"},
                            "loss": {"kind": "softmax", "weights": [1.0, -1.0], "gamma": 2.0}})
    pb = build_problem(cfg)
    assert pb.class_names == ("virginica", "versicolor")
    assert np.allclose(pb.head.weights[:, 0], [1.0, -1.0]) and pb.head.gamma == 2.0


def test_fitted_logistic_regression_is_a_minimiser():
    """fit_logistic: the gradient of its (l2-regularised) objective vanishes at the result."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x @ np.array([1.5, -1.0]) + 0.3 * rng.normal(size=200) > 0).astype(int)
    head = fit_logistic(x, y, 2, l2=1e-3)
    P = head.probabilities(x)
    G = (P - np.eye(2)[y]) / len(y)
    assert np.abs(G.T @ x + 1e-3 * head.weights).max() < 1e-7
    assert abs(G.sum(axis=0)[1]) < 1e-7 and head.biases[0] == 0.0
    assert isinstance(head, SoftmaxHead)


@pytest.mark.parametrize("content, data, match", [
    ("a,b,label\n1,2,x\n3,4,y\n", {"label": "cls"}, "no column 'cls'"),
    ("a,b,label\n1,2,x\n3,4,y\n", {"columns": ["a", "c"]}, "no column 'c'"),
    ("a,b,label\n1,2,x\n3,nan,y\n1,2,x\n3,4,y\n1,2,x\n3,4,y\n", {}, "column 'b' .* non-finite value in sample 2"),
    ("a,b,label\n1,2,x\n3,,y\n", {}, "column 'b' .* missing"),
    ("a,b,label\n1,2,x\n3,oops,y\n", {}, "column 'b' .* not numeric .*'oops'"),
    ("a,b,label\n1,2,x\n3,4,x\n5,6,x\n", {}, "1 class.*at least two"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n1,1,x\n2,2,y\n", {"classes": ["x", "z"]}, "class 'z' has no samples"),
    ("a,b,label\n1,2,x\n3,4\n", {}, "line 3: expected 3 fields, got 2"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,y\n7,8,y\n", {}, "class 'x' .* 1 sample"),
    ("", {}, "is empty"),
    ("a,b,label\n", {}, "a header but no samples"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n1,1,x\n2,2,y\n", {"projection": "none"}, "exactly 1 feature"),
    ("a,b,label\n1,2,x\n1,4,y\n1,6,x\n1,8,y\n1,1,x\n1,2,y\n", {"projection": "pca"}, "feature 'a' is constant"),
])
def test_malformed_data_fails_clearly(tmp_path, content, data, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    raw = {"model": {"nu": 0.1, "eta": 0.1}, "data": {"file": str(p), "test_fraction": 0.0, **data}}
    with pytest.raises(ConfigError, match=match) as e:
        build_problem(config_from_dict(raw))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("raw, match", [
    ({"data": {"label": "species"}}, "data.file: required"),
    ({"data": {"file": "nope.csv"}}, "data.file: no such file"),
    ({"data": {"file": "builtin:mnist"}}, "no shipped data set 'mnist'"),
    ({"data": {"file": "builtin:iris", "label": "species", "projection": "tsne"}}, "data.projection: must be one of"),
    ({"data": {"file": "builtin:iris", "label": "species", "wat": 1}}, "data.wat: unknown key"),
    ({"data": {"file": "builtin:iris", "label": "species", "features": 3}}, "the state dimension must be 1 or 2, got 3"),
    ({"data": {"file": "builtin:iris", "label": "species", "bandwidth": -1.0}}, "data.bandwidth"),
    ({"data": {"file": "builtin:iris", "label": "species", "gamma": 2.0},
      "loss": {"kind": "softmax", "weights": [1.0, 0.0, -1.0]}}, "data.gamma: a \\[loss\\] section gives the head"),
    ({"data": {"file": "builtin:iris", "label": "species"}, "classes": [{"mean": 0.0, "var": 1.0}]}, "not both"),
])
def test_bad_data_section(raw, match):
    raw = {"model": {"nu": 0.1, "eta": 0.1}, **raw}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


@pytest.mark.parametrize("data, match", [
    ({"targets": [1.0, 0.0, 2.0]}, "increase in the order"),
    ({"features": 2, "projection": "lda", "head": "targets"}, "needs one target point per class"),
    ({"features": 2, "projection": "none"}, "'none' needs exactly 2 feature column"),
])
def test_bad_data_for_the_problem(data, match):
    mesh = dict(MESH, nodes=[17, 17]) if data.get("features") == 2 else MESH
    mesh = {k: v for k, v in mesh.items() if k not in ("x_min", "x_max")} if data.get("features") == 2 else mesh
    with pytest.raises(ConfigError, match=match) as e:
        build_problem(_cfg(mesh=mesh, **data))
    assert "\n" not in str(e.value)


def test_read_table_rejects_2d_npz(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, X=np.zeros((3, 2)), label=np.array(["a", "b", "a"]))
    with pytest.raises(ConfigError, match="column 'X' .* must be 1-D"):
        read_table(p)


def test_projection_checks_feature_count():
    d = prepare(_cfg(projection="lda").data)
    assert isinstance(d.projection, Projection)
    with pytest.raises(ConfigError, match="expected 4 feature column"):
        d.projection(np.zeros((3, 2)))
