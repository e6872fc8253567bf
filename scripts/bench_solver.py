#!/usr/bin/env python
"""Benchmark of the Newton solver for any state dimension: iterations (Newton, and linear
per Newton step), time per iteration by phase, matrix entries allocated vs set per row,
peak memory.

For every mesh x linear-solver configuration x Jacobian preallocation x rank count it
launches one ``mpiexec -n P python -m mfc_hpc.studies.perf`` process group (so peak memory
is per case) that builds the solver, computes the uncontrolled initial guess and runs
Newton ``--repeats`` times; the table quotes medians of the repeats and the slowest
rank's time of each phase.

    source scripts/env.sh
    python scripts/bench_solver.py --quick                          # smoke run, ~20 s
    python scripts/bench_solver.py --out results/bench.json         # 1-D closed form, 1e4 .. 1e6 unknowns
    python scripts/bench_solver.py --config mfc_hpc/examples/bench_2d.toml --sizes 33x33x16,65x65x32 \\
        --solvers default --ranks 1,2 --out results/bench_2d.json   # 2-D, two classes
    python scripts/bench_solver.py --preallocation box,exact --sizes 705x176 --solvers default ...
    python scripts/bench_solver.py --assembly 65x65x32 --config mfc_hpc/examples/bench_2d.toml
    python scripts/bench_solver.py --bandwidth --bandwidth-size 65x65x32 --config mfc_hpc/examples/bench_2d.toml
    python scripts/bench_solver.py --grid-levels 2 --sizes 129x129x64 --config mfc_hpc/examples/bench_2d.toml
    python scripts/bench_solver.py --gradient --sizes 1409x352 --ranks 1,2     # optimisation route
    python scripts/bench_solver.py --write-rates results/bench.json results/bench_2d.json   # refit perf_rates.json
    python scripts/bench_solver.py --report results/bench.json      # Markdown tables

Sizes are ``NODESxLAYERS`` (1-D) or ``NODES1xNODES2xLAYERS`` (2-D) of ``--config`` (default:
the one-class closed form, ``2 K M (N+1)`` unknowns). Solver names are those of
:data:`mfc_hpc.studies.perf.SOLVERS` (``default``: the package's choice for the mesh).
``--preallocation box`` gives the Jacobian the DMDA's full box stencil (the layout of the
1-D releases, ``-mfc_jacobian_preallocation box``), ``exact`` the entries the scheme sets.
``--launcher`` is a template such as ``"srun -n {n}"`` (default ``mpiexec -n {n}``).
The JSON holds every case with every repeat; ``--write-rates`` fits the model that
``mfc-hpc plan`` uses and writes it into the package.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mfc_hpc.studies.perf import (RATES_FORMAT, RATES_PATH, SOLVERS, fit_power, format_mesh,  # noqa: E402
                                  parse_mesh)

DEFAULT_CONFIG = REPO / "mfc_hpc" / "examples" / "closed_form.toml"
DEFAULT_SIZES = {1: "129x32,257x64,513x128,1025x256,1409x352", 2: "17x17x8,33x33x16,65x65x32,129x129x64"}
QUICK_SIZES = {1: "65x16,129x32", 2: "9x9x4,17x17x8"}


def config_dim(config: str | Path) -> tuple[int, int]:
    """``(d, K)`` of a configuration file (read without building the problem)."""
    from mfc_hpc.config import load_config

    cfg = load_config(config)
    return cfg.ndim, (cfg.K or 0)


def parse_sizes(s: str, ndim: int | None = None) -> list[tuple[tuple[int, ...], int]]:
    out = []
    for tok in s.split(","):
        nodes, N = parse_mesh(tok)
        if ndim is not None and len(nodes) != ndim:
            raise SystemExit(f"bench_solver: mesh {tok!r} has {len(nodes)} state axes, the configuration {ndim}")
        out.append((nodes, N))
    return out


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    if os.geteuid() == 0:
        e["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        e["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    e.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    e.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    return e


def run_case(case: dict, ranks: int, launcher: str, extra: list[str], timeout: float,
             python: str = sys.executable) -> dict:
    """Launch one case on ``ranks`` ranks; returns its record (or a failure record)."""
    with tempfile.TemporaryDirectory() as tmp:
        cpath, opath = Path(tmp, "case.json"), Path(tmp, "out.json")
        case = dict(case, t_launch=time.time())
        if case.get("io"):
            case["io_dir"] = tmp
        cpath.write_text(json.dumps(case))
        opts = list(extra)
        if case.get("preallocation"):
            opts += ["-mfc_jacobian_preallocation", case["preallocation"]]
        cmd = shlex.split(launcher.format(n=ranks)) + [python, "-m", "mfc_hpc.studies.perf", str(cpath),
                                                       str(opath)] + opts
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
            rc, tail = p.returncode, (p.stdout + p.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            rc, tail = "timeout", f"timed out after {timeout:.0f} s"
        wall = time.perf_counter() - t
        if rc == 0 and opath.is_file():
            rec = json.loads(opath.read_text())
            rec["launch_wall"] = wall
            return rec
        return {**{k: v for k, v in case.items() if k != "t_launch"}, "ranks": ranks, "converged": False,
                "error": f"exit {rc}", "output_tail": tail, "launch_wall": wall}


# ----------------------------------------------------------------------------- tables

def fmt_bytes(b: float) -> str:
    return f"{b / 2**20:.0f}M" if b < 2**30 else f"{b / 2**30:.2f}G"


def mesh_of(r: dict) -> str:
    return format_mesh(r["nodes"], r["layers"])


def _key(r: dict) -> tuple:
    return (r["solver"], mesh_of(r), r.get("preallocation"))


def _lin(m: dict) -> str:
    lp = m.get("linear_per_newton") or []
    return "/".join(map(str, lp)) if lp else ""


def table(records: list[dict]) -> str:
    head = (f"{'solver':18s} {'prealloc':8s} {'mesh':>12s} {'unknowns':>9s} {'P':>2s} {'newton':>6s} {'lin/step':>12s} "
            f"{'s/it':>7s} {'resid':>6s} {'jac':>6s} {'linsol':>7s} {'asm%':>5s} {'total s':>8s} "
            f"{'alloc/row':>9s} {'set/row':>7s} {'peak/rank':>9s} {'B/unk':>6s} {'speedup':>7s} {'cpu%':>9s}")
    lines = [head, "-" * len(head)]
    t1 = {_key(r): r["median"]["total"] for r in records
          if r.get("ranks") == 1 and r.get("converged") and "median" in r and "total" in r["median"]}
    seq = [r for r in records if r.get("grid_levels")]
    for r in records:
        if r.get("grid_levels") or r.get("kind") == "gradient":
            continue
        pre = r.get("preallocation") or "exact"
        if "median" not in r:
            lines.append(f"{r['solver']:18s} {pre:8s} {mesh_of(r):>12s} {'':>9s} {r['ranks']:>2d}  FAILED: "
                         f"{r.get('error', '')}")
            continue
        m = r["median"]
        pi = m.get("per_iteration", {})
        s1 = t1.get(_key(r))
        sp = f"{s1 / m['total']:.2f}" if s1 and r["ranks"] > 1 else ""
        ok = "" if r.get("converged") else " (not converged)"
        mi = r.get("matrix") or {}
        cpu = "/".join(f"{100 * c:.0f}" for c in r["repeats_data"][0].get("cpu_fraction_ranks", [])) \
            if r.get("repeats_data") else ""
        lines.append(
            f"{r['solver']:18s} {pre:8s} {mesh_of(r):>12s} {r['unknowns']:>9d} {r['ranks']:>2d} "
            f"{m['newton_iterations']:>6.0f} {_lin(m):>12s} {pi.get('total', 0):>7.3f} {pi.get('residual', 0):>6.3f} "
            f"{pi.get('jacobian', 0):>6.3f} {pi.get('linear_solve', 0):>7.3f} "
            f"{100 * m.get('assembly_fraction', 0):>5.1f} {m['total']:>8.2f} "
            f"{mi.get('allocated_per_row', float('nan')):>9.2f} {mi.get('set_per_row', float('nan')):>7.2f} "
            f"{fmt_bytes(r['rss_peak_max']):>9s} {r['bytes_per_unknown']:>6.0f} {sp:>7s} {cpu:>9s}{ok}")
    if seq:
        lines += ["", "grid sequencing: Newton iterations per mesh, coarse to fine (median total time)"]
        for r in seq:
            if "median" not in r:
                lines.append(f"{r['solver']:18s} {mesh_of(r)} P={r['ranks']} FAILED: {r.get('error', '')}")
                continue
            per = ", ".join(f"{format_mesh(h['nodes'], h['layers'])}: {h['newton_iterations']}"
                            for h in r["median"]["newton_per_mesh"])
            lines.append(f"{r['solver']:18s} P={r['ranks']} levels={r['grid_levels']}  {per}  "
                         f"({r['median']['total']:.2f} s, {r['median'].get('linear_solver')})")
    grads = [r for r in records if r.get("kind") == "gradient"]
    if grads:
        lines += ["", "optimisation route: seconds per cost-and-gradient evaluation (median)"]
        for r in grads:
            if "median" not in r:
                lines.append(f"{mesh_of(r)} P={r['ranks']} FAILED: {r.get('error', '')}")
                continue
            lines.append(f"{mesh_of(r):>12s} {r['unknowns']:>9d} P={r['ranks']} route={r['route']}: "
                         f"{r['median']['gradient']:.3f} s (cpu {100 * r['median']['cpu_fraction']:.0f}%)")
    return "\n".join(lines)


def markdown(records: list[dict]) -> str:
    """The table of :func:`table` in Markdown (for docs/performance.md)."""
    t1 = {_key(r): r["median"]["total"] for r in records
          if r.get("ranks") == 1 and r.get("converged") and "median" in r and "total" in r["median"]}
    cols = ["solver", "prealloc", "mesh", "unknowns", "ranks", "Newton", "linear its per Newton step",
            "s/iteration", "residual", "Jacobian", "linear solve", "assembly %", "solve s", "speed-up",
            "entries allocated/row", "set/row", "peak RSS/rank", "bytes/unknown", "cpu % per rank"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        if r.get("grid_levels") or r.get("kind") == "gradient":
            continue
        pre = r.get("preallocation") or "exact"
        if "median" not in r:
            lines.append(f"| {r['solver']} | {pre} | {mesh_of(r)} | | {r['ranks']} | failed: {r.get('error', '')} |"
                         + " |" * (len(cols) - 6))
            continue
        m, pi = r["median"], r["median"]["per_iteration"]
        s1 = t1.get(_key(r))
        sp = f"{s1 / m['total']:.2f}" if s1 and r["ranks"] > 1 else ""
        nrep = len(r["repeats_data"])
        cpu = ", ".join("/".join(f"{100 * c:.0f}" for c in rep.get("cpu_fraction_ranks", []))
                        for rep in r["repeats_data"])
        mi = r.get("matrix") or {}
        lines.append(
            f"| {r['solver']} | {pre} | {mesh_of(r)} | {r['unknowns']:,} | {r['ranks']} | "
            f"{m['newton_iterations']:.0f} | {_lin(m)} | {pi['total']:.3f} | {pi['residual']:.3f} | "
            f"{pi['jacobian']:.3f} | {pi['linear_solve']:.3f} | {100 * m['assembly_fraction']:.1f} | "
            f"{m['total']:.2f}{'' if nrep >= 3 else f' ({nrep} run)'} | {sp} | "
            f"{mi.get('allocated_per_row', float('nan')):.2f} | {mi.get('set_per_row', float('nan')):.2f} | "
            f"{fmt_bytes(r['rss_peak_max'])} | {r['bytes_per_unknown']:.0f} | {cpu} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- rates for plan

def _dedicated(r: dict) -> float:
    """Seconds per Newton iteration on a dedicated core: one-rank wall time times the
    fraction of the core the rank got (``cpu_fraction``, when recorded)."""
    m = r["median"]
    return m["per_iteration"]["total"] * min(m.get("cpu_fraction") or 1.0, 1.0)


def fit_rates(records: list[dict]) -> dict:
    """Fit ``bytes/unknown = a n^p`` and ``s/iteration = a n^p`` per (solver, d, K) on the
    one-rank cases (largest three meshes), the best parallel efficiency measured, and the
    ranks' baseline. Only exact-preallocation Newton cases count."""
    import platform

    import numpy as np

    out = {"format": RATES_FORMAT, "generated_by": "scripts/bench_solver.py --write-rates",
           "generated": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cpus",
           "models": []}
    ok = [r for r in records if r.get("converged") and "median" in r and "per_iteration" in r["median"]
          and (r.get("preallocation") or "exact") == "exact" and not r.get("grid_levels")]
    out["rank_baseline_bytes"] = float(np.median([r["rss_base_sum"] / r["ranks"] for r in ok])) if ok else 1.2e8
    groups = sorted({(r["solver"], r.get("ndim", 1), r.get("classes", 1)) for r in ok})
    for s, nd, K in groups:
        mine = [r for r in ok if (r["solver"], r.get("ndim", 1), r.get("classes", 1)) == (s, nd, K)]
        one = sorted((r for r in mine if r["ranks"] == 1), key=lambda r: r["unknowns"])
        if not one:
            continue
        big = one[-3:] if len(one) >= 3 else one
        a_b, p_b = fit_power([r["unknowns"] for r in big], [max(r["bytes_per_unknown"], 1.0) for r in big])
        if p_b < 0:  # small meshes are dominated by the baseline: never extrapolate downwards
            a_b, p_b = big[-1]["bytes_per_unknown"], 0.0
        a_t, p_t = fit_power([r["unknowns"] for r in big], [_dedicated(r) for r in big])
        if p_t < 1:  # the work per unknown does not shrink as the mesh grows
            a_t, p_t = _dedicated(big[-1]) / big[-1]["unknowns"], 1.0
        model = {"solver": s, "ndim": nd, "classes": K,
                 "bytes_per_unknown": {"a": a_b, "p": p_b}, "seconds_per_iteration": {"a": a_t, "p": p_t},
                 "newton_iterations": max(r["median"]["newton_iterations"] for r in one),
                 "measured_unknowns": [r["unknowns"] for r in one],
                 "linear_solver": [r["median"].get("linear_solver") for r in one]}
        effs = []
        for r in mine:
            if r["ranks"] == 1:
                continue
            base = next((b for b in one if b["unknowns"] == r["unknowns"]), None)
            if base:
                effs.append((r["unknowns"] >= 1e5, _dedicated(base) / (r["ranks"] * r["median"]["per_iteration"]["total"]
                                                                      * min(r["median"].get("cpu_fraction") or 1, 1)),
                             r["unknowns"], r["ranks"]))
        if effs:
            big_e = [e for e in effs if e[0]] or [max(effs, key=lambda e: e[2])]
            best = max(big_e, key=lambda e: e[1])
            model["parallel_efficiency"] = min(best[1], 1.0)
            model["parallel_efficiency_at"] = {"unknowns": best[2], "ranks": best[3]}
        out["models"].append(model)
    return out


