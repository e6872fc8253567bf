"""Performance measurement and planning: the worker behind ``scripts/bench_solver.py`` and
``scripts/scaling_study.py``, the named linear-solver configurations they compare, and
the memory/time model that ``mfc-hpc plan`` reads from ``perf_rates.json``.

The measuring half runs inside ``mpiexec -n P python -m mfc_hpc.perf CASE.json OUT.json``
(one process group per case, so that the peak memory of one case does not leak into the
next); the planning half (:func:`load_rates`, :func:`plan`) needs neither MPI nor PETSc.

Time of a Newton solve is split by PETSc log event (max over ranks):

* ``residual``: ``mfc_residual``; ``jacobian``: ``mfc_jacobian`` (evaluation + assembly);
* ``linear_solve``: ``KSPSolve + PCSetUp`` (PETSc logs the factorisation, ``PCSetUp``,
  outside ``KSPSolve``);
* ``other``: the rest of ``SNESSolve`` (line search bookkeeping, vector updates);
* ``io``: ``mfc_io`` (when the case writes ``solution.h5``).

Peak memory is ``getrusage(RUSAGE_SELF).ru_maxrss`` per rank (max and sum over ranks);
bytes per unknown is ``(sum of peaks - sum of the ranks' baseline after imports) / unknowns``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from .linear import MULTIGRID_KSP, MULTIGRID_OPTIONS, options_string

__all__ = ["SOLVERS", "solver_options", "case_mesh", "load_rates", "plan", "parse_bytes",
           "RATES_PATH", "fit_power", "stream_triad", "measure_case", "compile_triad",
           "run_triad_copies", "bandwidth_ceiling", "usable_cpus"]

#: the multigrid configuration of :mod:`mfc_hpc.linear` (4 levels, MUMPS coarse solve)
_MG = options_string({**MULTIGRID_KSP, "pc_mg_levels": "4", **MULTIGRID_OPTIONS,
                      "mg_coarse_pc_factor_mat_solver_type": "mumps"})

#: Linear-solver configurations compared by the benchmarks (options without the ``-mfc_``
#: prefix). On one rank ``bjacobi`` is plain ILU on the whole matrix.
SOLVERS: dict[str, str] = {
    # no options: the package's choice for the mesh (solver.linear = "auto": MUMPS below
    # 2e5 unknowns, fgmres_mg_levels from there on, see mfc_hpc.linear.choose_linear)
    "default": "",
    # parallel sparse direct LU (the default below 2e5 unknowns and for several classes)
    "mumps": "ksp_type preonly pc_type lu pc_factor_mat_solver_type mumps",
    # GMRES(100) + block Jacobi, ILU(2) per rank
    "gmres_bjacobi_ilu2": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                          "pc_type bjacobi sub_pc_type ilu sub_pc_factor_levels 2",
    # the same, with the ranks split along depth only (process grid 1 x P): the blocks then
    # cut few couplings and the iteration count barely grows with the number of blocks
    "gmres_bjacobi_ilu2_levels": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                                 "pc_type bjacobi sub_pc_type ilu sub_pc_factor_levels 2 da_processors_x 1",
    # the same on a BAIJ matrix (block size 2K): block ILU kernels
    "gmres_bjacobi_ilu2_levels_baij": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                                      "pc_type bjacobi sub_pc_type ilu sub_pc_factor_levels 2 da_processors_x 1 "
                                      "dm_mat_type baij",
    # GMRES(100) + additive Schwarz (overlap 1), ILU(2) per subdomain
    "gmres_asm_ilu2": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                      "pc_type asm pc_asm_overlap 1 sub_pc_type ilu sub_pc_factor_levels 2",
    # GMRES(100) + additive Schwarz (overlap 2), exact LU per subdomain
    "gmres_asm_lu": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                    "pc_type asm pc_asm_overlap 2 sub_pc_type lu",
    # FGMRES + geometric multigrid on the DMDA hierarchy, Galerkin coarse operators,
    # GMRES/ILU(0) smoothing, MUMPS on the coarsest level (mfc_hpc.linear: the solver's
    # multigrid defaults), PETSc's process grid
    "fgmres_mg": _MG,
    # the same with the ranks split along depth only (process grid 1 x P): the block-Jacobi
    # smoother then cuts few couplings and the iteration count barely grows with the ranks;
    # what solver.linear = "auto" runs from 2e5 unknowns on
    "fgmres_mg_levels": _MG + " da_processors_x 1",
    # GMRES + field split of densities and adjoints (one class: fields 0 and 1), ILU(2) in each
    "gmres_fieldsplit": "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000 "
                        "pc_type fieldsplit pc_fieldsplit_type multiplicative "
                        "fieldsplit_0_pc_type bjacobi fieldsplit_0_sub_pc_type ilu fieldsplit_0_sub_pc_factor_levels 2 "
                        "fieldsplit_1_pc_type bjacobi fieldsplit_1_sub_pc_type ilu fieldsplit_1_sub_pc_factor_levels 2",
}

RATES_PATH = Path(__file__).with_name("perf_rates.json")


def solver_options(name: str, prefix: str = "mfc_") -> list[str]:
    """The command-line options of a named configuration (``["-mfc_ksp_type", "gmres", ...]``)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver configuration {name!r}; known: {', '.join(SOLVERS)}")
    toks = SOLVERS[name].split()
    out = []
    for k, v in zip(toks[::2], toks[1::2]):
        out += [f"-{prefix}{k}", v]
    return out


