"""Performance measurement and planning for any state dimension: the worker behind
``scripts/bench_solver.py`` and ``scripts/scaling_study.py``, the named linear-solver
configurations they compare, the memory-bandwidth probes, and the memory/time model that
``mfc-hpc plan`` reads from ``perf_rates.json``.

The measuring half runs inside ``mpiexec -n P python -m mfc_hpc.studies.perf CASE.json
OUT.json [PETSc options]`` (one process group per case, so that the peak memory of one
case does not leak into the next); the planning half (:func:`load_rates`, :func:`plan`)
needs neither MPI nor PETSc.

Time of a Newton solve is split per Newton iteration (slowest rank of each phase):

* ``residual``: the ``mfc_residual`` event; ``jacobian``: ``mfc_jacobian`` (evaluation and
  the gather into the matrix);
* ``linear_solve``: the rest of ``SNESSolve`` (the KSP solve with its preconditioner
  set-up, factorisation or Galerkin products, plus the line search's vector updates: a few
  vector passes, nothing else runs there). PETSc's ``KSPSolve`` and ``PCSetUp`` events nest
  differently for direct and multigrid solvers, so they are recorded (``events``) but not
  summed;
* ``io``: writing ``solution.h5`` (``--io``).

Peak memory is ``getrusage(RUSAGE_SELF).ru_maxrss`` per rank (max and sum over ranks);
bytes per unknown is ``(sum of peaks - sum of the ranks' baseline after imports) /
unknowns``. The CPU share of each rank (CPU seconds / wall seconds of the repeat) says how
much of a core it got on a shared machine.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..parallel.linear import DIRECT, MULTIGRID, choose_linear, options_string

__all__ = ["SOLVERS", "Configuration", "solver_options", "case_mesh", "case_unknowns", "load_rates", "plan",
           "parse_bytes", "parse_mesh", "format_mesh", "RATES_PATH", "RATES_FORMAT", "fit_power", "stream_triad",
           "measure_case", "compile_triad", "run_triad_copies", "bandwidth_ceiling", "usable_cpus", "job_bytes",
           "iteration_seconds", "model_for", "ASPECT", "auto_solver"]


@dataclass(frozen=True)
class Configuration:
    """A named linear-solver configuration: PETSc options below the prefix ``-mfc_`` and
    whether the ranks are split along depth only (``depth``: process grid ``1 x .. x 1 x P``,
    what the package's multigrid does) or as PETSc chooses (``petsc``); ``package``: what
    ``solver.linear`` it stands for (``None``: options only)."""

    options: str
    split: str = "petsc"
    package: str | None = None
    note: str = ""


_MG = options_string(MULTIGRID)
_MG_RELEASE = _MG + " pc_mg_levels 4 mg_coarse_pc_factor_mat_solver_type mumps"
_GMRES = "ksp_type gmres ksp_gmres_restart 100 ksp_rtol 1e-8 ksp_max_it 2000"

#: Linear-solver configurations compared by the benchmarks. ``default`` gives no option:
#: the package's choice for the mesh (``solver.linear = "auto"``,
#: :func:`mfc_hpc.parallel.linear.choose_linear`); ``direct`` and ``multigrid`` are the
#: package's two presets (``solver.linear``); the others are PETSc options for comparison.
SOLVERS: dict[str, Configuration] = {
    "default": Configuration("", "petsc", "auto", "the package's size rule (solver.linear = auto)"),
    "direct": Configuration("", "petsc", "direct", "MUMPS LU (solver.linear = direct)"),
    "multigrid": Configuration("", "depth", "multigrid",
                               "FGMRES + Galerkin PCMG, GMRES(4) + block-Jacobi ILU(0) smoothing, ranks along depth "
                               "(solver.linear = multigrid)"),
    "mumps": Configuration(options_string({**DIRECT, "pc_factor_mat_solver_type": "mumps"}), "petsc", None,
                           "MUMPS LU as options"),
    # the release's multigrid as options: a fixed 4 levels (the package's preset computes
    # them per mesh, parallel.linear.multigrid_levels); without pc_mg_levels PCMG runs one level
    "fgmres_mg": Configuration(_MG_RELEASE, "petsc", None, "the release's 4-level multigrid on PETSc's process grid"),
    "fgmres_mg_levels": Configuration(_MG_RELEASE, "depth", None,
                                      "the release's 4-level multigrid with block-Jacobi ILU(0) smoothing, ranks "
                                      "along depth (the preset as options, on meshes with 4 levels)"),
    # smoothers of the multigrid: each the package's preset (its levels, Galerkin coarse
    # operators, coarse LU) with one change given as options (which win over the preset)
    "mg_richardson": Configuration("mg_levels_ksp_type richardson mg_levels_ksp_max_it 2", "depth", "multigrid",
                                   "smoother: 2 Richardson sweeps of the preset's ILU(0) blocks"),
    "mg_pbjacobi": Configuration("mg_levels_pc_type pbjacobi", "depth", "multigrid",
                                 "smoother: GMRES(4) + point-block Jacobi (2K x 2K blocks)"),
    "mg_bjacobi": Configuration("mg_levels_pc_type bjacobi mg_levels_sub_pc_type ilu", "depth", "multigrid",
                                "smoother: GMRES(4) + block-Jacobi ILU(0) (the preset's, as options)"),
    "mg_asm": Configuration("mg_levels_pc_type asm mg_levels_pc_asm_overlap 1 mg_levels_sub_pc_type ilu", "depth",
                            "multigrid", "smoother: GMRES(4) + additive Schwarz (overlap 1) ILU(0) (the 2-D preset until 2026-12-02)"),
    "mg_gmres2": Configuration("mg_levels_ksp_max_it 2", "depth", "multigrid",
                               "smoother: GMRES(2) instead of GMRES(4)"),
    "mg_sor": Configuration("mg_levels_pc_type sor", "depth", "multigrid", "smoother: GMRES(4) + SOR"),
    "mg_fieldsplit": Configuration("mg_levels_pc_type fieldsplit mg_levels_pc_fieldsplit_type multiplicative "
                                   "mg_levels_pc_fieldsplit_0_fields {rho} mg_levels_pc_fieldsplit_1_fields {phi} "
                                   "mg_levels_fieldsplit_0_pc_type bjacobi mg_levels_fieldsplit_1_pc_type bjacobi",
                                   "depth", "multigrid",
                                   "smoother: GMRES(4) + multiplicative field split, densities then adjoints "
                                   "(block-Jacobi ILU(0) in each)"),
    "mg_ilu1": Configuration("mg_levels_sub_pc_factor_levels 1", "depth", "multigrid",
                             "the multigrid preset with ILU(1) instead of ILU(0) in the smoother's blocks"),
    "mg_gmres6": Configuration("mg_levels_ksp_max_it 6", "depth", "multigrid",
                               "the multigrid preset with GMRES(6) instead of GMRES(4) smoothing"),
    "mg_rediscretised": Configuration("mg_coarse_operators rediscretised", "depth", "multigrid",
                                      "the multigrid preset with the coarse operators rediscretised at the injected "
                                      "iterate instead of Galerkin products (mfc_hpc.parallel.coarse)"),
    # single-level iterative solvers
    "gmres_bjacobi_ilu2": Configuration(_GMRES + " pc_type bjacobi sub_pc_type ilu sub_pc_factor_levels 2",
                                        "petsc", None, "GMRES(100) + block-Jacobi ILU(2)"),
    "gmres_bjacobi_ilu2_levels": Configuration(_GMRES + " pc_type bjacobi sub_pc_type ilu sub_pc_factor_levels 2",
                                               "depth", None, "GMRES(100) + block-Jacobi ILU(2), ranks along depth"),
}

RATES_PATH = Path(__file__).resolve().parents[1] / "perf_rates.json"
#: version of the rates file this module writes (format 1: the 1-D release's, still read)
RATES_FORMAT = 2
_FORMAT1_ALIASES = {"mumps": "direct", "fgmres_mg_levels": "multigrid"}
#: ``(M - 1) / N`` of the planner's meshes per state dimension (129 x 32 in 1-D, 129^2 x 64 in 2-D)
ASPECT = {1: 4.0, 2: 2.0}


def depth_split(ndim: int) -> list[str]:
    """PETSc options splitting the ranks along depth only (the DMDA's slowest axis)."""
    names = "xyz"[:ndim]
    out: list[str] = []
    for n in names:
        out += [f"da_processors_{n}", "1"]
    return out


def solver_options(name: str, ndim: int = 1, prefix: str = "mfc_", classes: int = 1) -> list[str]:
    """The command-line options of a named configuration for a ``ndim``-dimensional state
    with ``classes`` classes (``["-mfc_ksp_type", "fgmres", ...]``). The package presets
    give none: they are chosen by ``solver.linear`` (see :func:`config_changes`)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver configuration {name!r}; known: {', '.join(SOLVERS)}")
    c = SOLVERS[name]
    toks = c.options.format(rho=",".join(map(str, range(classes))),
                            phi=",".join(map(str, range(classes, 2 * classes)))).split()
    if c.split == "depth" and c.package is None:
        toks += depth_split(ndim)
    out = []
    for k, v in zip(toks[::2], toks[1::2]):
        out += [f"-{prefix}{k}", v]
    return out


def config_changes(name: str) -> dict:
    """``[solver]`` changes a named configuration makes (``linear`` for the package presets)."""
    c = SOLVERS[name]
    return {"linear": c.package} if c.package is not None else {}


def parse_mesh(s: str) -> tuple[tuple[int, ...], int]:
    """``"129x32"`` (1-D: nodes x layers) or ``"65x65x32"`` (2-D) -> ``((nodes..), layers)``."""
    try:
        parts = [int(p) for p in s.lower().split("x")]
    except ValueError:
        raise ValueError(f"mesh {s!r}: expected NODESxLAYERS or NODES1xNODES2xLAYERS, e.g. 129x32, 65x65x32") from None
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise ValueError(f"mesh {s!r}: expected NODESxLAYERS or NODES1xNODES2xLAYERS, e.g. 129x32, 65x65x32")
    return tuple(parts[:-1]), parts[-1]


def format_mesh(nodes, layers: int) -> str:
    nodes = (nodes,) if isinstance(nodes, int) else tuple(nodes)
    return "x".join(map(str, nodes)) + f"x{layers}"


def case_unknowns(nodes, layers: int, classes: int) -> int:
    nodes = (nodes,) if isinstance(nodes, int) else tuple(nodes)
    return 2 * classes * math.prod(nodes) * (layers + 1)


def case_mesh(unknowns: float, ndim: int = 1, classes: int = 1, aspect: float | None = None,
              multiple: int = 8) -> tuple[tuple[int, ...], int]:
    """``(nodes, N)`` with ``M - 1 = aspect N`` on every axis, ``N`` a multiple of
    ``multiple`` (the mesh coarsens for multigrid and grid sequencing), about
    ``2 K M^d (N + 1) = unknowns``."""
    a = ASPECT[ndim] if aspect is None else aspect
    N = (unknowns / (2 * classes * a ** ndim)) ** (1.0 / (ndim + 1))
    N = max(multiple, int(round(N / multiple)) * multiple)
    return (int(round(a * N)) + 1,) * ndim, N


# ----------------------------------------------------------------------------- memory bandwidth

def stream_triad(n: int = 20_000_000, repeats: int = 5) -> dict:
    """STREAM triad ``a = b + s c`` in numpy: best bandwidth over ``repeats`` (bytes/s,
    counting 3 arrays of 8-byte doubles moved per element, as STREAM does).

    numpy evaluates ``b + s*c`` in two passes with a temporary unless written with ``out=``;
    both are reported (``numpy_naive``: ``a[:] = b + s*c``; ``numpy_inplace``: two ufunc
    calls into ``a``, which moves 5 arrays, reported as STREAM's 3 for comparability), and
    the compiled C triad (``compiled_c``) where a C compiler is present.
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
    measurement. ``None`` when a copy fails or prints no number.
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
    aggregate(1)`` bounds the speed-up of a memory-bound solve on ``P`` ranks. Copies are
    capped at ``max_copies`` (default: the usable CPUs).

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

#: PETSc events recorded per solve (seconds, slowest rank)
_EVENTS = {"residual": ["mfc_residual"], "jacobian": ["mfc_jacobian"], "snes": ["SNESSolve"],
           "ksp_solve": ["KSPSolve"], "pc_setup": ["PCSetUp"], "factorisation": ["MatLUFactorNum", "MatLUFactorSym"],
           "ptap": ["MatPtAPSymbolic", "MatPtAPNumeric"], "guess_linear": ["mfc_linear_solve"], "io": ["mfc_io"]}


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


def _load_case_config(case: dict):
    """The case's configuration with its mesh and solver changes."""
    from ..config import load_config

    cfg = load_config(case["config"])
    nodes = case["nodes"]
    nodes = tuple(nodes) if isinstance(nodes, (list, tuple)) else (int(nodes),) * cfg.ndim
    if len(nodes) != cfg.ndim:
        raise ValueError(f"case: {len(nodes)} node counts for the {cfg.ndim}-D configuration {case['config']}")
    solver = dict(config_changes(case["solver"])) if case.get("solver") in SOLVERS else {}
    if case.get("grid_levels"):
        solver["grid_levels"] = int(case["grid_levels"])
    if case.get("max_it"):
        solver["max_it"] = int(case["max_it"])
    cfg = cfg.replace(mesh={"nodes": nodes, "layers": int(case["layers"])}, **({"solver": solver} if solver else {}))
    return cfg


def _one_newton(problem, comm, case: dict, PETSc) -> tuple[dict, object]:
    """Build the solver, the uncontrolled guess, Newton (timed by phase)."""
    from ..drivers.run import build_solver

    t0 = time.perf_counter()
    ms = build_solver(problem, comm, verbose=False)
    t_setup = time.perf_counter() - t0
    lin: list[int] = []
    ms.iteration_hook = lambda its, f, h, first: lin.append(ms.snes.getLinearSolveIterations())
    e0 = _event_times(PETSc)
    t1 = time.perf_counter()
    ms.uncontrolled_guess()
    t_guess = time.perf_counter() - t1
    guess_lin = ms.snes.getKSP().getIterationNumber()
    e1 = _event_times(PETSc)
    res = ms.solve()
    e2 = _event_times(PETSc)
    t_io = 0.0
    if case.get("io"):
        from ..fileio.solution import write_solution

        t2 = time.perf_counter()
        write_solution(Path(case["io_dir"]) / f"solution_{comm.getSize()}.h5", ms.mesh, ms.X)
        t_io = time.perf_counter() - t2
    newton = {k: e2[k] - e1[k] for k in e2}
    rec = {"converged": bool(res.converged), "reason": res.reason,
           "newton_iterations": res.iterations, "linear_iterations": res.linear_iterations,
           "linear_per_newton": [b - a for a, b in zip(lin, lin[1:])], "guess_linear_iterations": guess_lin,
           "setup": t_setup, "guess": t_guess, "newton_wall": res.wall, "io": t_io,
           "newton_phases": newton, "guess_phases": {k: e1[k] - e0[k] for k in e1},
           "linear_solver": ms.linear, "matrix": ms.matrix_info()}
    return rec, ms


def _grid_sequence(problem, comm) -> tuple[dict, object]:
    """The whole driver with grid sequencing: Newton and linear iterations per mesh."""
    from ..jobs.solve import solve

    out = solve(problem, comm, verbose=False, xdmf=False)
    s = out.summary
    per = []
    for h in s["newton"]:
        per.append({"nodes": h["nodes"], "layers": h["layers"], "unknowns": h["unknowns"],
                    "newton_iterations": h["newton_iterations"], "converged": h.get("converged"),
                    "stages": [{k: st.get(k) for k in ("param", "iterations", "converged", "reason")}
                               for st in h.get("stages", [])]})
    rec = {"converged": bool(s["converged"]), "newton_per_mesh": per,
           "newton_iterations": s["newton_iterations_fine"], "linear_solver": s.get("linear_solver"),
           "setup": s["timings"].get("setup", 0.0)}
    return rec, out.ms


def measure_case(case: dict) -> dict | None:
    """Run one benchmark case on ``PETSc.COMM_WORLD`` (collective); rank 0 gets the record.

    ``case``: ``config`` (TOML path), ``nodes`` (a number or one per state axis),
    ``layers``, ``solver`` (a name of :data:`SOLVERS`), ``repeats``, optional ``io``
    (write ``solution.h5`` to ``io_dir``), ``grid_levels`` (run the whole driver with grid
    sequencing and record Newton steps per mesh), ``kind = "gradient"`` (time the
    optimisation route's gradient, :func:`gradient_case`), ``t_launch`` (``time.time()``
    of the launcher, for the start-up time), ``t_python`` and ``t_import`` (set by
    :func:`main`).
    """
    from petsc4py import PETSc

    from ..jobs.solve import shared_problem

    comm = PETSc.COMM_WORLD
    mpi = comm.tompi4py()
    rank, size = comm.getRank(), comm.getSize()
    rss_base = _rss_bytes()
    latency = _allreduce_latency(mpi)
    cfg = _load_case_config(case)
    problem = shared_problem(cfg, comm)
    if case.get("kind") == "gradient":
        return gradient_case(case, problem, comm, rss_base, latency)
    reps = []
    info = None
    for r in range(int(case.get("repeats", 3))):
        mpi.Barrier()
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        if case.get("grid_levels"):
            rec, ms = _grid_sequence(problem, comm)
        else:
            rec, ms = _one_newton(problem, comm, case, PETSc)
        rec["total"] = time.perf_counter() - t0
        unknowns = ms.X.getSize()
        grid = ms.mesh.proc_sizes
        info = rec.pop("matrix", info)
        ms.destroy()
        # CPU seconds this rank got over the repeat's wall time: well below 1 when the
        # machine is shared (other jobs took the core); the min over ranks is reported
        rec["cpu_fraction"] = -(_cpu_seconds() - c0) / max(time.perf_counter() - t0, 1e-9)
        recs = mpi.gather(rec, root=0)
        if rank == 0:
            shares = [-r_["cpu_fraction"] for r_ in recs]
            rec = _max_records([dict(r_) for r_ in recs])
            rec["cpu_fraction"] = min(shares)
            rec["cpu_fraction_ranks"] = shares
        reps.append(rec)
    rss = _rss_bytes()
    rss_all = mpi.gather(rss, root=0)
    base_all = mpi.gather(rss_base, root=0)
    if rank != 0:
        return None
    out = _common_record(case, cfg, size, grid, unknowns, rss_all, base_all, latency)
    out["repeats_data"] = reps
    out["matrix"] = info
    ok = [r for r in reps if r["converged"]]
    out["converged"] = len(ok) == len(reps)
    out["median"] = _medians(ok or reps)
    return out


def _common_record(case, cfg, size, grid, unknowns, rss_all, base_all, latency) -> dict:
    out = {k: case[k] for k in case if k not in ("t_launch",)}
    out.update({"ndim": cfg.ndim, "classes": cfg.K, "ranks": size, "process_grid": list(grid), "unknowns": unknowns,
                "startup": case.get("t_python", 0.0) - case["t_launch"] if "t_launch" in case else None,
                "import": case.get("t_import"),
                "rss_peak_max": max(rss_all), "rss_peak_sum": sum(rss_all), "rss_base_sum": sum(base_all),
                "bytes_per_unknown": (sum(rss_all) - sum(base_all)) / unknowns,
                "loadavg": os.getloadavg(), "allreduce_latency": latency, "cpus": usable_cpus()})
    return out


def _medians(src: list[dict]) -> dict:
    """Medians over the repeats; per Newton iteration the phases and the assembly share."""
    import numpy as np

    med: dict = {}
    for key in ("newton_iterations", "linear_iterations", "guess_linear_iterations", "setup", "guess",
                "newton_wall", "io", "total", "cpu_fraction"):
        vals = [r[key] for r in src if key in r]
        if vals:
            med[key] = float(np.median(vals))
    if "newton_phases" in src[0]:
        med["newton_phases"] = {k: float(np.median([r["newton_phases"][k] for r in src]))
                                for k in src[0]["newton_phases"]}
        med["linear_per_newton"] = src[0]["linear_per_newton"]
        its = max(med["newton_iterations"], 1)
        ph = med["newton_phases"]
        per_it = {"residual": ph["residual"] / its, "jacobian": ph["jacobian"] / its,
                  "linear_solve": max(ph["snes"] - ph["residual"] - ph["jacobian"], 0.0) / its,
                  "total": med["newton_wall"] / its}
        med["per_iteration"] = per_it
        med["assembly_fraction"] = (per_it["residual"] + per_it["jacobian"]) / max(per_it["total"], 1e-300)
        med["linear_solver"] = src[0].get("linear_solver")
    if "newton_per_mesh" in src[0]:
        med["newton_per_mesh"] = src[0]["newton_per_mesh"]
        med["linear_solver"] = src[0].get("linear_solver")
    return med


def gradient_case(case: dict, problem, comm, rss_base: int, latency) -> dict | None:
    """Time the optimisation route's cost-and-gradient evaluation (the benchmark hook of
    the distributed minimiser).

    When :mod:`mfc_hpc.drivers.optimisation` provides ``distributed_gradient(problem,
    comm)`` -- a callable ``g(theta) -> (J, gradient)`` on the rank's share of the
    log-tilts, with ``g.theta0`` the starting point -- that is timed on every rank
    (``route = "distributed"``). Until then the serial gradient of
    :func:`mfc_hpc.numerics.training.cost_and_gradient` runs on rank 0 (``route =
    "serial"``; the other ranks wait), which is what the optimisation route uses today.
    Median of ``repeats`` evaluations at the zero network.
    """
    import numpy as np

    from ..drivers import optimisation as opt

    mpi = comm.tompi4py()
    repeats = int(case.get("repeats", 3))
    make = getattr(opt, "distributed_gradient", None)
    times = []
    c0 = _cpu_seconds()
    t_all = time.perf_counter()
    if make is not None:
        g = make(problem, comm)
        theta = getattr(g, "theta0")
        for _ in range(repeats):
            mpi.Barrier()
            t = time.perf_counter()
            g(theta)
            times.append(mpi.allreduce(time.perf_counter() - t, op=_mpi_max()))
        route = "distributed"
    else:
        from ..numerics.training import TiltLayout, cost_and_gradient

        d, bd = problem.d, problem.bd
        if mpi.rank == 0:
            theta = np.zeros(TiltLayout(d).size)
        for _ in range(repeats):
            mpi.Barrier()
            t = time.perf_counter()
            if mpi.rank == 0:
                cost_and_gradient(theta, d, bd)
            mpi.Barrier()
            times.append(time.perf_counter() - t)
        route = "serial"
    cpu = (_cpu_seconds() - c0) / max(time.perf_counter() - t_all, 1e-9)
    cpus = mpi.gather(cpu, root=0)
    rss_all, base_all = mpi.gather(_rss_bytes(), root=0), mpi.gather(rss_base, root=0)
    if mpi.rank != 0:
        return None
    out = _common_record(case, problem.cfg, comm.getSize(), (), problem.d.unknowns, rss_all, base_all, latency)
    out.update({"kind": "gradient", "route": route, "gradient_seconds": times, "converged": True,
                "median": {"gradient": float(np.median(times)), "cpu_fraction": float(min(cpus))}})
    return out


def _mpi_max():
    from mpi4py import MPI
    return MPI.MAX


def _allreduce_latency(mpi, count: int = 300) -> dict | None:
    """Seconds of one 8-byte ``MPI_Allreduce``: median, mean, max (``None`` on one rank)."""
    import numpy as np

    if mpi.Get_size() == 1:
        return None
    a, b = np.ones(1), np.empty(1)
    ts = []
    for _ in range(count):
        t = time.perf_counter()
        mpi.Allreduce(a, b)
        ts.append(time.perf_counter() - t)
    mx = _mpi_max()
    return {"median": float(mpi.allreduce(float(np.median(ts)), op=mx)),
            "mean": float(mpi.allreduce(float(np.mean(ts)), op=mx)),
            "max": float(mpi.allreduce(float(np.max(ts)), op=mx))}


def _max_records(recs: list):
    """Combine the ranks' records: the max of every number (the slowest rank), ``and`` of flags."""
    def f(a, b):
        if isinstance(a, dict):
            return {k: f(a[k], b[k]) for k in a}
        if isinstance(a, list):
            return [f(x, y) for x, y in zip(a, b)]
        if isinstance(a, bool):
            return a and b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return max(a, b)
        return a
    out = recs[0]
    for r in recs[1:]:
        out = f(out, r)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m mfc_hpc.studies.perf CASE.json OUT.json [PETSc options]`` under mpiexec/srun."""
    t_python = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    case_path, out_path, petsc_args = argv[0], argv[1], argv[2:]
    t = time.perf_counter()
    import petsc4py
    case = json.loads(Path(case_path).read_text())
    opts = list(petsc_args)
    if case.get("solver") in SOLVERS:
        opts = solver_options(case["solver"], int(case.get("ndim", 1)), classes=int(case.get("classes") or 1)) + opts
    petsc4py.init([sys.argv[0]] + opts)
    from petsc4py import PETSc

    PETSc.Log.begin()
    from ..jobs import solve  # noqa: F401  (the import time of the package is part of the record)
    case["t_import"] = time.perf_counter() - t
    case["t_python"] = t_python
    case["petsc_options"] = " ".join(opts)
    rec = measure_case(case)
    if rec is not None:
        from ..fileio.summary import versions, write_json

        rec["versions"] = versions()
        write_json(out_path, rec)
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
    given = s
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        if s and s[-1] in mult:
            v = float(s[:-1]) * mult[s[-1]]
        else:
            v = float(s)
    except ValueError:
        raise ValueError(f"cannot read a memory size from {given!r} (e.g. 256G, 512M)") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"cannot read a memory size from {given!r}: must be a positive size (e.g. 256G, 512M)")
    return v


def load_rates(path: str | Path | None = None) -> dict:
    """The measured rates (``perf_rates.json``, written by ``scripts/bench_solver.py
    --write-rates``), as format 2: ``{"format": 2, "machine", "rank_baseline_bytes",
    "models": [{"ndim", "classes", "solver", "bytes_per_unknown": {a, p},
    "seconds_per_iteration": {a, p}, "newton_iterations", ...}]}``. A format-1 file (the
    1-D release's ``{"solvers": {name: model}}``, one class) is read as 1-D, ``K = 1``."""
    p = Path(path) if path else RATES_PATH
    if not p.is_file():
        raise FileNotFoundError(f"no measured rates at {p}: run scripts/bench_solver.py --write-rates")
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: not a rates file ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: not a rates file")
    if doc.get("format", 1) == 1 and "solvers" in doc:
        models = [dict(m, ndim=1, classes=1, solver=name) for name, m in doc["solvers"].items()]
        # the release's names of what solver.linear = direct / multigrid run
        models += [dict(m, solver=_FORMAT1_ALIASES[m["solver"]]) for m in models if m["solver"] in _FORMAT1_ALIASES]
        doc = {"format": RATES_FORMAT, "machine": doc.get("machine"), "generated": doc.get("generated"),
               "rank_baseline_bytes": doc.get("rank_baseline_bytes", 1.2e8), "models": models}
    if doc.get("format") != RATES_FORMAT or not isinstance(doc.get("models"), list):
        raise ValueError(f"{p}: rates format {doc.get('format')!r} is not {RATES_FORMAT}")
    return doc


def model_for(rates: dict, solver: str, ndim: int, classes: int) -> dict:
    """The measured model of ``solver`` in ``ndim`` dimensions with the nearest number of
    classes (ties: the larger, the conservative side); ``ValueError`` when none."""
    cands = [m for m in rates["models"] if m["solver"] == solver and m["ndim"] == ndim]
    if not cands:
        have = sorted({(m["solver"], m["ndim"]) for m in rates["models"]})
        raise ValueError(f"no measured rates for solver {solver!r} in {ndim}-D; measured: "
                         + ", ".join(f"{s} ({n}-D)" for s, n in have))
    return min(cands, key=lambda m: (abs(m["classes"] - classes), -m["classes"]))


def job_bytes(rates: dict, solver: str, unknowns: float, ranks: int, classes: int = 1, ndim: int = 1) -> float:
    """Modelled memory of a whole job: the ranks' baseline plus ``bytes/unknown(n) * n``.

    Bytes per unknown are fitted as ``a n^p`` for a measured ``(d, K)``; another ``K`` scales
    them by ``K / K_measured`` (``2K x 2K`` blocks per matrix row: right for the matrix and
    its factors, conservative for the vectors).
    """
    m = model_for(rates, solver, ndim, classes)
    a, p = m["bytes_per_unknown"]["a"], m["bytes_per_unknown"]["p"]
    return ranks * rates["rank_baseline_bytes"] + (classes / m["classes"]) * a * unknowns ** p * unknowns


def iteration_seconds(rates: dict, solver: str, unknowns: float, ranks: int, classes: int = 1,
                      ndim: int = 1) -> float:
    """Modelled seconds per Newton iteration: ``a (n/P)^p / eff`` with the measured
    one-rank fit and the parallel efficiency measured at the largest rank count of the
    benchmark, times ``K / K_measured`` for another number of classes (the work per
    unknown grows with the ``2K``-wide blocks)."""
    m = model_for(rates, solver, ndim, classes)
    a, p = m["seconds_per_iteration"]["a"], m["seconds_per_iteration"]["p"]
    eff = 1.0 if ranks == 1 else m.get("parallel_efficiency", 1.0)
    return (classes / m["classes"]) * a * (unknowns / ranks) ** p / eff


class _Sizes:
    """What :func:`choose_linear` reads of a discretisation (sizes only)."""

    def __init__(self, nodes: tuple[int, ...], N: int, K: int) -> None:
        from ..numerics.grid import StateGrid

        self.grid = StateGrid((0.0,) * len(nodes), (1.0,) * len(nodes), nodes)
        self.N, self.K, self.ndim = N, K, len(nodes)
        self.unknowns = case_unknowns(nodes, N, K)


def auto_solver(nodes, layers: int, classes: int) -> str:
    """What ``solver.linear = "auto"`` runs on a mesh: ``"direct"`` or ``"multigrid"``
    (:func:`mfc_hpc.parallel.linear.choose_linear`), the names of their rate models."""
    nodes = (nodes,) if isinstance(nodes, int) else tuple(nodes)
    return choose_linear(_Sizes(nodes, int(layers), int(classes)), "auto")


def plan(memory: float, ranks: int, classes: int = 1, ndim: int = 1, solver: str | None = None,
         aspect: float | None = None, safety: float = 0.8, rates: dict | None = None) -> dict:
    """The largest mesh ``M^d x (N+1)`` with ``M - 1 = aspect N`` whose modelled memory is at
    most ``safety * memory``, and its modelled time.

    ``solver = None``: what ``solver.linear = "auto"`` runs on that mesh (the ``direct`` or
    ``multigrid`` model; the choice is made again for each candidate mesh)."""
    rates = rates or load_rates()
    a = ASPECT[ndim] if aspect is None else aspect
    budget = safety * memory

    def mesh(N: int) -> tuple[tuple[int, ...], int]:
        return (int(round(a * N)) + 1,) * ndim, N

    def which(N: int) -> str:
        if solver is not None:
            return solver
        nodes, _ = mesh(N)
        return auto_solver(nodes, N, classes)

    def bytes_of(N: int) -> float:
        nodes, _ = mesh(N)
        return job_bytes(rates, which(N), case_unknowns(nodes, N, classes), ranks, classes, ndim)

    which(1)  # an unknown solver is refused before any search
    model_for(rates, which(1), ndim, classes)
    if bytes_of(1) > budget:
        raise ValueError(f"{memory / 2**30:.3g} GiB cannot hold {ranks} ranks (baseline "
                         f"{rates['rank_baseline_bytes'] / 2**20:.0f} MiB each) and the smallest mesh")
    lo, hi = 1, 2
    while bytes_of(hi) <= budget:
        lo, hi = hi, hi * 2
        if hi > 1 << 40:  # pragma: no cover - a model whose memory does not grow
            raise ValueError("plan: the memory model does not grow with the mesh")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if bytes_of(mid) <= budget else (lo, mid)
    N = lo
    nodes, _ = mesh(N)
    name = which(N)
    n = case_unknowns(nodes, N, classes)
    m = model_for(rates, name, ndim, classes)
    its = m.get("newton_iterations", 5)
    t_it = iteration_seconds(rates, name, n, ranks, classes, ndim)
    total = job_bytes(rates, name, n, ranks, classes, ndim)
    return {"solver": name, "ranks": ranks, "classes": classes, "ndim": ndim, "memory": memory, "safety": safety,
            "nodes": list(nodes), "layers": N, "unknowns": n, "aspect": a,
            "bytes": total, "bytes_per_rank": total / ranks,
            "newton_iterations": its, "seconds_per_iteration": t_it,
            "seconds": its * t_it, "machine": rates.get("machine"),
            "measured": {"classes": m["classes"], "unknowns": m.get("measured_unknowns"),
                         "parallel_efficiency": m.get("parallel_efficiency")}}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
