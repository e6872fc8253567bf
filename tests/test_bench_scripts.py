"""The benchmark and scaling scripts in their quick modes, and the memory planner.

They check structure and sanity (counts, positive times, matrix entries allocated vs set,
the planner's answer fits its own model and grows with the memory), not speed: speed is
measured by the scripts themselves.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PYTHON, REPO, mpi_env

from mfc_hpc.studies.perf import (RATES_PATH, SOLVERS, auto_solver, case_mesh, case_unknowns, fit_power, job_bytes, load_rates,
                                  model_for, parse_bytes, parse_mesh, plan, solver_options, stream_triad)

SCRIPTS = REPO / "scripts"
BENCH_2D = REPO / "mfc_hpc" / "examples" / "bench_2d.toml"


def _run(args: list, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([PYTHON] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=mpi_env(), cwd=REPO)
    if p.returncode != 0:
        pytest.fail(f"{args} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.mark.mpi
def test_bench_solver_quick_1d(tmp_path):
    out = tmp_path / "bench.json"
    p = _run([SCRIPTS / "bench_solver.py", "--quick", "--sizes", "65x16",
              "--solvers", "mumps,gmres_bjacobi_ilu2_levels", "--ranks", "1,2", "--out", out])
    assert "s/it" in p.stdout  # the table was printed
    doc = json.loads(out.read_text())
    cases = doc["cases"]
    assert len(cases) == 4
    for c in cases:
        assert c["converged"], c
        assert c["unknowns"] == 2 * 65 * 17 and c["ndim"] == 1 and c["classes"] == 1
        m = c["median"]
        assert m["newton_iterations"] >= 1
        assert len(m["linear_per_newton"]) == m["newton_iterations"]
        assert sum(m["linear_per_newton"]) == m["linear_iterations"]
        pi = m["per_iteration"]
        assert all(pi[k] > 0 for k in ("residual", "jacobian", "linear_solve", "total"))
        # each phase is the slowest rank's, so their sum may exceed the slowest total a little
        assert pi["residual"] + pi["jacobian"] + pi["linear_solve"] <= 1.5 * pi["total"] + 0.01
        assert 0 < m["assembly_fraction"] < 1
        assert c["rss_peak_max"] > 10 * 2**20 and c["rss_peak_sum"] >= c["rss_peak_max"]
        assert c["bytes_per_unknown"] > 0
        assert c["import"] > 0 and c["startup"] > 0
        assert len(c["repeats_data"]) == 1
        shares = c["repeats_data"][0]["cpu_fraction_ranks"]
        assert len(shares) == c["ranks"] and all(0 < s <= 1.05 for s in shares)
        assert c["matrix"]["allocated_per_row"] == pytest.approx(c["matrix"]["set_per_row"])
    assert {c["ranks"] for c in cases} == {1, 2}
    two = [c for c in cases if c["ranks"] == 2 and c["solver"] == "gmres_bjacobi_ilu2_levels"][0]
    assert two["process_grid"] == [1, 2]  # split along depth, as the configuration asks
    # the planner's rates can be fitted from such a file
    rates_out = tmp_path / "rates.json"
    _run([SCRIPTS / "bench_solver.py", "--write-rates", out, "--rates-out", rates_out])
    rates = json.loads(rates_out.read_text())
    assert rates["format"] == 2
    assert {(m["solver"], m["ndim"], m["classes"]) for m in rates["models"]} == \
        {("mumps", 1, 1), ("gmres_bjacobi_ilu2_levels", 1, 1)}
    assert rates["rank_baseline_bytes"] > 0
    ans = plan(parse_bytes("4G"), 2, solver="mumps", rates=rates)
    assert ans["bytes"] <= 0.8 * parse_bytes("4G")


@pytest.mark.mpi
def test_bench_solver_quick_2d_allocated_vs_set(tmp_path):
    """Two classes in 2-D, the package's default, on the DMDA's box and on the exact
    pattern: the box allocates every point of the 27-point box (and stores its zeros), the
    exact matrix exactly the entries the scheme sets; the Newton and linear iterations are
    the same."""
    out = tmp_path / "b2.json"
    _run([SCRIPTS / "bench_solver.py", "--config", BENCH_2D, "--sizes", "9x9x4", "--solvers", "default",
          "--preallocation", "box,exact", "--ranks", "1,2", "--repeats", "1", "--out", out])
    cases = json.loads(out.read_text())["cases"]
    assert len(cases) == 4
    by = {(c["preallocation"], c["ranks"]): c for c in cases}
    for (pre, P), c in by.items():
        assert c["converged"] and c["ndim"] == 2 and c["classes"] == 2
        assert c["unknowns"] == case_unknowns((9, 9), 4, 2)
        mi = c["matrix"]
        if pre == "exact":
            assert mi["allocated_per_row"] == pytest.approx(mi["set_per_row"])
        else:
            assert mi["allocated_per_row"] > 2 * mi["set_per_row"]
        # at most 2(2d+1) points of 2K fields per row
        assert mi["set_per_row"] <= 2 * 5 * 4
    for P in (1, 2):
        b, e = by[("box", P)]["median"], by[("exact", P)]["median"]
        assert b["newton_iterations"] == e["newton_iterations"]
        assert by[("box", P)]["matrix"]["set_per_row"] == pytest.approx(by[("exact", P)]["matrix"]["set_per_row"])


@pytest.fixture(scope="module")
def scaling_quick(tmp_path_factory):
    """A quick strong and weak scaling study on 1 and 2 ranks (its output directory)."""
    out = tmp_path_factory.mktemp("scaling")
    p = _run([SCRIPTS / "scaling_study.py", "run", "--quick", "--ranks", "1,2", "--out", out])
    (out / "stdout.txt").write_text(p.stdout)
    return out


@pytest.mark.mpi
def test_scaling_study_quick(scaling_quick):
    tmp_path = scaling_quick
    for kind in ("strong", "weak"):
        doc = json.loads((tmp_path / f"{kind}.json").read_text())
        failed = [c for c in doc["cases"] if "error" in c]
        assert not failed, [(c["ranks"], c["error"], c.get("output_tail")) for c in failed]
        rows = doc["table"]
        assert [r["ranks"] for r in rows] == [1, 2]
        for r in rows:
            assert r["converged"] and r["time"] > 0 and r["efficiency"] > 0
            assert set(r["phases"]) == {"residual", "jacobian", "linear_solve", "other", "setup", "io"}
            assert r["phases"]["io"] > 0  # solution.h5 was written
            assert r["startup"] > 0 and r["import"] > 0
            assert len(r["cpu_fraction_ranks"][0]) == r["ranks"]
        if kind == "strong":
            assert rows[0]["unknowns"] == rows[1]["unknowns"]
            assert rows[0]["speedup"] == pytest.approx(1.0)
        else:
            assert rows[1]["layers"] == 2 * rows[0]["layers"]
    _run([SCRIPTS / "scaling_study.py", "plot", "--out", tmp_path])
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


@pytest.mark.mpi
def test_scaling_study_records_bandwidth_ceiling(scaling_quick):
    """Before and after the launches, P triads at once: per-copy and aggregate bandwidths
    (positive, bytes/s) and ``ceiling = aggregate(P) / aggregate(1)``, 1 at P = 1; the
    table's ``bw_ceil`` is the mean of the two probes."""
    if compile_triad_available() is False:
        pytest.skip("no C compiler: the study records bandwidth = null")
    for kind in ("strong", "weak"):
        doc = json.loads((scaling_quick / f"{kind}.json").read_text())
        bw = doc["bandwidth"]
        assert bw is not None, doc.get("bandwidth_note")
        for probe in ("before", "after"):
            ranks = bw[probe]["ranks"]
            assert set(ranks) == {"1", "2"}
            for P, rec in ranks.items():
                assert len(rec["per_copy"]) == rec["copies"] == int(P)
                assert all(b > 1e8 for b in rec["per_copy"])
                assert rec["aggregate"] == pytest.approx(sum(rec["per_copy"]))
                assert rec["ceiling"] > 0
            assert ranks["1"]["ceiling"] == 1.0
            assert ranks["2"]["ceiling"] == pytest.approx(ranks["2"]["aggregate"] / ranks["1"]["aggregate"])
        for row in doc["table"]:
            cb = [bw[p]["ranks"][str(row["ranks"])]["ceiling"] for p in ("before", "after")]
            assert row["bw_ceil"] == pytest.approx(0.5 * sum(cb))
    out = (scaling_quick / "stdout.txt").read_text()
    assert "bw_ceil" in out and "memory-bandwidth ceiling" in out and "(before/after)" in out