def case_mesh(unknowns: float, aspect: float = 4.0, classes: int = 1, multiple: int = 8) -> tuple[int, int]:
    """``(M, N)`` with ``(M - 1) = aspect * N``, ``N`` a multiple of ``multiple`` and about
    ``unknowns = 2 K M (N + 1)`` unknowns."""
    N = math.sqrt(unknowns / (2 * classes * aspect))
    N = max(multiple, int(round(N / multiple)) * multiple)
    return int(round(aspect * N)) + 1, N


# ----------------------------------------------------------------------------- memory bandwidth

def stream_triad(n: int = 20_000_000, repeats: int = 5) -> dict:
    """STREAM triad ``a = b + s c`` in numpy: best bandwidth over ``repeats`` (bytes/s,
    counting 3 arrays of 8-byte doubles moved per element, as STREAM does).

    numpy evaluates ``b + s*c`` in two passes with a temporary unless written with ``out=``;
    both are reported (``numpy_naive``: ``a[:] = b + s*c``; ``numpy_inplace``: two ufunc
    calls into ``a``, which moves 5 arrays, reported as STREAM's 3 for comparability).
    """
    import numpy as np

    b = np.random.rand(n)
    c = np.random.rand(n)
    a = np.empty(n)
    s = 3.0
    best_naive = best_in = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a[:] = b + s * c
        best_naive = min(best_naive, time.perf_counter() - t)
        t = time.perf_counter()
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)
        best_in = min(best_in, time.perf_counter() - t)
    nbytes = 3 * 8 * n
    out = {"n": n, "numpy_naive": nbytes / best_naive, "numpy_inplace": nbytes / best_in}
    c_bw = _compiled_triad(n, repeats)
    if c_bw is not None:
        out["compiled_c"] = c_bw
    return out


_TRIAD_C = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* triad N REPEATS: best of REPEATS sweeps a = b + s c, bytes/s (3 x 8 bytes per element).
   triad N REPEATS START WINDOW: wait until START (seconds since the epoch, CLOCK_REALTIME),
   sweep until START + WINDOW and print bytes moved / seconds swept: copies launched with the
   same START and WINDOW run their sweeps over the same interval. */
