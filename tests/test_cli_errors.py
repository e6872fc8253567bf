"""Bad input gets a one-line error naming the problem and a non-zero exit; a solve
that does not converge exits 3 and still writes its diagnostics."""
import json
import textwrap

import pytest

from conftest import run_cli
from mfc_hpc.config import ConfigError, config_from_dict, load_config

GOOD = {
    "mesh": {"nodes": 33, "layers": 8},
    "model": {"nu": 0.1},
    "classes": [{"mean": 0.0, "var": 0.25}],
    "loss": {"kind": "quadratic", "alpha": 1.0, "target": 0.5},
}


def with_(path, value):
    import copy
    raw = copy.deepcopy(GOOD)
    *head, last = path
    d = raw
    for k in head:
        d = d[k] if not isinstance(k, int) else d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return raw


@pytest.mark.parametrize("path,value,needle", [
    (("mesh", "nodez"), 3, "mesh.nodez: unknown key"),
    (("mesh", "nodes"), -4, "mesh.nodes: must be an integer >= 3, got -4"),
    (("mesh", "nodes"), "many", "mesh.nodes: must be an integer"),
    (("mesh", "layers"), 0, "mesh.layers"),
    (("mesh", "x_max"), -5.0, "mesh.x_max: must exceed mesh.x_min"),
    (("mesh", "depth"), -1.0, "mesh.depth: must be > 0"),
    (("model", "nu"), 0.0, "model.nu: must be > 0"),
    (("model", "eta"), -0.1, "model.eta: must be >= 0"),
    (("model", "running"), "crowd", "model.running: must be one of"),
    (("model", "scheme"), "rk4", "model.scheme: must be one of"),
    (("classes",), [], "classes: must be a non-empty array"),
    (("classes", 0, "var"), -1.0, "classes[0].var: must be > 0"),
    (("classes", 0, "samples"), "nowhere.csv", "classes[0]: give either mean and var"),
    (("loss", "kind"), "hinge", "loss.kind: must be one of"),
    (("loss", "gamma"), 2.0, "loss.gamma: not a key of the quadratic loss"),
    (("solver", ), {"max_it": 0}, "solver.max_it: must be an integer >= 1"),
    (("solver", ), {"process_grid": [2]}, "solver.process_grid: must be [px, py]"),
    (("solver", ), {"grid_levels": -1}, "solver.grid_levels"),
    (("bogus",), {}, "bogus: unknown section"),
])
def test_config_errors_name_the_key(path, value, needle):
    with pytest.raises(ConfigError) as e:
        config_from_dict(with_(path, value))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_two_classes_need_weight_decay():
    raw = with_(("classes",), [{"mean": -0.5, "var": 0.1}, {"mean": 0.5, "var": 0.1}])
    raw["loss"] = {"kind": "softmax", "weights": [-1.0, 1.0], "gamma": 1.0}
    with pytest.raises(ConfigError, match="model.eta: must be > 0 with several classes"):
        config_from_dict(raw)
    raw["loss"]["weights"] = [1.0]
    raw["model"]["eta"] = 0.1
    with pytest.raises(ConfigError, match="loss.weights: needs one weight per class"):
        config_from_dict(raw)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[mesh\nnodes = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    ok = tmp_path / "c.toml"
    ok.write_text("[[classes]]\nsamples = 'nothing.csv'\n")
    with pytest.raises(ConfigError, match=r"classes\[0\].samples: no such file"):
        load_config(ok)


def one_line_error(p):
    """The program's own error: exactly one line (mpiexec may add its banner after it)."""
    ours = [l for l in p.stderr.splitlines() if l.startswith("mfc-hpc")]
    assert len(ours) == 1 and ours[0].startswith("mfc-hpc: error: "), p.stderr
    assert "Traceback" not in p.stderr
    return ours[0]


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        [mesh]
        nodes = -4
        [[classes]]
        mean = 0.0
        var = 1.0
    """))
    p = run_cli(1, ["solve", cfg, "--out", tmp_path / "o"], check=False)
    assert p.returncode == 2
    assert "mesh.nodes" in one_line_error(p)
    assert not (tmp_path / "o" / "summary.json").exists()
    p = run_cli(1, ["solve", tmp_path / "missing.toml", "--out", tmp_path / "o"], check=False)
    assert p.returncode == 2 and "no such file" in one_line_error(p)
    # an option no command has (--bandwidth is a configuration key) is refused, not passed to PETSc
    p = run_cli(1, ["train", "mfc_hpc/examples/iris.toml", "--out", tmp_path / "t", "--bandwidth", "0.3"],
                check=False)
    assert p.returncode == 2 and "unrecognized option --bandwidth" in p.stderr
    assert not (tmp_path / "t").exists()


def test_non_converging_solve_exits_3_and_writes_diagnostics(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(textwrap.dedent("""
        [mesh]
        x_min = -4.0
        x_max = 4.0
        nodes = 33
        layers = 8
        [model]
        nu = 0.05
        eta = 0.1
        [[classes]]
        mean = -0.5
        var = 0.09
        [[classes]]
        mean = 0.5
        var = 0.09
        [loss]
        kind = "softmax"
        weights = [-1.0, 1.0]
        gamma = 3.0
        [solver]
        max_it = 1
        continuation = "never"
    """))
    out = tmp_path / "o"
    p = run_cli(2, ["solve", cfg, "--out", out, "--no-checkpoint"], check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] is False and "continuation = 'never'" in s["failure"]
    assert (out / "solution.h5").exists()
    assert len(s["newton"][0]["stages"][0]["residuals"]) == 2  # iteration 0 and 1 recorded