def compile_triad_available() -> bool:
    import shutil
    return bool(shutil.which("cc") or shutil.which("gcc"))


def _fits_and_is_largest(rates, ans, mem, ranks, K, d):
    budget = 0.8 * parse_bytes(mem)
    assert ans["bytes"] <= budget  # fits by its own model
    assert ans["unknowns"] == case_unknowns(ans["nodes"], ans["layers"], K)
    assert all(n - 1 == round(ans["aspect"] * ans["layers"]) for n in ans["nodes"])
    assert ans["seconds"] > 0 and ans["ndim"] == d
    # the next larger mesh would not fit (with the solver the size rule picks for it)
    N = ans["layers"] + 1
    nodes = (int(round(ans["aspect"] * N)) + 1,) * d
    assert job_bytes(rates, auto_solver(nodes, N, K), case_unknowns(nodes, N, K), ranks, K, d) > budget
    assert ans["solver"] == auto_solver(ans["nodes"], ans["layers"], K)


def test_packaged_rates_and_plan_fit_and_monotone():
    rates = load_rates()
    assert RATES_PATH.is_file() and rates["format"] == 2
    for d in (1, 2):
        for K in (1, 2):
            prev = 0
            for mem in ("2G", "16G", "256G", "4T"):
                for ranks in (1, 16, 128):
                    if ranks * rates["rank_baseline_bytes"] > 0.8 * parse_bytes(mem):
                        continue
                    ans = plan(parse_bytes(mem), ranks, classes=K, ndim=d, rates=rates)
                    assert ans["solver"] in ("direct", "multigrid")
                    _fits_and_is_largest(rates, ans, mem, ranks, K, d)
                big = plan(parse_bytes(mem), 1, classes=K, ndim=d, rates=rates)["unknowns"]
                assert big >= prev  # monotone in memory
                prev = big
        two = plan(parse_bytes("256G"), 16, classes=2, ndim=d, rates=rates)
        one = plan(parse_bytes("256G"), 16, classes=1, ndim=d, rates=rates)
        assert two["layers"] < one["layers"]