static double clk(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static double now(void) { return clk(CLOCK_MONOTONIC); }
int main(int argc, char **argv) {
  long n = atol(argv[1]); int r = atoi(argv[2]);
  double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)), *c = malloc(n * sizeof(double));
  for (long i = 0; i < n; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }
  double best = 1e30, s = 3.0;
  if (argc > 4) {
    double start = atof(argv[3]), end = start + atof(argv[4]), w;
    while ((w = clk(CLOCK_REALTIME)) < start) {
      double dl = start - w; struct timespec ts;
      ts.tv_sec = (time_t)dl; ts.tv_nsec = (long)((dl - (double)ts.tv_sec) * 1e9);
      nanosleep(&ts, NULL);
    }
    long sweeps = 0; double t = now();
    do {
      for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
      s += a[sweeps % n] * 1e-30; sweeps++;
    } while (clk(CLOCK_REALTIME) < end);
    t = now() - t;
    printf("%.6e\n", 3.0 * 8.0 * n * (double)sweeps / t);
    return a[n / 2] < 0.0;
  }
  for (int k = 0; k < r; k++) {
    double t = now();
    for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
    t = now() - t; if (t < best) best = t;
    s += a[k % n] * 1e-30;
  }
  printf("%.6e\n", 3.0 * 8.0 * n / best);
  return a[n / 2] < 0.0;
}
"""


def compile_triad(directory: str | Path) -> Path | None:
    """The triad (:data:`_TRIAD_C`) compiled with ``cc -O3 -march=native`` into
    ``directory``; ``None`` without a C compiler or when compiling fails."""
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = Path(directory, "triad.c"), Path(directory, "triad")
    src.write_text(_TRIAD_C)
    try:
        subprocess.run([cc, "-O3", "-march=native", "-o", str(exe), str(src)], check=True,
                       capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    return exe


def run_triad_copies(exe: str | Path, copies: int, n: int, repeats: int = 5,
                     window: float | None = None, timeout: float = 120) -> list[float] | None:
    """Bandwidth (bytes/s) of each of ``copies`` concurrent processes of the compiled triad.

    Without ``window`` every copy prints its best of ``repeats`` sweeps. With ``window``
    (seconds) all copies start sweeping at one common wall-clock instant (after their
    arrays are allocated and touched) and stop together ``window`` seconds later; each
    prints the mean bandwidth over its sweeps, so that the copies overlap for the whole
    measurement (a best-of would pick sweeps run while the other copies were idle).
    ``None`` when a copy fails or prints no number.
    """
    import subprocess

    args = [str(exe), str(int(n)), str(int(repeats))]
    if window is not None:
        start = time.time() + 0.2 + 0.02 * copies  # launch and first touch of every copy
        args += [f"{start:.6f}", f"{float(window):.6f}"]
        timeout = timeout + 0.2 + 0.02 * copies + float(window)
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(copies):
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            if p.returncode != 0:
                return None
            outs.append(float(out.split()[0]))
        return outs
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _compiled_triad(n: int, repeats: int) -> float | None:
    """The triad compiled with ``cc -O3`` into a temporary directory; ``None`` without a compiler."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        exe = compile_triad(tmp)
        if exe is None:
            return None
        bw = run_triad_copies(exe, 1, n, repeats)
        return None if bw is None else bw[0]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (not Linux)
        return os.cpu_count() or 1


