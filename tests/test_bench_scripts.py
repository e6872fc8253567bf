"""The benchmark and scaling scripts in their quick modes, and the memory planner.

They check structure and sanity (counts, positive times, the planner's answer fits its own
model and grows with the memory), not speed: speed is measured by the scripts themselves.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PYTHON, REPO, mpi_env

from mfc_hpc.perf import (RATES_PATH, SOLVERS, case_mesh, fit_power, job_bytes, load_rates,
                          parse_bytes, plan, solver_options, stream_triad)

SCRIPTS = REPO / "scripts"


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run([PYTHON] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=mpi_env(), cwd=REPO)
    if p.returncode != 0:
        pytest.fail(f"{args} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.mark.mpi
def test_bench_solver_quick(tmp_path):
    out = tmp_path / "bench.json"
    p = _run([SCRIPTS / "bench_solver.py", "--quick", "--sizes", "65x16",
              "--solvers", "mumps,gmres_bjacobi_ilu2_levels", "--ranks", "1,2", "--out", out])
    assert "s/it" in p.stdout  # the table was printed
    doc = json.loads(out.read_text())
    cases = doc["cases"]
    assert len(cases) == 4
    for c in cases:
        assert c["converged"], c
        assert c["unknowns"] == 2 * c["nodes"] * (c["layers"] + 1) == 2 * 65 * 17
        m = c["median"]
        assert m["newton_iterations"] >= 1
        pi = m["per_iteration"]
        assert all(pi[k] > 0 for k in ("residual", "jacobian", "linear_solve", "total"))
        # each phase is the slowest rank's, so their sum may exceed the slowest total a little
        assert pi["residual"] + pi["jacobian"] + pi["linear_solve"] <= 1.5 * pi["total"] + 0.01
        assert 0 < m["assembly_fraction"] < 1
        assert c["rss_peak_max"] > 10 * 2**20 and c["rss_peak_sum"] >= c["rss_peak_max"]
        assert c["bytes_per_unknown"] > 0
        assert c["import"] > 0 and c["startup"] > 0
        assert len(c["repeats_data"]) == 1
    assert {c["ranks"] for c in cases} == {1, 2}
    two = [c for c in cases if c["ranks"] == 2 and c["solver"] == "gmres_bjacobi_ilu2_levels"][0]
    assert two["process_grid"] == [1, 2]  # split along depth, as the configuration asks
    # the planner's rates can be fitted from such a file
    rates_out = tmp_path / "rates.json"
    _run([SCRIPTS / "bench_solver.py", "--write-rates", out, "--rates-out", rates_out])
    rates = json.loads(rates_out.read_text())
    assert set(rates["solvers"]) == {"mumps", "gmres_bjacobi_ilu2_levels"}
    assert rates["rank_baseline_bytes"] > 0
    ans = plan(parse_bytes("4G"), 2, rates=rates)
    assert ans["bytes"] <= 0.8 * parse_bytes("4G")


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


def test_packaged_rates_and_plan_fit_and_monotone():
    rates = load_rates()
    assert RATES_PATH.is_file() and rates["default_solver"] in rates["solvers"]
    for solver in rates["solvers"]:
        prev = 0
        for mem in ("2G", "16G", "256G", "4T"):
            for ranks in (1, 16, 128):
                if ranks * rates["rank_baseline_bytes"] > 0.8 * parse_bytes(mem):
                    continue
                ans = plan(parse_bytes(mem), ranks, solver=solver, rates=rates)
                assert ans["bytes"] <= 0.8 * parse_bytes(mem)  # fits by its own model
                assert ans["unknowns"] == 2 * ans["nodes"] * (ans["layers"] + 1)
                assert ans["nodes"] - 1 == 4 * ans["layers"]
                assert ans["seconds"] > 0
                # the next larger mesh would not fit
                N = ans["layers"] + 1
                assert job_bytes(rates, solver, 2 * (4 * N + 1) * (N + 1), ranks) > 0.8 * parse_bytes(mem)
            big = plan(parse_bytes(mem), 1, solver=solver, rates=rates)["unknowns"]
            assert big >= prev  # monotone in memory
            prev = big
        two = plan(parse_bytes("256G"), 16, classes=2, solver=solver, rates=rates)
        one = plan(parse_bytes("256G"), 16, classes=1, solver=solver, rates=rates)
        assert two["nodes"] * two["layers"] < one["nodes"] * one["layers"]


def test_plan_command():
    p = _run(["-m", "mfc_hpc", "plan", "--memory", "256G", "--ranks", "128", "--json"])
    ans = json.loads(p.stdout[p.stdout.index("{"):])
    assert ans["ranks"] == 128 and ans["bytes"] <= 0.8 * 256 * 2**30
    p = _run(["-m", "mfc_hpc", "plan", "--memory", "256G", "--ranks", "128", "--classes", "2"])
    assert "largest mesh" in p.stdout
    bad = subprocess.run([PYTHON, "-m", "mfc_hpc", "plan", "--memory", "lots"], capture_output=True,
                         text=True, env=mpi_env(), cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "memory size" in bad.stderr


def test_helpers():
    assert parse_bytes("256G") == 256 * 2**30 and parse_bytes("1.5T") == 1.5 * 2**40
    assert parse_bytes("512MiB") == 512 * 2**20
    a, p = fit_power([1e3, 1e4, 1e5], [2e3, 2e4, 2e5])
    assert p == pytest.approx(1.0) and a == pytest.approx(2.0)
    M, N = case_mesh(1e6)
    assert M - 1 == 4 * N and abs(2 * M * (N + 1) - 1e6) < 0.05e6
    for name in SOLVERS:
        opts = solver_options(name)
        assert all(o.startswith("-mfc_") for o in opts[::2])
    with pytest.raises(ValueError):
        solver_options("nope")
    # without --solver the planner models what solver.linear = "auto" runs at that size
    rates = load_rates()
    assert plan(parse_bytes("256G"), 128, rates=rates)["solver"] == "fgmres_mg_levels"
    assert plan(parse_bytes("256G"), 128, classes=3, rates=rates)["solver"] == rates["default_solver"]
    bw = stream_triad(n=200_000, repeats=2)
    assert bw["numpy_naive"] > 1e8 and bw["numpy_inplace"] > 1e8


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
