#!/usr/bin/env python
"""Benchmark of the Newton solver: iterations, time per iteration by phase, peak memory.

For every mesh size x linear-solver configuration x rank count it launches one
``mpiexec -n P python -m mfc_hpc.perf`` process group (so peak memory is per case) that
builds the solver, computes the uncontrolled initial guess and runs Newton ``--repeats``
times; the table quotes medians of the repeats and the slowest rank's time of each phase.

    source scripts/env.sh
    python scripts/bench_solver.py --quick                       # smoke run, ~20 s
    python scripts/bench_solver.py --out results/bench.json      # 1e4 .. 1e6 unknowns, 1 and 2 ranks
    python scripts/bench_solver.py --solvers mumps,gmres_bjacobi_ilu2 --sizes 129x32,513x128 --ranks 1,2
    python scripts/bench_solver.py --assembly 513x128            # Jacobian assembly variants
    python scripts/bench_solver.py --bandwidth                   # STREAM triad vs residual bandwidth
    python scripts/bench_solver.py --grid-levels 3 --sizes 257x64,513x128 --ranks 1   # grid sequencing
    python scripts/bench_solver.py --write-rates results/bench.json   # refit mfc_hpc/perf_rates.json

Sizes are ``MxN`` (nodes x layers) of ``--config`` (default: the one-class closed form,
``2 M (N+1)`` unknowns). Solver names are those of :data:`mfc_hpc.perf.SOLVERS`.
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

from mfc_hpc.perf import RATES_PATH, SOLVERS, fit_power  # noqa: E402  (no PETSc needed here)

DEFAULT_CONFIG = REPO / "mfc_hpc" / "examples" / "closed_form.toml"
DEFAULT_SIZES = "129x32,257x64,513x128,1025x256,1409x352"
QUICK_SIZES = "65x16,129x32"


def parse_sizes(s: str) -> list[tuple[int, int]]:
    out = []
    for tok in s.split(","):
        m, n = tok.lower().split("x")
        out.append((int(m), int(n)))
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
        cmd = shlex.split(launcher.format(n=ranks)) + [python, "-m", "mfc_hpc.perf", str(cpath), str(opath)] + extra
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


def table(records: list[dict]) -> str:
    head = (f"{'solver':20s} {'MxN':>10s} {'unknowns':>9s} {'P':>2s} {'newton':>6s} {'lin':>6s} "
            f"{'s/it':>7s} {'resid':>7s} {'jac':>7s} {'linsol':>7s} {'asm%':>5s} {'newton s':>8s} "
            f"{'total s':>8s} {'peak/rank':>9s} {'B/unk':>6s} {'speedup':>7s} {'cpu%':>5s}")
    lines = [head, "-" * len(head)]
    t1 = {(r["solver"], r["nodes"], r["layers"]): r["median"]["total"] for r in records
          if r.get("ranks") == 1 and r.get("converged") and "median" in r}
    seq = [r for r in records if r.get("grid_levels")]
    for r in records:
        key = f"{r['nodes']}x{r['layers']}"
        if r.get("grid_levels"):
            continue
        if "median" not in r:
            lines.append(f"{r['solver']:20s} {key:>10s} {'':>9s} {r['ranks']:>2d}  FAILED: {r.get('error', '')}")
            continue
        m = r["median"]
        pi = m.get("per_iteration", {})
        s1 = t1.get((r["solver"], r["nodes"], r["layers"]))
        sp = f"{s1 / m['total']:.2f}" if s1 and r["ranks"] > 1 else ""
        ok = "" if r.get("converged") else " (not converged)"
        lines.append(
            f"{r['solver']:20s} {key:>10s} {r['unknowns']:>9d} {r['ranks']:>2d} {m['newton_iterations']:>6.0f} "
            f"{m.get('linear_iterations', 0):>6.0f} {pi.get('total', 0):>7.3f} {pi.get('residual', 0):>7.3f} "
            f"{pi.get('jacobian', 0):>7.3f} {pi.get('linear_solve', 0):>7.3f} "
            f"{100 * m.get('assembly_fraction', 0):>5.1f} {m['newton_wall']:>8.2f} {m['total']:>8.2f} "
            f"{fmt_bytes(r['rss_peak_max']):>9s} {r['bytes_per_unknown']:>6.0f} {sp:>7s} "
            f"{100 * m['cpu_fraction'] if 'cpu_fraction' in m else float('nan'):>5.0f}{ok}")
    if seq:
        lines += ["", "grid sequencing: Newton iterations per mesh, coarse to fine (median total time)"]
        for r in seq:
            if "median" not in r:
                lines.append(f"{r['solver']:20s} {r['nodes']}x{r['layers']} P={r['ranks']} FAILED: {r.get('error', '')}")
                continue
            per = ", ".join(f"{h['nodes']}x{h['layers']}: {h['newton_iterations']}" for h in r["median"]["newton_per_mesh"])
            lines.append(f"{r['solver']:20s} P={r['ranks']} levels={r['grid_levels']}  {per}  "
                         f"({r['median']['total']:.2f} s)")
    return "\n".join(lines)


def markdown(records: list[dict]) -> str:
    """The table of :func:`table` in Markdown (for docs/performance.md)."""
    t1 = {(r["solver"], r["nodes"], r["layers"]): r["median"]["total"] for r in records
          if r.get("ranks") == 1 and r.get("converged") and "median" in r and not r.get("grid_levels")}
    lines = ["| solver | M x N | unknowns | ranks | Newton | linear its | s/iteration | residual | Jacobian "
             "| linear solve | assembly % | solve s | speed-up | peak RSS/rank | bytes/unknown | cpu % |",
             "|" + "---|" * 16]
    for r in records:
        if r.get("grid_levels"):
            continue
        if "median" not in r:
            lines.append(f"| {r['solver']} | {r['nodes']}x{r['layers']} | | {r['ranks']} | failed: "
                         f"{r.get('error', '')} |" + " |" * 11)
            continue
        m, pi = r["median"], r["median"]["per_iteration"]
        s1 = t1.get((r["solver"], r["nodes"], r["layers"]))
        sp = f"{s1 / m['total']:.2f}" if s1 and r["ranks"] > 1 else ""
        nrep = len(r["repeats_data"])
        cpu = f"{100 * m['cpu_fraction']:.0f}" if "cpu_fraction" in m else ""
        lines.append(
            f"| {r['solver']} | {r['nodes']}x{r['layers']} | {r['unknowns']:,} | {r['ranks']} | "
            f"{m['newton_iterations']:.0f} | {m['linear_iterations']:.0f} | {pi['total']:.3f} | {pi['residual']:.3f} | "
            f"{pi['jacobian']:.3f} | {pi['linear_solve']:.3f} | {100 * m['assembly_fraction']:.1f} | "
            f"{m['total']:.2f}{'' if nrep >= 3 else f' ({nrep} run)'} | {sp} | {fmt_bytes(r['rss_peak_max'])} | "
            f"{r['bytes_per_unknown']:.0f} | {cpu} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- rates for plan

def _dedicated(r: dict) -> float:
    """Seconds per Newton iteration on a dedicated core: one-rank wall time times the
    fraction of the core the rank got (``cpu_fraction``, when recorded)."""
    m = r["median"]
    return m["per_iteration"]["total"] * min(m.get("cpu_fraction") or 1.0, 1.0)


def fit_rates(records: list[dict], default_solver: str = "mumps") -> dict:
    """Fit ``bytes/unknown = a n^p`` and ``s/iteration = a n^p`` per solver on the one-rank
    cases (largest three meshes), the best parallel efficiency measured, and the ranks' baseline."""
    import platform

    import numpy as np

    out = {"generated_by": "scripts/bench_solver.py --write-rates", "generated": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{platform.node()} {os.cpu_count()} cpus", "solvers": {}}
    ok = [r for r in records if r.get("converged") and "median" in r and "per_iteration" in r["median"]]
    out["rank_baseline_bytes"] = float(np.median([r["rss_base_sum"] / r["ranks"] for r in ok])) if ok else 1.2e8
    for s in sorted({r["solver"] for r in ok}):
        one = sorted((r for r in ok if r["solver"] == s and r["ranks"] == 1), key=lambda r: r["unknowns"])
        if not one:
            continue
        n = [r["unknowns"] for r in one]
        # fit on the largest sizes, where the baseline noise of small runs does not dominate
        big = one[-3:] if len(one) >= 3 else one
        a_b, p_b = fit_power([r["unknowns"] for r in big], [max(r["bytes_per_unknown"], 1.0) for r in big])
        if p_b < 0:  # small meshes are dominated by the baseline: never extrapolate downwards
            a_b, p_b = big[-1]["bytes_per_unknown"], 0.0
        a_t, p_t = fit_power([r["unknowns"] for r in big], [_dedicated(r) for r in big])
        if p_t < 1:  # the work per unknown does not shrink as the mesh grows
            a_t, p_t = _dedicated(big[-1]) / big[-1]["unknowns"], 1.0
        model = {"bytes_per_unknown": {"a": a_b, "p": p_b}, "seconds_per_iteration": {"a": a_t, "p": p_t},
                 "newton_iterations": max(r["median"]["newton_iterations"] for r in one),
                 "measured_unknowns": n}
        # parallel efficiency: the best measured on meshes of >= 1e5 unknowns (or the largest
        # mesh), since on a shared machine the others are lowered by other jobs (see cpu %)
        effs = []
        for r in ok:
            if r["solver"] != s or r["ranks"] == 1:
                continue
            base = next((b for b in one if b["unknowns"] == r["unknowns"]), None)
            if base:
                effs.append((r["unknowns"] >= 1e5, base["median"]["per_iteration"]["total"]
                             / (r["ranks"] * r["median"]["per_iteration"]["total"]), r["unknowns"], r["ranks"]))
        if effs:
            big_e = [e for e in effs if e[0]] or [max(effs, key=lambda e: e[2])]
            best = max(big_e, key=lambda e: e[1])
            model["parallel_efficiency"] = min(best[1], 1.0)
            model["parallel_efficiency_at"] = {"unknowns": best[2], "ranks": best[3]}
        out["solvers"][s] = model
    out["default_solver"] = default_solver if default_solver in out["solvers"] else next(iter(out["solvers"]), None)
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


def assembly_worker(out: str, M: int, N: int, config: str, repeats: int) -> None:
    """Time the Jacobian evaluation and four ways of inserting it (run under mpiexec)."""
    import petsc4py
    petsc4py.init([sys.argv[0]])
    import numpy as np
    from petsc4py import PETSc

    from mfc_hpc.config import load_config
    from mfc_hpc.run import build_solver
    from mfc_hpc.scheme import slab_jacobian

    cfg = load_config(config).replace(mesh={"nodes": M, "layers": N})
    ms = build_solver(cfg, verbose=False)
    ms.uncontrolled_guess()
    mesh, X, d = ms.mesh, ms.X, ms.d
    comm = mesh.comm.tompi4py()
    s, K = mesh.slab, d.K
    dof = 2 * K
    INS = PETSc.InsertMode.INSERT_VALUES

    def med(f) -> float:
        ts = []
        for _ in range(repeats):
            comm.Barrier()
            t = time.perf_counter()
            f()
            ts.append(comm.allreduce(time.perf_counter() - t, op=__import__("mpi4py").MPI.MAX))
        return float(np.median(ts))

    Zg = mesh.ghosted(X)
    V = slab_jacobian(Zg, s, d, ms.bd)
    rowptr, cols, rows = mesh.jacobian_pattern()
    res = {"unknowns": X.getSize(), "ranks": comm.size, "nodes": M, "layers": N}
    res["evaluate_slab_jacobian"] = med(lambda: slab_jacobian(mesh.ghosted(X), s, d, ms.bd))

    # (a) the current path: AIJ, one setValuesIJV call with -1 for columns off the mesh
    A = ms.J

    def ins_a():
        A.setValuesIJV(rowptr, cols, V.reshape(rows.size, -1), addv=INS, rowmap=rows)
        A.assemble()
    res["aij_setValuesIJV"] = med(ins_a)

    # (b) AIJ, compressed rows (the -1 columns dropped once), values gathered by a mask
    valid = (cols >= 0).ravel()
    nnz_row = (cols >= 0).sum(axis=1)
    rp_c = np.concatenate([[0], np.cumsum(nnz_row)]).astype(PETSc.IntType)
    cols_c = cols.ravel()[valid]
    flat = np.flatnonzero(valid)

    def ins_b():
        A.setValuesIJV(rp_c, cols_c, V.reshape(-1)[flat], addv=INS, rowmap=rows)
        A.assemble()
    res["aij_setValuesIJV_compressed"] = med(ins_b)

    # (c) BAIJ (block size 2K), one setValuesBlockedIJV call: 3 x 3 blocks per block row
    da = mesh.da
    da.setMatType(PETSc.Mat.Type.BAIJ)
    B = da.createMatrix()
    B.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
    Lo, mo = s.ye - s.ys, s.xe - s.xs
    Lg, mg, _ = mesh.ghost_shape
    n_ = np.arange(s.ys, s.ye)[:, None, None, None]
    i_ = np.arange(s.xs, s.xe)[None, :, None, None]
    lv = n_ + np.arange(-1, 2)[None, None, :, None]
    nd = i_ + np.arange(-1, 2)[None, None, None, :]
    ok = (lv >= 0) & (lv <= d.N) & (nd >= 0) & (nd < d.M)
    lblk = (lv - s.l0) * mg + (nd - s.i0)
    lg = da.getLGMap()
    bcols = np.full((Lo, mo, 3, 3), -1, dtype=PETSc.IntType)
    lblk = np.broadcast_to(lblk, bcols.shape)
    okb = np.broadcast_to(ok, bcols.shape)
    bcols[okb] = lg.applyBlock(lblk[okb].astype(PETSc.IntType))
    brows = lg.applyBlock((((n_ - s.l0) * mg + (i_ - s.i0))).ravel().astype(PETSc.IntType))
    nb = Lo * mo
    brp = (np.arange(nb + 1) * 9).astype(PETSc.IntType)
    bcols = bcols.reshape(nb, 9)
    Vb = np.zeros((Lo, mo, 3, 3, dof, dof))

    def to_blocks(V):
        Vt = np.moveaxis(V, 2, 4)  # [n, i, q, o, a, b]
        Vb[:, :, 0:2, :, :K, :] = Vt[:, :, :, :, :K, :]
        Vb[:, :, 1:3, :, K:, :] = Vt[:, :, :, :, K:, :]
        return Vb

    def ins_c():
        B.setValuesBlockedIJV(brp, bcols, to_blocks(V).reshape(nb, -1), addv=INS, rowmap=brows)
        B.assemble()
    # a block's values are row-major (a, b) within block (lv, nd): check against AIJ
    ins_c()
    ins_a()
    x, y1 = A.createVecs()
    y2 = y1.duplicate()
    x.setRandom()
    A.mult(x, y1)
    B.mult(x, y2)
    y1.axpy(-1.0, y2)
    res["baij_matches_aij"] = bool(y1.norm() <= 1e-12 * max(y2.norm(), 1e-300))
    res["baij_setValuesBlockedIJV"] = med(ins_c)
    res["baij_to_blocks_only"] = med(lambda: to_blocks(V))

    # (d) one setValues call per row (Python loop), on at most 2000 rows, scaled up
    nrow = min(rows.size, 2000)
    rl = rows.tolist()
    Vr = V.reshape(rows.size, -1)

    def ins_d():
        for r in range(nrow):
            c = cols[r]
            A.setValues([rl[r]], c, Vr[r], addv=INS)
        A.assemble()
    res["aij_per_row_loop"] = med(ins_d) * rows.size / nrow
    res["per_row_loop_extrapolated_from_rows"] = nrow
    if comm.rank == 0:
        Path(out).write_text(json.dumps(res, indent=1))


def bandwidth_worker(out: str, M: int, N: int, config: str, repeats: int) -> None:
    """STREAM triad vs the residual evaluation's achieved bandwidth (one rank)."""
    import petsc4py
    petsc4py.init([sys.argv[0]])
    import numpy as np

    from mfc_hpc.config import load_config
    from mfc_hpc.perf import stream_triad
    from mfc_hpc.run import build_solver
    from mfc_hpc.scheme import slab_residual

    cfg = load_config(config).replace(mesh={"nodes": M, "layers": N})
    ms = build_solver(cfg, verbose=False)
    ms.uncontrolled_guess()
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
    res = {"unknowns": n, "nodes": M, "layers": N, "residual_seconds": t_res, "residual_callback_seconds": t_cb,
           "residual_compulsory_bytes": compulsory, "residual_bandwidth": compulsory / t_res,
           "triad": tri}
    best = max(v for k, v in tri.items() if k != "n")
    res["ratio_residual_to_best_triad"] = res["residual_bandwidth"] / best
    res["ratio_residual_to_numpy_triad"] = res["residual_bandwidth"] / tri["numpy_naive"]
    Path(out).write_text(json.dumps(res, indent=1))


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--sizes", default=None, help=f"MxN list (default {DEFAULT_SIZES})")
    p.add_argument("--solvers", default="mumps,gmres_bjacobi_ilu2", help=f"from: {', '.join(SOLVERS)}")
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-unknowns-repeats", type=float, default=None,
                   help="cases above this many unknowns run one repeat (time on a shared machine)")
    p.add_argument("--quick", action="store_true", help="smoke run: small meshes, one repeat")
    p.add_argument("--grid-levels", type=int, default=0,
                   help="solve with grid sequencing from this many coarser meshes (whole driver, "
                        "reports Newton iterations per mesh)")
    p.add_argument("--launcher", default="mpiexec -n {n}")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=None, help="JSON file (default results/bench_solver.json)")
    p.add_argument("--append", action="store_true", help="add to the cases already in --out")
    p.add_argument("--assembly", metavar="MxN", default=None, help="compare Jacobian assembly variants")
    p.add_argument("--bandwidth", action="store_true", help="STREAM triad vs residual bandwidth")
    p.add_argument("--bandwidth-size", default="1025x256")
    p.add_argument("--write-rates", metavar="JSON", nargs="?", const="", default=None,
                   help="fit mfc_hpc/perf_rates.json from this benchmark JSON (default: --out)")
    p.add_argument("--rates-out", default=str(RATES_PATH))
    p.add_argument("--report", metavar="JSON", default=None, help="print a benchmark JSON as Markdown tables")
    p.add_argument("--assembly-worker", help=argparse.SUPPRESS)
    p.add_argument("--bandwidth-worker", help=argparse.SUPPRESS)
    a, extra = p.parse_known_args(argv)

    if a.assembly_worker:
        M, N = parse_sizes(extra[0])[0]
        assembly_worker(a.assembly_worker, M, N, a.config, a.repeats)
        return 0
    if a.bandwidth_worker:
        M, N = parse_sizes(extra[0])[0]
        bandwidth_worker(a.bandwidth_worker, M, N, a.config, a.repeats)
        return 0

    out = Path(a.out or REPO / "results" / ("bench_quick.json" if a.quick else "bench_solver.json"))
    doc = json.loads(out.read_text()) if out.is_file() and (a.append or a.write_rates is not None
                                                            or a.assembly or a.bandwidth) else {}
    ranks = [int(r) for r in a.ranks.split(",")]
    if a.assembly or a.bandwidth:
        if a.assembly:
            recs = []
            for P in ranks:
                r = run_worker("assembly", [a.assembly, "--repeats", str(max(a.repeats, 5)), "--config", a.config],
                               P, a.launcher, a.timeout)
                recs.append(r)
                print(f"Jacobian at {r['nodes']}x{r['layers']} ({r['unknowns']} unknowns), {P} rank(s), "
                      f"median of {max(a.repeats, 5)}, slowest rank:")
                base = r["aij_setValuesIJV"]
                for k in ("evaluate_slab_jacobian", "aij_setValuesIJV", "aij_setValuesIJV_compressed",
                          "baij_setValuesBlockedIJV", "baij_to_blocks_only", "aij_per_row_loop"):
                    rel = f"  ({r[k] / base:.2f}x of current insertion)" if k.startswith(("aij", "baij_set")) else ""
                    print(f"  {k:32s} {r[k]:9.4f} s{rel}")
                print(f"  BAIJ matrix equals the AIJ one: {r['baij_matches_aij']}")
            doc["assembly"] = recs
        if a.bandwidth:
            M, N = parse_sizes(a.bandwidth_size)[0]
            r = run_worker("bandwidth", [a.bandwidth_size, "--repeats", str(max(a.repeats, 5)), "--config", a.config],
                           1, a.launcher, a.timeout)
            doc["bandwidth"] = r
            t = r["triad"]
            print(f"STREAM triad (best of {max(a.repeats, 5)}): numpy a[:]=b+s*c {t['numpy_naive'] / 1e9:.2f} GB/s, "
                  f"numpy in place {t['numpy_inplace'] / 1e9:.2f} GB/s"
                  + (f", C -O3 {t['compiled_c'] / 1e9:.2f} GB/s" if "compiled_c" in t else ", no C compiler"))
            print(f"residual at {r['nodes']}x{r['layers']} ({r['unknowns']} unknowns): {r['residual_seconds']:.4f} s, "
                  f"compulsory traffic {r['residual_compulsory_bytes'] / 1e6:.1f} MB -> "
                  f"{r['residual_bandwidth'] / 1e9:.3f} GB/s = {100 * r['ratio_residual_to_best_triad']:.1f}% of the "
                  f"best triad, {100 * r['ratio_residual_to_numpy_triad']:.1f}% of numpy's")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
        return 0

    if a.report:
        d = json.loads(Path(a.report).read_text())
        print(f"Command: `{d.get('command', '')}` ({d.get('date', '')}, {d.get('host_cpus')} cpus)\n")
        print(markdown(d["cases"]))
        if any(r.get("grid_levels") for r in d["cases"]):
            print("\n" + table([r for r in d["cases"] if r.get("grid_levels")]).split("\n", 2)[-1])
        return 0
    if a.write_rates is not None:
        src = Path(a.write_rates) if a.write_rates else out
        recs = json.loads(src.read_text())["cases"]
        rates = fit_rates(recs)
        rates["source"] = str(src.name)
        Path(a.rates_out).write_text(json.dumps(rates, indent=1) + "\n")
        print(json.dumps(rates, indent=1))
        return 0

    sizes = parse_sizes(a.sizes or (QUICK_SIZES if a.quick else DEFAULT_SIZES))
    repeats = 1 if a.quick else a.repeats
    solvers = a.solvers.split(",")
    for s in solvers:
        if s not in SOLVERS:
            p.error(f"unknown solver {s!r}; known: {', '.join(SOLVERS)}")
    records = list(doc.get("cases", [])) if a.append else []
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "config": a.config, "repeats": repeats, "host_cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "cases": records,
           **{k: v for k, v in doc.items() if k in ("assembly", "bandwidth")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    for (M, N) in sizes:
        for s in solvers:
            for P in ranks:
                n = 2 * M * (N + 1)
                rep = repeats if a.max_unknowns_repeats is None or n <= a.max_unknowns_repeats else 1
                case = {"config": a.config, "nodes": M, "layers": N, "solver": s, "repeats": rep,
                        "grid_levels": a.grid_levels}
                rec = run_case(case, P, a.launcher, extra, a.timeout)
                records.append(rec)
                m = rec.get("median", {})
                print(f"  {s} {M}x{N} P={P}: " + (f"{m['total']:.2f} s, {m['newton_iterations']:.0f} Newton (finest)"
                                                   if m else rec.get("error", "failed")), flush=True)
                out.write_text(json.dumps(doc, indent=1))  # after every case: a killed run keeps its data
    print(table(records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