def bandwidth_ceiling(ranks: list[int], exe: str | Path | None = None, n: int = 4_000_000,
                      window: float = 1.0, max_copies: int | None = None) -> dict | None:
    """Memory-bandwidth ceiling of running ``P`` memory-bound processes on this node at once.

    For every ``P`` in ``ranks`` (and ``P = 1``, the reference) ``P`` copies of the
    compiled triad run concurrently (:func:`run_triad_copies` with a common ``window``);
    ``aggregate(P)`` is the sum of their bandwidths and ``ceiling(P) = aggregate(P) /
    aggregate(1)`` bounds the speed-up of a memory-bound solve on ``P`` ranks (``P`` when the
    bandwidth scales, less when the copies share it). The copies are capped at
    ``max_copies`` (default: the usable CPUs): more copies than cores time-share them and
    ranks beyond one node are not seen from here. ``exe``: an already compiled triad
    (:func:`compile_triad`; compiled into a temporary directory when ``None``).

    Returns ``{"n", "window", "cpus", "loadavg", "date", "ranks": {"P": {"copies",
    "per_copy", "aggregate", "ceiling"}}}`` (bytes/s; keys are strings, as in JSON), or
    ``None`` without a C compiler or when a copy fails.
    """
    if exe is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            exe = compile_triad(tmp)
            if exe is None:
                return None
            return bandwidth_ceiling(ranks, exe, n, window, max_copies)
    cap = max(1, max_copies or usable_cpus())
    measured: dict[int, list[float]] = {}
    out: dict = {"n": int(n), "window": float(window), "cpus": usable_cpus(), "loadavg": list(os.getloadavg()),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S"), "ranks": {}}
    for P in sorted({1, *(int(p) for p in ranks)}):
        c = min(P, cap)
        if c not in measured:
            bw = run_triad_copies(exe, c, n, window=window)
            if bw is None:
                return None
            measured[c] = bw
        agg = float(sum(measured[c]))
        out["ranks"][str(P)] = {"copies": c, "per_copy": [float(b) for b in measured[c]], "aggregate": agg,
                                "ceiling": agg / float(sum(measured[1]))}
    return out


# ----------------------------------------------------------------------------- the worker

_EVENTS = {"residual": ["mfc_residual"], "jacobian": ["mfc_jacobian"],
           "linear_solve": ["KSPSolve", "PCSetUp"], "factorisation": ["MatLUFactorNum", "MatLUFactorSym"],
           "snes": ["SNESSolve"], "io": ["mfc_io"]}


def _rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _event_times(PETSc) -> dict:
    out = {}
    for k, names in _EVENTS.items():
        t = 0.0
        for n in names:
            try:
                t += PETSc.Log.Event(n).getPerfInfo()["time"]
            except PETSc.Error:
                pass
        out[k] = t
    return out


def measure_case(case: dict) -> dict | None:
    """Run one benchmark case on ``PETSc.COMM_WORLD`` (collective); rank 0 gets the record.

    ``case``: ``config`` (TOML path), ``nodes``, ``layers``, ``solver`` (a name of
    :data:`SOLVERS` or ``"options"`` with ``options`` a string), ``repeats``, optional
    ``io`` (write ``solution.h5`` to ``io_dir``), ``grid_levels`` (run the whole driver with
    grid sequencing and record Newton steps per mesh), ``t_launch`` (``time.time()`` of the
    launcher, for the start-up time), ``t_python`` and ``t_import`` (set by :func:`main`).
    """
    from petsc4py import PETSc

    from .config import load_config
    from .run import build_solver

    comm = PETSc.COMM_WORLD
    mpi = comm.tompi4py()
    rank, size = comm.getRank(), comm.getSize()
    rss_base = _rss_bytes()
    latency = _allreduce_latency(mpi)
    cfg = load_config(case["config"])
    cfg = cfg.replace(mesh={"nodes": int(case["nodes"]), "layers": int(case["layers"])})
    if case.get("grid_levels"):
        cfg = cfg.replace(solver={"grid_levels": int(case["grid_levels"])})
    reps = []
    for r in range(int(case.get("repeats", 3))):
        mpi.Barrier()
        e0 = _event_times(PETSc)
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        if case.get("grid_levels"):
            from .run import solve_config
            ms, summary = solve_config(cfg, comm)
            t_total = time.perf_counter() - t0
            rec = {"converged": summary["converged"], "total": t_total,
                   "newton_per_mesh": [{"nodes": h["nodes"], "layers": h["layers"], "unknowns": h["unknowns"],
                                        "newton_iterations": h["newton_iterations"]} for h in summary["newton"]],
                   "newton_iterations": summary["newton_iterations_fine"]}
            unknowns = ms.X.getSize()
            grid = ms.mesh.proc_sizes
            ms.destroy()
        else:
            ms = build_solver(cfg, comm, verbose=False)
            t_setup = time.perf_counter() - t0
            t1 = time.perf_counter()
            ms.uncontrolled_guess()
            t_guess = time.perf_counter() - t1
            e1 = _event_times(PETSc)
            res = ms.solve()
            e2 = _event_times(PETSc)
            t_io = 0.0
            if case.get("io"):
                from .output import write_solution
                t2 = time.perf_counter()
                write_solution(Path(case["io_dir"]) / f"solution_{size}.h5", ms.mesh, ms.X)
                t_io = time.perf_counter() - t2
            t_total = time.perf_counter() - t0
            unknowns = ms.X.getSize()
            grid = ms.mesh.proc_sizes
            newton = {k: e2[k] - e1[k] for k in e2}
            rec = {"converged": bool(res.converged), "reason": res.reason,
                   "newton_iterations": res.iterations, "linear_iterations": res.linear_iterations,
                   "setup": t_setup, "guess": t_guess, "newton_wall": res.wall, "io": t_io, "total": t_total,
                   "newton_phases": newton, "guess_phases": {k: e1[k] - e0[k] for k in e1}}
            ms.destroy()
        # CPU seconds this rank got over the repeat's wall time: well below 1 when the
        # machine is shared (other jobs took the core), the min over ranks is reported
        rec["cpu_fraction"] = -(_cpu_seconds() - c0) / max(time.perf_counter() - t0, 1e-9)
        # every time is the slowest rank's
        recs = mpi.gather(rec, root=0)
        reps.append(_max_records(recs) if rank == 0 else rec)
        if rank == 0:
            reps[-1]["cpu_fraction"] = -reps[-1]["cpu_fraction"]
    rss = _rss_bytes()
    rss_all = mpi.gather(rss, root=0)
    base_all = mpi.gather(rss_base, root=0)
    if rank != 0:
        return None
    import numpy as np

    out = {k: case[k] for k in case if k not in ("t_launch",)}
    out.update({"ranks": size, "process_grid": list(grid), "unknowns": unknowns,
                "repeats_data": reps,
                "startup": case.get("t_python", 0.0) - case["t_launch"] if "t_launch" in case else None,
                "import": case.get("t_import"),
                "rss_peak_max": max(rss_all), "rss_peak_sum": sum(rss_all),
                "rss_base_sum": sum(base_all),
                "bytes_per_unknown": (sum(rss_all) - sum(base_all)) / unknowns,
                "loadavg": os.getloadavg(), "allreduce_latency": latency})
    ok = [r for r in reps if r["converged"]]
    out["converged"] = len(ok) == len(reps)
    med = {}
    src = ok or reps
    for key in ("newton_iterations", "linear_iterations", "setup", "guess", "newton_wall", "io", "total",
                "cpu_fraction"):
        vals = [r[key] for r in src if key in r]
        if vals:
            med[key] = float(np.median(vals))
    if "newton_phases" in src[0]:
        med["newton_phases"] = {k: float(np.median([r["newton_phases"][k] for r in src]))
                                for k in src[0]["newton_phases"]}
        its = max(med["newton_iterations"], 1)
        ph = med["newton_phases"]
        per_it = {k: ph[k] / its for k in ("residual", "jacobian", "linear_solve")}
        per_it["other"] = max(ph["snes"] - ph["residual"] - ph["jacobian"] - ph["linear_solve"], 0.0) / its
        per_it["total"] = med["newton_wall"] / its
        med["per_iteration"] = per_it
        med["assembly_fraction"] = (per_it["residual"] + per_it["jacobian"]) / per_it["total"]
    if "newton_per_mesh" in src[0]:
        med["newton_per_mesh"] = src[0]["newton_per_mesh"]
    out["median"] = med
    return out


def _allreduce_latency(mpi, count: int = 300) -> dict | None:
    """Seconds of one 8-byte ``MPI_Allreduce``: median, mean, max (``None`` on one rank). Krylov methods pay it
    several times per iteration: microseconds on an idle node, milliseconds when the
    cores are oversubscribed and waiting ranks yield (``mpi_yield_when_idle``)."""
    import numpy as np

    if mpi.Get_size() == 1:
        return None
    a, b = np.ones(1), np.empty(1)
    ts = []
    for _ in range(count):
        t = time.perf_counter()
        mpi.Allreduce(a, b)
        ts.append(time.perf_counter() - t)
    return {"median": float(mpi.allreduce(float(np.median(ts)), op=__import__("mpi4py").MPI.MAX)),
            "mean": float(mpi.allreduce(float(np.mean(ts)), op=__import__("mpi4py").MPI.MAX)),
            "max": float(mpi.allreduce(float(np.max(ts)), op=__import__("mpi4py").MPI.MAX))}


def _max_records(recs: list):
    """Combine the ranks' records: the max of every number (the slowest rank), ``and`` of flags."""
    def f(a, b):
        if isinstance(a, dict):
            return {k: f(a[k], b[k]) for k in a}
        if isinstance(a, list):
            return [f(x, y) for x, y in zip(a, b)]
        if isinstance(a, bool):
            return a and b
        if isinstance(a, (int, float)):
            return max(a, b)
        return a
    out = recs[0]
    for r in recs[1:]:
        out = f(out, r)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m mfc_hpc.perf CASE.json OUT.json [PETSc options]`` under mpiexec/srun."""
    t_python = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    case_path, out_path, petsc_args = argv[0], argv[1], argv[2:]
    t = time.perf_counter()
    import petsc4py
    case = json.loads(Path(case_path).read_text())
    opts = list(petsc_args)
    if case.get("solver") and case["solver"] != "options":
        opts = solver_options(case["solver"]) + opts
    elif case.get("options"):
        opts = case["options"].split() + opts
    petsc4py.init([sys.argv[0]] + opts)
    from petsc4py import PETSc

    PETSc.Log.begin()
    from . import run  # noqa: F401  (the import time of the package is part of the record)
    case["t_import"] = time.perf_counter() - t
    case["t_python"] = t_python
    case["petsc_options"] = " ".join(opts)
    rec = measure_case(case)
    if rec is not None:
        Path(out_path).write_text(json.dumps(rec, indent=1))
    return 0


# ----------------------------------------------------------------------------- planning

def fit_power(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a x^p`` in log-log; returns ``(a, p)`` (``p = 0`` for one point)."""
    import numpy as np

    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2 or np.ptp(lx) == 0:
        return float(np.exp(ly.mean())), 0.0
    p, c = np.polyfit(lx, ly, 1)
    return float(np.exp(c)), float(p)


def parse_bytes(s: str) -> float:
    """``"256G"``, ``"1.5T"``, ``"512M"``, ``"4096"`` -> bytes (powers of 1024)."""
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        if s and s[-1] in mult:
            return float(s[:-1]) * mult[s[-1]]
        return float(s)
    except ValueError:
        raise ValueError(f"cannot read a memory size from {s!r} (e.g. 256G, 512M)") from None


def load_rates(path: str | Path | None = None) -> dict:
    """The measured rates (``perf_rates.json``, written by ``scripts/bench_solver.py --write-rates``)."""
    p = Path(path) if path else RATES_PATH
    if not p.is_file():
        raise FileNotFoundError(f"no measured rates at {p}: run scripts/bench_solver.py --write-rates")
    return json.loads(p.read_text())


def _model(rates: dict, solver: str) -> dict:
    models = rates["solvers"]
    if solver not in models:
        raise ValueError(f"no measured rates for solver {solver!r}; measured: {', '.join(models)}")
    return models[solver]


def job_bytes(rates: dict, solver: str, unknowns: float, ranks: int, classes: int = 1) -> float:
    """Modelled memory of a whole job: the ranks' baseline plus ``bytes/unknown(n) * n``.

    Bytes per unknown are fitted as ``a n^p`` on one class; ``K`` classes have ``2K x 3``
    blocks per matrix row instead of ``2 x 3``, so the per-unknown part is scaled by ``K``
    (conservative for the vectors, right for the matrix and its factors).
    """
    m = _model(rates, solver)
    a, p = m["bytes_per_unknown"]["a"], m["bytes_per_unknown"]["p"]
    return ranks * rates["rank_baseline_bytes"] + classes * a * unknowns ** p * unknowns


def iteration_seconds(rates: dict, solver: str, unknowns: float, ranks: int, classes: int = 1) -> float:
    """Modelled seconds per Newton iteration: ``a (n/P)^p / eff`` with the measured serial
    fit and the parallel efficiency measured at the largest rank count of the benchmark
    (extrapolating it to many ranks is optimistic for the direct solver)."""
    m = _model(rates, solver)
    a, p = m["seconds_per_iteration"]["a"], m["seconds_per_iteration"]["p"]
    eff = 1.0 if ranks == 1 else m.get("parallel_efficiency", 1.0)
    return classes ** 2 * a * (unknowns / ranks) ** p / eff


def plan(memory: float, ranks: int, classes: int = 1, solver: str | None = None, aspect: float = 4.0,
         safety: float = 0.8, rates: dict | None = None) -> dict:
    """The largest mesh ``M x (N+1)`` with ``M - 1 = aspect N`` whose modelled memory is at
    most ``safety * memory``, and its modelled time."""
    rates = rates or load_rates()
    if solver is None:
        # what solver.linear = "auto" runs on meshes this large: multigrid split along depth
        # for one class (when its rates were measured), the rates file's default otherwise
        solver = "fgmres_mg_levels" if classes == 1 and "fgmres_mg_levels" in rates.get("solvers", {}) \
            else rates.get("default_solver", "mumps")
    budget = safety * memory

    def fits(N: int) -> bool:
        M = int(round(aspect * N)) + 1
        return job_bytes(rates, solver, 2 * classes * M * (N + 1), ranks, classes) <= budget

    if not fits(1):
        raise ValueError(f"{memory / 2**30:.3g} GiB cannot hold {ranks} ranks (baseline "
                         f"{rates['rank_baseline_bytes'] / 2**20:.0f} MiB each) and the smallest mesh")
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    N = lo
    M = int(round(aspect * N)) + 1
    n = 2 * classes * M * (N + 1)
    m = _model(rates, solver)
    its = m.get("newton_iterations", 5)
    t_it = iteration_seconds(rates, solver, n, ranks, classes)
    return {"solver": solver, "ranks": ranks, "classes": classes, "memory": memory, "safety": safety,
            "nodes": M, "layers": N, "unknowns": n,
            "bytes": job_bytes(rates, solver, n, ranks, classes),
            "bytes_per_rank": job_bytes(rates, solver, n, ranks, classes) / ranks,
            "newton_iterations": its, "seconds_per_iteration": t_it,
            "seconds": its * t_it, "machine": rates.get("machine")}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
