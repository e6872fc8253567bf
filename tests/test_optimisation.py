"""The optimisation route on the distributed vector (METHOD.md 4, 8; issues 11 and 13):
``J_h``, its exact adjoint gradient and the KKT state of a network computed on the ranks'
chunks of layers equal the serial reference :mod:`mfc_hpc.numerics.training`; the gradient
equals finite differences; the driver's route (PETSc TAO) reaches the same converged
solution on 1 and 2 ranks in d = 1 and d = 2; the release's hard iris case converges on
2 ranks."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cases import two_class_config
from conftest import REPO, run_cli, run_mpi
from mfc_hpc.numerics.training import TiltLayout, cost_and_gradient
from mfc_hpc.problem.build import build_problem

DISTRIBUTED = r"""
import json, sys
import numpy as np
import petsc4py; petsc4py.init([])
from petsc4py import PETSc
sys.path.insert(0, "tests")
from cases import two_class_config
from mfc_hpc.numerics.training import TiltLayout, sweep
from mfc_hpc.parallel.mesh import DepthTimeMesh
from mfc_hpc.parallel.training import TiltMesh
from mfc_hpc.problem.build import build_problem

dim, kappa, split = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
P = PETSc.COMM_WORLD.getSize()
# N + 1 levels that 2 and 3 ranks do not divide evenly; nodes uneven too
M, N = (13, 6) if dim == 1 else ([9, 7], 6)
cfg = two_class_config(M=M, N=N, gamma=2.0, nu=0.1, kappa=kappa)
p = build_problem(cfg)
d, bd = p.d, p.bd
theta = 0.4 * np.random.default_rng(7).normal(size=TiltLayout(d).natural)
v = np.random.default_rng(8).normal(size=theta.shape)
rho, phi, mu, g, c = sweep(theta, d, bd)
grid = (1,) * dim + (P,) if split == "depth" else (P,) + (1,) * dim
mesh = DepthTimeMesh(d, proc_grid=grid)
tm = TiltMesh(d, bd, mesh=mesh)
X, G, V = tm.create_vec(), tm.create_vec(), tm.create_vec()
tm.set_serial(X, theta)
tm.set_serial(V, v)
e = tm.evaluate(X, G)
gd = tm.gather_serial(G)
Zv = mesh.create_vec()
tm.kkt_state(X, Zv, mesh)
Z = mesh.gather(Zv, root=None)
Zs = np.concatenate([np.moveaxis(rho, 1, -1), np.moveaxis(phi, 1, -1)], axis=-1)
# the distributed gradient against central differences of the distributed cost
eps = 1e-5
Xp, Xm = X.copy(), X.copy()
Xp.axpy(eps, V)
Xm.axpy(-eps, V)
fd = (tm.evaluate(Xp).cost["total"] - tm.evaluate(Xm).cost["total"]) / (2 * eps)
out = {"shares_mesh": tm.shares_mesh, "ranges": tm.ranges,
       "cost": {k: (e.cost[k], c[k]) for k in ("kinetic", "running", "terminal", "total")},
       "grad_err": float(np.abs(gd - g).max() / np.abs(g).max()),
       "kkt_err": float(np.abs(Z - Zs).max() / np.abs(Zs).max()),
       "fd": fd, "gv": float(G.dot(V)), "min_density": (e.min_density, float(rho.min())),
       "unused_zero": bool(np.all(tm.owned(G)[tm.used() == 0] == 0))}
if PETSc.COMM_WORLD.rank == 0:
    print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("dim,kappa,split", [(1, 0.6, "depth"), (1, 0.0, "state"), (2, 0.6, "state"),
                                             (2, 0.0, "depth")])
def test_distributed_cost_gradient_and_kkt_state_equal_the_serial_ones(tmp_path, n, dim, kappa, split):
    """Two classes, congestion ``F != 0`` (and ``F = 0``, where the forward and adjoint
    pipelines run at the same time), 2 and 3 ranks on levels they do not divide evenly;
    the mesh split along depth (the tilts on the mesh's ranges) or along a state axis
    (the KKT state moved by a scatter)."""
    script = tmp_path / "dist.py"
    script.write_text(DISTRIBUTED)
    out = run_mpi(n, [script, dim, kappa, split]).stdout
    r = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert r["shares_mesh"] == (split == "depth")
    assert len(set(r["ranges"])) > 1  # an uneven split of the levels
    for k, (dist, ser) in r["cost"].items():
        assert dist == pytest.approx(ser, rel=1e-10, abs=1e-14), k
    assert r["grad_err"] <= 1e-10
    assert r["kkt_err"] <= 1e-10
    assert r["fd"] == pytest.approx(r["gv"], rel=1e-6)
    assert r["min_density"][0] == r["min_density"][1]
    assert r["unused_zero"]