def test_plan_command(tmp_path):
    p = _run(["-m", "mfc_hpc", "plan", "--memory", "256G", "--ranks", "128", "--json"])
    ans = json.loads(p.stdout[p.stdout.index("{"):])
    assert ans["ranks"] == 128 and ans["bytes"] <= 0.8 * 256 * 2**30 and ans["ndim"] == 1
    p = _run(["-m", "mfc_hpc", "plan", "--memory", "24G", "--ranks", "2", "--dim", "2", "--classes", "2"])
    assert "largest mesh: nodes" in p.stdout and "d = 2" in p.stdout
    p = _run(["-m", "mfc_hpc", "plan", "--memory", "24G", "--ranks", "2", "--config", BENCH_2D, "--json"])
    ans = json.loads(p.stdout[p.stdout.index("{"):])
    assert ans["ndim"] == 2 and ans["classes"] == 2 and len(ans["nodes"]) == 2
    for args, words in ((["--memory", "lots"], "memory size"),
                        (["--memory", "4G", "--ranks", "0"], "--ranks"),
                        (["--memory", "4G", "--solver", "nope"], "no measured rates for solver 'nope'"),
                        (["--memory", "4G", "--rates", str(tmp_path / "none.json")], "no measured rates at"),
                        (["--memory", "4G", "--config", str(BENCH_2D), "--dim", "1"], "disagrees")):
        bad = subprocess.run([PYTHON, "-m", "mfc_hpc", "plan", *args], capture_output=True, text=True,
                             env=mpi_env(), cwd=REPO, timeout=60)
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)
        assert bad.stderr.startswith("mfc-hpc: error:") and len(bad.stderr.strip().splitlines()) == 1


def test_rates_of_the_1d_release_are_read():
    """A format-1 rates file (the 1-D release's) still plans: 1-D, one class, its
    ``mumps`` / ``fgmres_mg_levels`` models standing for ``direct`` / ``multigrid``."""
    old = {"machine": "old", "rank_baseline_bytes": 7e7, "default_solver": "mumps", "solvers": {
        "mumps": {"bytes_per_unknown": {"a": 2600.0, "p": 0.0}, "seconds_per_iteration": {"a": 1e-6, "p": 1.2},
                  "newton_iterations": 4},
        "fgmres_mg_levels": {"bytes_per_unknown": {"a": 1600.0, "p": 0.0},
                             "seconds_per_iteration": {"a": 3e-7, "p": 1.1}, "newton_iterations": 4}}}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "old.json"
        f.write_text(json.dumps(old))
        rates = load_rates(f)
    assert model_for(rates, "direct", 1, 1)["bytes_per_unknown"]["a"] == 2600.0
    ans = plan(parse_bytes("16G"), 2, rates=rates)
    assert ans["solver"] == "multigrid" and ans["bytes"] <= 0.8 * parse_bytes("16G")
    with pytest.raises(ValueError, match="in 2-D"):
        plan(parse_bytes("16G"), 2, ndim=2, rates=rates)