# ----------------------------------------------------------------------------- assembly and bandwidth

def run_worker(mode: str, args: list[str], ranks: int, launcher: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "out.json")
        cmd = shlex.split(launcher.format(n=ranks)) + [sys.executable, str(Path(__file__).resolve()),
                                                       f"--{mode}-worker", str(out)] + args
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
        if p.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
        return json.loads(out.read_text())


def _worker_solver(mesh: str, config: str, options: list[str]):
    import petsc4py
    petsc4py.init([sys.argv[0]] + options)
    from mfc_hpc.config import load_config
    from mfc_hpc.drivers.run import build_solver
    from mfc_hpc.jobs.solve import shared_problem

    nodes, N = parse_mesh(mesh)
    cfg = load_config(config).replace(mesh={"nodes": nodes, "layers": N})
    ms = build_solver(shared_problem(cfg), verbose=False)
    ms.uncontrolled_guess()
    r = ms.solve()  # at the solution: the Jacobian of the last Newton step
    return ms, r


def assembly_worker(out: str, mesh: str, config: str, repeats: int) -> None:
    """Time the Jacobian evaluation and its insertion: the gather into the exact matrix's
    arrays (the package's path) against ``MatSetValuesIJV`` of the row-major values (the
    release's path) into the same pattern and into the DMDA's box matrix (run under mpiexec)."""
    ms, r = _worker_solver(mesh, config, [])
    import numpy as np
    from mpi4py import MPI
    from petsc4py import PETSc

    from mfc_hpc.numerics.depth import slab_jacobian_fields
    from mfc_hpc.parallel.pattern import JacobianPattern

    mesh_, X, d = ms.mesh, ms.X, ms.d
    comm = mesh_.comm.tompi4py()

    def med(f) -> float:
        ts = []
        for _ in range(repeats):
            comm.Barrier()
            t = time.perf_counter()
            f()
            ts.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
        return float(np.median(ts))

    Zg = mesh_.ghosted(X)
    chunks = ms.pattern.chunks
    VF = [slab_jacobian_fields(Zg, c.slab, d, ms.bd) for c in chunks]
    res = {"unknowns": X.getSize(), "ranks": comm.size, "mesh": mesh, "chunks": len(chunks),
           "newton_converged": bool(r.converged)}
    res["residual"] = med(lambda: ms._residual(None, X, ms.F))
    res["evaluate"] = med(lambda: [slab_jacobian_fields(mesh_.ghosted(X), c.slab, d, ms.bd) for c in chunks])

    def gather():
        for c, v in zip(chunks, VF):
            ms.pattern.insert(ms.J, c, v)
        ms.J.assemble()
    res["gather_into_arrays"] = med(gather)
    res["assemble_jacobian"] = med(lambda: ms.assemble_jacobian(X, ms.J))
    ijv = JacobianPattern(mesh_, ijv=True)
    box = mesh_.da.createMatrix()
    box.setOption(PETSc.Mat.Option.NO_OFF_PROC_ENTRIES, True)

    def row_major():
        return [np.ascontiguousarray(np.moveaxis(v, (0, 1, 2, 3), (-4, -3, -2, -1))) for v in VF]
    res["row_major_copy"] = med(row_major)
    RM = row_major()

    def ijv_box():
        for c, v in zip(ijv.chunks, RM):
            box.setValuesIJV(c.rowptr, c.cols, v.reshape(c.nrow, -1), addv=PETSc.InsertMode.INSERT_VALUES,
                             rowmap=c.rows)
        box.assemble()
    res["setValuesIJV_box"] = med(ijv_box)
    # the same values in both matrices
    x, y1 = ms.J.createVecs()
    y2 = y1.duplicate()
    x.setRandom()
    ms.J.mult(x, y1)
    box.mult(x, y2)
    y1.axpy(-1.0, y2)
    res["box_equals_exact"] = bool(y1.norm() <= 1e-13 * max(y2.norm(), 1e-300))
    res["matrix"] = ms.matrix_info()
    # entries per row: the DMDA's box, the stencil of issue 10 (2(2d+1) points x 2K fields,
    # with the adjoint rows' structural zeros) and the exact pattern (allocated = set)
    from mfc_hpc.numerics.depth import stencil_columns

    rows = box.getSize()[0]
    full = sum(int(np.broadcast_to(stencil_columns(c.slab, d, structural_zeros=True)[3],
                                   (c.slab.ye - c.slab.ys,) + c.slab.owned_count
                                   + (2 * d.K, 2, 2 * d.ndim + 1, 2 * d.K)).sum()) for c in chunks)
    res["entries_per_row"] = {"box_allocated": box.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_allocated"] / rows,
                              "stencil_with_structural_zeros": mesh_.allsum(full) / rows,
                              "exact": res["matrix"]["allocated_per_row"]}
    if comm.rank == 0:
        Path(out).write_text(json.dumps(res, indent=1))


