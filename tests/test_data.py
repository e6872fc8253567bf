"""Labelled data: reading, projection, split, the [data] section, and clear failures."""
from __future__ import annotations

import numpy as np
import pytest

from mfc_hpc.config import ConfigError, config_from_dict
from mfc_hpc.data import (DataConfig, Projection, labelled_samples, prepare, read_table, resolve_path,
                          stratified_split)
from mfc_hpc.head import SoftmaxHead, default_targets, target_head
from mfc_hpc.problem import class_densities, discretisation
from mfc_hpc.scheme import node_weights

IRIS = resolve_path("builtin:iris")
MESH = {"x_min": -4.0, "x_max": 4.0, "nodes": 65, "layers": 8}


def _cfg(**data):
    d = {"file": "builtin:iris", "label": "species"}
    d.update(data)
    return config_from_dict({"mesh": MESH, "model": {"nu": 0.05, "eta": 0.1}, "data": d})


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


@pytest.mark.parametrize("kind", ["pca", "lda"])
def test_projection_standardised_and_ordered(kind):
    d = prepare(DataConfig(str(IRIS), "species", projection=kind, test_fraction=0.3))
    assert abs(d.x_train.mean()) < 1e-12 and abs(d.x_train.std() - 1.0) < 1e-12
    m = d.class_means()
    assert m[0] < m[1] < m[2]  # setosa < versicolor < virginica on both components
    assert np.allclose(d.projection(d.samples.X[:3]), d.projection(d.samples.X)[:3])


def test_lda_separates_better_than_pca():
    """LDA maximises between/within class variance: its Fisher ratio beats PCA's."""
    def ratio(kind):
        d = prepare(DataConfig(str(IRIS), "species", projection=kind, test_fraction=0.0))
        m = d.class_means()
        w = sum(((d.x_train[d.y_train == c] - m[c]) ** 2).sum() for c in range(3))
        return ((m - d.x_train.mean()) ** 2 * np.bincount(d.y_train)).sum() / w
    assert ratio("lda") > 1.5 * ratio("pca")


def test_data_section_makes_classes_and_head():
    cfg = _cfg(projection="pca", test_fraction=0.5, gamma=3.0)
    assert cfg.K == 3 and [c.name for c in cfg.classes] == ["setosa", "versicolor", "virginica"]
    assert np.isclose(sum(c.prior for c in cfg.classes), 1.0)
    assert all(len(c.values) == 25 and c.bandwidth >= 8.0 / 64 for c in cfg.classes)
    # default head: targets -2, 0, 2 (evenly spaced in [-4, 4]); width = half the spacing
    head = SoftmaxHead(cfg.loss.weights, cfg.loss.biases, cfg.loss.gamma)
    ref = target_head([-2.0, 0.0, 2.0], 1.0, 3.0)
    assert np.allclose(head.weights, ref.weights) and np.allclose(head.biases, ref.biases)
    assert head.gamma == 3.0
    assert head.predict(np.array([-2.0, 0.0, 2.0])).tolist() == [0, 1, 2]
    assert np.allclose(head.logits(np.array([0.7])) - 0.5 * 0.7 ** 2,  # = -(x-t)^2/2 up to a constant
                       -0.5 * (0.7 - np.array([-2.0, 0.0, 2.0])) ** 2)
    # densities: KDE + floor normalised to the priors
    rho = class_densities(cfg)
    d = discretisation(cfg)
    assert np.allclose(rho @ node_weights(d.h, d.M), [1 / 3] * 3)
    assert cfg.to_dict()["extra"]["data"]["projection"] == "pca"


def test_default_targets_follow_class_means():
    assert default_targets(np.array([0.5, -1.0, 2.0]), -3.0, 3.0).tolist() == [0.0, -1.5, 1.5]