def test_helpers():
    assert parse_bytes("256G") == 256 * 2**30 and parse_bytes("1.5T") == 1.5 * 2**40
    assert parse_bytes("512MiB") == 512 * 2**20
    for bad in ("lots", "-4G", "0", "nan"):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)
    a, p = fit_power([1e3, 1e4, 1e5], [2e3, 2e4, 2e5])
    assert p == pytest.approx(1.0) and a == pytest.approx(2.0)
    nodes, N = case_mesh(1e6)
    assert nodes[0] - 1 == 4 * N and abs(case_unknowns(nodes, N, 1) - 1e6) < 0.05e6
    nodes, N = case_mesh(4.3e6, ndim=2, classes=2)
    assert nodes == (129, 129) and N == 64  # the 129^2 x 65 points, two classes
    assert parse_mesh("129x32") == ((129,), 32) and parse_mesh("65x33x16") == ((65, 33), 16)
    with pytest.raises(ValueError, match="mesh"):
        parse_mesh("129")
    for name in SOLVERS:
        for d in (1, 2):
            opts = solver_options(name, d)
            assert all(o.startswith("-mfc_") for o in opts[::2])
    for name, c in SOLVERS.items():  # an options-only multigrid must say its levels, or PCMG runs one
        if c.package is None and "pc_type mg" in c.options:
            assert "pc_mg_levels" in c.options, name
    lv = solver_options("fgmres_mg_levels", 2)
    assert "-mfc_da_processors_x" in lv and "-mfc_da_processors_y" in lv and "-mfc_da_processors_z" not in lv
    with pytest.raises(ValueError):
        solver_options("nope")
    bw = stream_triad(n=200_000, repeats=2)
    assert bw["numpy_naive"] > 1e8 and bw["numpy_inplace"] > 1e8


@pytest.mark.mpi
def test_gradient_benchmark_hook(tmp_path):
    """``--gradient`` times the optimisation route's cost-and-gradient evaluation (the
    serial one until the distributed minimiser provides ``distributed_gradient``)."""
    out = tmp_path / "g.json"
    p = _run([SCRIPTS / "bench_solver.py", "--gradient", "--sizes", "65x16", "--ranks", "1,2", "--repeats", "2",
              "--out", out])
    assert "per cost-and-gradient evaluation" in p.stdout
    cases = json.loads(out.read_text())["cases"]
    assert [c["ranks"] for c in cases] == [1, 2]
    for c in cases:
        assert c["kind"] == "gradient" and c["route"] in ("serial", "distributed")
        assert len(c["gradient_seconds"]) == 2 and c["median"]["gradient"] > 0


def test_continuation_path_script_reports_every_leg(tmp_path):
    """scripts/continuation_path.py (the fold table of deep_learning.md) on a tiny iris mesh:
    every leg is reached and recorded with its diagnostics."""
    out = tmp_path / "path.json"
    _run([SCRIPTS / "continuation_path.py", REPO / "mfc_hpc" / "examples" / "iris.toml", "--nodes", "33",
          "--layers", "8", "--nu-start", "0.1", "--loss-first", "0.5", "--out", out])
    d = json.loads(out.read_text())
    assert d["reached"] == pytest.approx({"loss 0->0.5": 0.5, "nu 0.1->0.05": 0.05, "loss 0.5->1": 1.0})
    assert d["stages"][-1]["converged"] and d["stages"][-1]["min_density"] > 0
    assert all(s["dt_max_outflow"] > 0 for s in d["stages"])


@pytest.mark.mpi
def test_bench_checkpoint_and_verify_scripts(tmp_path):
    """The checkpoint bandwidth script (2-D state, 1 and 2 ranks) and the verification
    table (two meshes: second order in the closed form's density error)."""
    _run([SCRIPTS / "bench_checkpoint.py", "--ranks", "1,2", "--repeats", "1", "--unknowns", "2e4", "--dim", "2",
          "--json", tmp_path / "ck.json"])
    rows = json.loads((tmp_path / "ck.json").read_text())["rows"]
    assert [r["ranks"] for r in rows] == [1, 2] and all(r["write_MBps"] > 0 and r["read_MBps"] > 0 for r in rows)
    _run([SCRIPTS / "verify_solver.py", "--meshes", "33x8,65x16", "--layers", "8,16", "--out", tmp_path / "v"])
    v = json.loads((tmp_path / "v" / "verify_solver.json").read_text())
    assert 1.7 < v["closed_form"][1]["order_density_L1"] < 2.3
    assert 3.5 < v["hamiltonian"][1]["ratio"] < 4.5