def test_gradient_in_two_dimensions_equals_finite_differences():
    """Every component of the serial 2-D gradient (two classes, F != 0, face factors on a
    non-square mesh) by central differences; the 1-D check is in test_optimality."""
    p = build_problem(two_class_config(M=[5, 4], N=3, gamma=1.5, nu=0.1, kappa=0.7))
    d, bd = p.d, p.bd
    th = 0.5 * np.random.default_rng(2).normal(size=TiltLayout(d).natural)
    _, g = cost_and_gradient(th, d, bd)
    e = 1e-5
    fd = np.empty_like(th)
    for i in range(th.size):
        tp, tm = th.copy(), th.copy()
        tp[i] += e
        tm[i] -= e
        fd[i] = (cost_and_gradient(tp, d, bd)[0] - cost_and_gradient(tm, d, bd)[0]) / (2 * e)
    assert np.abs(fd - g).max() <= 1e-7 * np.abs(g).max()


CONFIG_1D = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = 33
layers = 11
[model]
nu = 0.05
eta = 0.1
running = "congestion"
kappa = 0.3
[[classes]]
prior = 0.5
mean = -0.5
var = 0.09
[[classes]]
prior = 0.5
mean = 0.6
var = 0.12
[loss]
kind = "softmax"
weights = [-1.0, 1.0]
gamma = 3.0
[solver]
guess = "optimisation"
optimisation_chunk = 300
{extra}
"""

CONFIG_2D = """
[mesh]
x_min = [-3.0, -2.5]
x_max = [3.0, 2.5]
nodes = [13, 11]
layers = 6
[model]
nu = 0.1
eta = 0.1
running = "congestion"
kappa = 0.3
[[classes]]
prior = 0.5
mean = [-0.5, 0.2]
var = [0.09, 0.16]
[[classes]]
prior = 0.5
mean = [0.5, -0.1]
var = [[0.09, 0.02], [0.02, 0.12]]
[loss]
kind = "softmax"
weights = [[-1.0, 0.3], [1.0, -0.2]]
gamma = 2.0
[solver]
guess = "optimisation"
optimisation_chunk = 300
{extra}
"""


def _solve(tmp_path, name, text, n, extra="", options=()):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(text.format(extra=extra))
    out = tmp_path / name
    run_cli(n, ["solve", cfg, "--out", out, "--no-checkpoint", *options], timeout=900)
    s = json.loads((out / "summary.json").read_text())
    with h5py.File(out / "solution.h5", "r") as f:
        return s, f["rho"][()], f["phi"][()]


@pytest.mark.parametrize("dim", [1, 2])
def test_the_route_reaches_the_same_solution_on_one_and_two_ranks(tmp_path, dim):
    """``solver.guess = "optimisation"``: TAO on the distributed tilts, then Newton; on 2
    ranks once with the mesh split along depth (the tilts on the mesh's ranges) and once
    along a state axis (the KKT state scattered into the mesh)."""
    text = CONFIG_1D if dim == 1 else CONFIG_2D
    runs = {"1": _solve(tmp_path, "one", text, 1)}
    for name, grid in (("depth", [1] * dim + [2]), ("state", [2] + [1] * dim)):
        runs[name] = _solve(tmp_path, name, text, 2, f"process_grid = {grid}")
    s1, rho1, phi1 = runs["1"]
    for name, (s, rho, phi) in runs.items():
        assert s["converged"], (name, s["failure"])
        st = s["newton"][-1]["stages"]
        assert st[0]["param"] == "optimisation" and st[-1]["converged"], name
        assert st[-1]["lbfgs"]["tao_type"] == "blmvm"
        assert s["diagnostics"]["cost"]["total"] < 0.9 * s["zero_network_cost"]["total"]
        assert np.abs(rho - rho1).max() <= 1e-9 * np.abs(rho1).max(), name
        assert np.abs(phi - phi1).max() <= 1e-9 * np.abs(phi1).max(), name
    assert runs["depth"][0]["process_grid"] == [1] * dim + [2]


def test_more_ranks_than_depth_levels(tmp_path):
    """One layer (two levels) on 3 ranks: the first two hold the tilts, the third waits;
    the same solution as on one rank."""
    text = CONFIG_1D.replace("layers = 11", "layers = 1").replace("gamma = 3.0", "gamma = 0.5")
    s1, rho1, _ = _solve(tmp_path, "one", text, 1)
    s3, rho3, _ = _solve(tmp_path, "three", text, 3)
    for s in (s1, s3):
        assert s["converged"] and s["newton"][-1]["stages"][0]["param"] == "optimisation"
        assert s["newton"][-1]["stages"][0]["converged"]
    assert np.abs(rho3 - rho1).max() <= 1e-9 * np.abs(rho1).max()


SYMMETRIC = """
[mesh]
x_min = -4.0
x_max = 4.0
nodes = 129
layers = 32
[model]
nu = 0.02
eta = 0.1
[[classes]]
prior = 0.5
mean = -0.5
var = 0.09
[[classes]]
prior = 0.5
mean = 0.5
var = 0.09
[loss]
kind = "softmax"
weights = [-1.0, 1.0]
gamma = 5.0
[solver]
guess = "optimisation"
optimisation_chunk = 500
{extra}
"""


def test_a_symmetric_problem_gets_the_same_asymmetric_minimiser_on_1_2_and_3_ranks(tmp_path):
    """The two-class problem of test_two_class past its fold (gamma 5, nu 0.02) is mirror
    symmetric (x -> -x with the classes swapped), and so is its zero network; its minimiser
    is not: there are two, mirror images of each other. The start perturbation
    (``solver.optimisation_perturbation``, the same on every rank count) decides which one,
    not round-off: 1, 2 and 3 ranks (2 and 3 with the mesh split along depth and along the
    nodes) reach the same one."""
    runs = [_solve(tmp_path, "one", SYMMETRIC, 1), _solve(tmp_path, "two", SYMMETRIC, 2, "process_grid = [1, 2]"),
            _solve(tmp_path, "three", SYMMETRIC, 3, "process_grid = [3, 1]")]
    ref = runs[0][1]
    for s, rho, phi in runs:
        assert s["converged"], s["failure"]
        assert [st["param"] for st in s["newton"][-1]["stages"]] == ["optimisation"] * len(s["newton"][-1]["stages"])
        assert np.abs(rho - ref).max() <= 1e-9 * np.abs(ref).max()
    mirrored = ref[:, ::-1, ::-1]  # classes swapped, x -> -x
    assert np.abs(ref - mirrored).max() > 1e-2 * np.abs(ref).max()  # the minimiser is not symmetric
    assert runs[0][0]["diagnostics"]["cost"]["total"] < 0.7 * runs[0][0]["zero_network_cost"]["total"]


def test_tao_options_have_their_own_prefix(tmp_path):
    """``-mfc_tao_tao_type lmvm`` reaches the route's TAO (and is reported as used); an
    unknown type is a one-line error on every rank."""
    s, _, _ = _solve(tmp_path, "lmvm", CONFIG_1D, 2, options=["-mfc_tao_tao_type", "lmvm"])
    assert s["converged"]
    assert s["newton"][-1]["stages"][-1]["lbfgs"]["tao_type"] == "lmvm"
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG_1D.format(extra=""))
    p = run_cli(2, ["solve", cfg, "--out", tmp_path / "bad", "--no-checkpoint", "-mfc_tao_tao_type", "nosuch"],
                check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("mfc-hpc: error:")]
    assert err and all("mfc_tao_" in ln for ln in err) and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_iris_strong_loss_little_noise_converges(tmp_path):
    """The release's hard corner on the shipped data, on 2 ranks: gamma = 10, nu = 0.01
    (mfc_hpc/examples/iris_hard.toml, 65 x 128, three classes, solver.guess =
    "optimisation"). The route must end in a converged KKT point with positive densities,
    a cost below 0.7 x the zero network's and an invertible, Markov network."""
    cfg = REPO / "mfc_hpc" / "examples" / "iris_hard.toml"
    out = tmp_path / "o"
    run_cli(2, ["solve", cfg, "--out", out, "--no-checkpoint"], timeout=1500)
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"], s["failure"]
    assert (s["config"]["model"]["nu"], s["config"]["loss"]["gamma"]) == (0.01, 10.0)
    st = s["newton"][-1]["stages"]
    assert st[-1]["param"] == "optimisation" and st[-1]["converged"]
    assert st[-1]["residuals"][-1] < 1e-9
    dg = s["diagnostics"]
    assert dg["min_density"] > 0.0
    assert dg["cost"]["total"] < 0.7 * s["zero_network_cost"]["total"]
    assert dg["dt_max_compression"] < 1.0 and dg["dt_max_outflow_rate"] <= 2.0


def test_benchmark_script_smoke(tmp_path):
    """scripts/bench_optimisation.py --quick: both rank counts, a table and its JSON."""
    import subprocess
    import sys

    from conftest import mpi_env

    out = tmp_path / "b.json"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_optimisation.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=mpi_env(), cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "| d1_small | 17,028 | 2 |" in p.stdout
    d = json.loads(out.read_text())
    rows = {(r["name"], r["ranks"]): r for r in d["rows"]}
    assert set(rows) == {("d1_small", 1), ("d1_small", 2), ("d2_small", 1), ("d2_small", 2)}
    assert all(r["per_evaluation"] > 0 for r in rows.values())
    # the same network and problem on both rank counts: the same cost
    for name in ("d1_small", "d2_small"):
        costs = [x["cost"] for x in d["runs"] if x["name"] == name]
        assert costs[0] == pytest.approx(costs[1], rel=1e-12)