def bandwidth_worker(out: str, mesh: str, config: str, repeats: int) -> None:
    """STREAM triad vs the residual evaluation's achieved bandwidth (one rank)."""
    ms, _ = _worker_solver(mesh, config, [])
    import numpy as np

    from mfc_hpc.numerics.depth import slab_residual
    from mfc_hpc.studies.perf import stream_triad

    Zg = ms.mesh.ghosted(ms.X)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        slab_residual(Zg, ms.mesh.slab, ms.d, ms.bd)
        ts.append(time.perf_counter() - t)
    t_res = float(np.median(ts))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        ms._residual(None, ms.X, ms.F)
        ts.append(time.perf_counter() - t)
    t_cb = float(np.median(ts))
    n = ms.X.getSize()
    # compulsory traffic: read the state, write the residual (2 x 8 bytes per unknown)
    compulsory = 16.0 * n
    tri = stream_triad(n=20_000_000, repeats=repeats)
    res = {"unknowns": n, "mesh": mesh, "ndim": ms.d.ndim, "classes": ms.d.K, "residual_seconds": t_res,
           "residual_callback_seconds": t_cb, "residual_compulsory_bytes": compulsory,
           "residual_bandwidth": compulsory / t_res, "ns_per_unknown": 1e9 * t_res / n, "triad": tri}
    best = max(v for k, v in tri.items() if k != "n")
    res["ratio_residual_to_best_triad"] = res["residual_bandwidth"] / best
    res["ratio_residual_to_numpy_triad"] = res["residual_bandwidth"] / tri["numpy_naive"]
    Path(out).write_text(json.dumps(res, indent=1))


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--sizes", default=None, help="mesh list, e.g. 129x32,257x64 or 33x33x16 (default: by d)")
    p.add_argument("--solvers", default="default", help=f"from: {', '.join(SOLVERS)}")
    p.add_argument("--preallocation", default="exact", help="exact, box or both (comma list)")
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-unknowns-repeats", type=float, default=None,
                   help="cases above this many unknowns run one repeat (time on a shared machine)")
    p.add_argument("--quick", action="store_true", help="smoke run: small meshes, one repeat")
    p.add_argument("--grid-levels", type=int, default=0,
                   help="solve with grid sequencing from this many coarser meshes (whole driver, "
                        "reports Newton iterations per mesh)")
    p.add_argument("--gradient", action="store_true",
                   help="time the optimisation route's cost-and-gradient evaluation instead of Newton")
    p.add_argument("--launcher", default="mpiexec -n {n}")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=None, help="JSON file (default results/bench_solver.json)")
    p.add_argument("--append", action="store_true", help="add to the cases already in --out")
    p.add_argument("--assembly", metavar="MESH", default=None, help="time the Jacobian evaluation and insertion")
    p.add_argument("--bandwidth", action="store_true", help="STREAM triad vs residual bandwidth")
    p.add_argument("--bandwidth-size", default=None, help="mesh of --bandwidth (default 1025x256 / 65x65x32)")
    p.add_argument("--write-rates", metavar="JSON", nargs="*", default=None,
                   help="fit mfc_hpc/perf_rates.json from these benchmark JSON files (default: --out)")
    p.add_argument("--rates-out", default=str(RATES_PATH))
    p.add_argument("--note", default=None, help="a remark stored in the rates file (e.g. how loaded the machine was)")
    p.add_argument("--report", metavar="JSON", default=None, help="print a benchmark JSON as Markdown tables")
    p.add_argument("--assembly-worker", help=argparse.SUPPRESS)
    p.add_argument("--bandwidth-worker", help=argparse.SUPPRESS)
    a, extra = p.parse_known_args(argv)

    if a.assembly_worker:
        assembly_worker(a.assembly_worker, extra[0], a.config, a.repeats)
        return 0
    if a.bandwidth_worker:
        bandwidth_worker(a.bandwidth_worker, extra[0], a.config, a.repeats)
        return 0
    if a.report:
        d = json.loads(Path(a.report).read_text())
        print(f"Command: `{d.get('command', '')}` ({d.get('date', '')}, {d.get('host_cpus')} cpus)\n")
        print(markdown(d["cases"]))
        rest = [r for r in d["cases"] if r.get("grid_levels") or r.get("kind") == "gradient"]
        if rest:
            print("\n" + table(rest).split("\n", 2)[-1])
        return 0
    if a.write_rates is not None:
        srcs = [Path(s) for s in a.write_rates] or [Path(a.out or REPO / "results" / "bench_solver.json")]
        recs = [r for s in srcs for r in json.loads(s.read_text())["cases"]]
        rates = fit_rates(recs)
        rates["source"] = [s.name for s in srcs]
        if a.note:
            rates["note"] = a.note
        Path(a.rates_out).write_text(json.dumps(rates, indent=1) + "\n")
        print(json.dumps(rates, indent=1))
        return 0

    ndim, K = config_dim(a.config)
    out = Path(a.out or REPO / "results" / ("bench_quick.json" if a.quick else "bench_solver.json"))
    doc = json.loads(out.read_text()) if out.is_file() and (a.append or a.assembly or a.bandwidth) else {}
    ranks = [int(r) for r in a.ranks.split(",")]
    if a.assembly or a.bandwidth:
        reps = max(a.repeats, 5)
        if a.assembly:
            recs = []
            for P in ranks:
                r = run_worker("assembly", [a.assembly, "--repeats", str(reps), "--config", a.config],
                               P, a.launcher, a.timeout)
                recs.append(r)
                print(f"Jacobian at {r['mesh']} ({r['unknowns']} unknowns, {r['chunks']} chunks), {P} rank(s), "
                      f"median of {reps}, slowest rank:")
                for k in ("residual", "evaluate", "gather_into_arrays", "assemble_jacobian", "row_major_copy",
                          "setValuesIJV_box"):
                    print(f"  {k:28s} {r[k]:9.4f} s")
                print(f"  box matrix equals the exact one: {r['box_equals_exact']}")
                e = r["entries_per_row"]
                print(f"  entries per row: box {e['box_allocated']:.2f}, stencil with structural zeros "
                      f"{e['stencil_with_structural_zeros']:.2f}, exact {e['exact']:.2f}")
            doc["assembly"] = recs
        if a.bandwidth:
            size = a.bandwidth_size or ("1025x256" if ndim == 1 else "65x65x32")
            r = run_worker("bandwidth", [size, "--repeats", str(reps), "--config", a.config], 1, a.launcher,
                           a.timeout)
            doc["bandwidth"] = r
            t = r["triad"]
            print(f"STREAM triad (best of {reps}): numpy a[:]=b+s*c {t['numpy_naive'] / 1e9:.2f} GB/s, "
                  f"numpy in place {t['numpy_inplace'] / 1e9:.2f} GB/s"
                  + (f", C -O3 {t['compiled_c'] / 1e9:.2f} GB/s" if "compiled_c" in t else ", no C compiler"))
            print(f"residual at {r['mesh']} ({r['unknowns']} unknowns): {r['residual_seconds']:.4f} s "
                  f"({r['ns_per_unknown']:.1f} ns/unknown), compulsory traffic "
                  f"{r['residual_compulsory_bytes'] / 1e6:.1f} MB -> {r['residual_bandwidth'] / 1e9:.3f} GB/s = "
                  f"{100 * r['ratio_residual_to_best_triad']:.1f}% of the best triad, "
                  f"{100 * r['ratio_residual_to_numpy_triad']:.1f}% of numpy's")
        doc.setdefault("command", " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
        return 0

    sizes = parse_sizes(a.sizes or (QUICK_SIZES if a.quick else DEFAULT_SIZES)[ndim], ndim)
    repeats = 1 if a.quick else a.repeats
    solvers = a.solvers.split(",")
    for s in solvers:
        if s not in SOLVERS:
            p.error(f"unknown solver {s!r}; known: {', '.join(SOLVERS)}")
    pre = a.preallocation.split(",")
    for v in pre:
        if v not in ("exact", "box"):
            p.error(f"--preallocation: expected exact and/or box, got {v!r}")
    records = list(doc.get("cases", [])) if a.append else []
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "config": a.config, "ndim": ndim, "repeats": repeats, "host_cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "cases": records,
           **{k: v for k, v in doc.items() if k in ("assembly", "bandwidth")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    for (nodes, N) in sizes:
        for s in solvers:
            for v in pre:
                for P in ranks:
                    n = 2 * max(K, 1) * int(__import__("math").prod(nodes)) * (N + 1)
                    rep = repeats if a.max_unknowns_repeats is None or n <= a.max_unknowns_repeats else 1
                    case = {"config": a.config, "ndim": ndim, "classes": K, "nodes": list(nodes), "layers": N, "solver": s,
                            "repeats": rep, "grid_levels": a.grid_levels, "preallocation": v}
                    if a.gradient:
                        case["kind"] = "gradient"
                    rec = run_case(case, P, a.launcher, extra, a.timeout)
                    records.append(rec)
                    m = rec.get("median", {})
                    what = (f"{m['gradient']:.3f} s per gradient ({rec.get('route')})" if a.gradient and m else
                            f"{m['total']:.2f} s, {m['newton_iterations']:.0f} Newton (finest), linear "
                            f"{_lin(m) or m.get('linear_iterations')}" if m else rec.get("error", "failed"))
                    print(f"  {s} {v} {format_mesh(nodes, N)} P={P}: {what}", flush=True)
                    out.write_text(json.dumps(doc, indent=1))  # after every case: a killed run keeps its data
    print(table(records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