def test_two_class_subset_and_user_head():
    cfg = config_from_dict({"mesh": MESH, "model": {"nu": 0.05, "eta": 0.1},
                            "data": {"file": str(IRIS), "label": "species",
                                     "classes": ["virginica", "versicolor"], "features": ["petal_width"],
                                     "projection": "none"},
                            "loss": {"kind": "softmax", "weights": [1.0, -1.0], "gamma": 2.0}})
    assert [c.name for c in cfg.classes] == ["virginica", "versicolor"]
    assert cfg.loss.weights == (1.0, -1.0) and cfg.loss.gamma == 2.0


@pytest.mark.parametrize("content, data, match", [
    ("a,b,label\n1,2,x\n3,4,y\n", {"label": "cls"}, "no column 'cls'"),
    ("a,b,label\n1,2,x\n3,4,y\n", {"features": ["a", "c"]}, "no column 'c'"),
    ("a,b,label\n1,2,x\n3,nan,y\n1,2,x\n3,4,y\n1,2,x\n3,4,y\n", {}, "column 'b' .* non-finite value in sample 2"),
    ("a,b,label\n1,2,x\n3,,y\n", {}, "column 'b' .* missing"),
    ("a,b,label\n1,2,x\n3,oops,y\n", {}, "column 'b' .* not numeric .*'oops'"),
    ("a,b,label\n1,2,x\n3,4,x\n5,6,x\n", {}, "1 class.*at least two"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n1,1,x\n2,2,y\n", {"classes": ["x", "z"]}, "class 'z' has no samples"),
    ("a,b,label\n1,2,x\n3,4\n", {}, "line 3: expected 3 fields, got 2"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,y\n7,8,y\n", {}, "class 'x' .* 1 sample"),
    ("", {}, "is empty"),
    ("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n1,1,x\n2,2,y\n", {"projection": "none"}, "exactly one feature"),
    ("a,b,label\n1,2,x\n1,4,y\n1,6,x\n1,8,y\n1,1,x\n1,2,y\n", {"projection": "pca"}, "feature 'a' is constant"),
])
def test_malformed_data_fails_clearly(tmp_path, content, data, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    raw = {"model": {"nu": 0.1, "eta": 0.1}, "data": {"file": str(p), "test_fraction": 0.0, **data}}
    with pytest.raises(ConfigError, match=match) as e:
        config_from_dict(raw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("raw, match", [
    ({"data": {"label": "species"}}, "data.file: required"),
    ({"data": {"file": "nope.csv"}}, "data.file: no such file"),
    ({"data": {"file": "builtin:mnist"}}, "no shipped data set 'mnist'"),
    ({"data": {"file": "builtin:iris", "label": "species", "projection": "tsne"}}, "data.projection: must be one of"),
    ({"data": {"file": "builtin:iris", "label": "species", "wat": 1}}, "data.wat: unknown key"),
    ({"data": {"file": "builtin:iris", "label": "species", "targets": [1.0, 0.0, 2.0]}}, "increase in the order"),
    ({"data": {"file": "builtin:iris", "label": "species", "gamma": 2.0},
      "loss": {"kind": "softmax", "weights": [1.0, 0.0, -1.0]}}, "data.gamma: a \\[loss\\] section gives the head"),
    ({"data": {"file": "builtin:iris", "label": "species"}, "classes": [{"mean": 0.0, "var": 1.0}]}, "not both"),
])
def test_bad_data_section(raw, match):
    raw = {"model": {"nu": 0.1, "eta": 0.1}, **raw}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_read_table_rejects_2d_npz(tmp_path):
    p = tmp_path / "t.npz"
    np.savez(p, X=np.zeros((3, 2)), label=np.array(["a", "b", "a"]))
    with pytest.raises(ConfigError, match="column 'X' .* must be 1-D"):
        read_table(p)


def test_projection_checks_feature_count():
    d = prepare(DataConfig(str(IRIS), "species", projection="lda"))
    assert isinstance(d.projection, Projection)
    with pytest.raises(ConfigError, match="expected 4 feature column"):
        d.projection(np.zeros((3, 2)))
