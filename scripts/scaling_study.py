#!/usr/bin/env python
"""Parallel scaling study: strong (fixed mesh over 1..P ranks) and weak (fixed unknowns
per rank) scaling of one solve, in separate ``run`` and ``plot`` modes.

    source scripts/env.sh
    # strong and weak scaling on this machine, the package's default solver, median of 3
    python scripts/scaling_study.py run --kind both --ranks 1,2 --mesh 1409x352 \\
        --weak-mesh 513x128 --repeats 3 --out results/scaling
    python scripts/scaling_study.py plot --out results/scaling        # -> scaling.png
    # 2-D, two classes (meshes NODES1xNODES2xLAYERS)
    python scripts/scaling_study.py run --kind strong --config mfc_hpc/examples/bench_2d.toml \\
        --mesh 129x129x64 --repeats 3 --out results/strong_2d
    python scripts/scaling_study.py run --quick --out /tmp/scaling     # smoke run, ~15 s

    # on a cluster (job_templates/scaling_strong.sbatch does this):
    python scripts/scaling_study.py run --kind strong --ranks 1,2,4,...,256 \\
        --launcher "srun --ntasks={n} --cpu-bind=cores" --mesh 8193x2048 --out results/strong

Every (kind, rank count) is one launch of ``python -m mfc_hpc.studies.perf`` (see
:mod:`mfc_hpc.studies.perf`), which repeats the solve ``--repeats`` times in the same processes:
times are medians over the repeats of the slowest rank. A solve here is: build the
solver, the uncontrolled initial guess, Newton to convergence, and (``--io``, the default)
writing ``solution.h5``. Start-up (launcher to first Python line) and import time (petsc4py,
mpi4py and the package) are reported separately and not included in the solve time.

Weak scaling keeps ``--weak-mesh`` per rank and multiplies the layers ``N`` by the rank
count (``--weak-grow layers``, matching a process grid split along depth) or the
intervals ``M - 1`` (``--weak-grow nodes``). The JSON files are ``OUT/strong.json`` and
``OUT/weak.json``: every launch's record under ``cases`` and a summary ``table`` with
speed-up and parallel efficiency per rank count.

Memory-bandwidth ceiling: sparse solves are memory-bound, so ``P`` ranks on one node are
at most as fast as the node's memory bandwidth lets ``P`` processes be. Before and after
the launches of each kind, ``P`` copies of a compiled STREAM triad run at once for every
rank count ``P`` (:func:`mfc_hpc.studies.perf.bandwidth_ceiling`; one node, at most one copy per
usable CPU); the JSON's ``bandwidth`` holds per ``P`` the copies' bandwidths (bytes/s),
their ``aggregate`` and ``ceiling = aggregate(P) / aggregate(1)`` for the ``before`` and
``after`` probes, and the table's ``bw_ceil`` is their mean: a strong-scaling speed-up
cannot exceed it (a weak-scaling efficiency not ``bw_ceil / P``). On a shared host it
drifts with the load of the other guests; compare the two probes. ``null`` without a C
compiler or with ``--no-bandwidth``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_solver import DEFAULT_CONFIG, config_dim, parse_sizes, run_case  # noqa: E402
from mfc_hpc.studies.perf import (SOLVERS, bandwidth_ceiling, compile_triad, format_mesh,  # noqa: E402
                                  solver_options)

PHASES = ("residual", "jacobian", "linear_solve", "other", "setup", "io")


def phases(rec: dict) -> dict:
    """Seconds per phase of one solve (medians over repeats; slowest rank)."""
    m = rec["median"]
    ph = {k: 0.0 for k in PHASES}
    reps = [r for r in rec["repeats_data"] if r.get("converged")] or rec["repeats_data"]
    import numpy as np
    for k in ("residual", "jacobian"):
        ph[k] = float(np.median([r["guess_phases"][k] + r["newton_phases"][k] for r in reps]))
    # the guess's linear solve (mfc_linear_solve) and Newton's (SNESSolve minus its callbacks)
    ph["linear_solve"] = float(np.median([
        r["guess_phases"]["guess_linear"]
        + max(r["newton_phases"]["snes"] - r["newton_phases"]["residual"] - r["newton_phases"]["jacobian"], 0.0)
        for r in reps]))
    ph["setup"] = m["setup"]
    ph["io"] = m.get("io", 0.0)
    ph["other"] = max(m["total"] - sum(ph[k] for k in ("residual", "jacobian", "linear_solve", "setup", "io")), 0.0)
    return ph


def ceilings(bandwidth: dict | None, P: int) -> tuple[float, float] | None:
    """``(before, after)`` memory-bandwidth ceilings for ``P`` ranks, ``None`` when not measured."""
    if not bandwidth:
        return None
    try:
        return (bandwidth["before"]["ranks"][str(P)]["ceiling"], bandwidth["after"]["ranks"][str(P)]["ceiling"])
    except (KeyError, TypeError):
        return None


def summarise(kind: str, cases: list[dict], bandwidth: dict | None = None) -> list[dict]:
    rows = []
    base = next((c for c in cases if c.get("ranks") == 1 and "median" in c), None)
    for c in sorted(cases, key=lambda c: c["ranks"]):
        if "median" not in c:
            rows.append({"ranks": c["ranks"], "failed": c.get("error", "failed")})
            continue
        t = c["median"]["total"]
        row = {"ranks": c["ranks"], "nodes": c["nodes"], "layers": c["layers"], "unknowns": c["unknowns"],
               "linear_per_newton": c["median"].get("linear_per_newton"),
               "linear_solver": c["median"].get("linear_solver"),
               "cpu_fraction_ranks": [rep.get("cpu_fraction_ranks") for rep in c["repeats_data"]],
               "process_grid": c["process_grid"], "converged": c["converged"],
               "newton_iterations": c["median"]["newton_iterations"],
               "linear_iterations": c["median"].get("linear_iterations"),
               "time": t, "times": [r["total"] for r in c["repeats_data"]],
               "phases": phases(c), "startup": c.get("startup"), "import": c.get("import"),
               "rss_peak_max": c["rss_peak_max"], "loadavg": c.get("loadavg"),
               "cpu_fraction": c["median"].get("cpu_fraction")}
        if base:
            t1 = base["median"]["total"]
            if kind == "strong":
                row["speedup"] = t1 / t
                row["efficiency"] = t1 / (c["ranks"] * t)
            else:
                row["efficiency"] = t1 / t  # same work per rank: ideal time is flat
        cb = ceilings(bandwidth, c["ranks"])
        if cb is not None:
            row["bw_ceil"] = 0.5 * (cb[0] + cb[1])  # mean of the before/after probes
            row["bw_ceil_before_after"] = list(cb)
        rows.append(row)
    return rows


def print_table(kind: str, rows: list[dict]) -> None:
    print(f"{kind} scaling (median of repeats, slowest rank; seconds)")
    print(f"{'P':>4s} {'grid':>6s} {'mesh':>12s} {'unknowns':>9s} {'newton':>6s} {'lin':>6s} {'time':>8s} "
          f"{'speedup':>7s} {'bw_ceil':>7s} {'eff':>5s} {'resid':>7s} {'jac':>7s} {'linsol':>7s} {'other':>7s} {'setup':>6s} "
          f"{'io':>6s} {'startup':>7s} {'import':>6s} {'cpu%':>5s}")
    for r in rows:
        if "failed" in r:
            print(f"{r['ranks']:>4d} FAILED {r['failed']}")
            continue
        ph = r["phases"]
        g = "x".join(map(str, r["process_grid"]))
        print(f"{r['ranks']:>4d} {g:>6s} {format_mesh(r['nodes'], r['layers']):>12s} {r['unknowns']:>9d} "
              f"{r['newton_iterations']:>6.0f} {r['linear_iterations'] or 0:>6.0f} {r['time']:>8.2f} "
              f"{r.get('speedup', float('nan')):>7.2f} {r.get('bw_ceil', float('nan')):>7.2f} "
              f"{r.get('efficiency', float('nan')):>5.2f} "
              f"{ph['residual']:>7.2f} {ph['jacobian']:>7.2f} {ph['linear_solve']:>7.2f} {ph['other']:>7.2f} "
              f"{ph['setup']:>6.2f} {ph['io']:>6.2f} {r['startup'] or 0:>7.2f} {r['import'] or 0:>6.2f} "
              f"{100 * (r['cpu_fraction'] or float('nan')):>5.0f}")


def summary_lines(kind: str, rows: list[dict], bandwidth: dict | None, note: str | None = None) -> list[str]:
    """One line per rank count ``P > 1``: the measured speed-up (strong) or efficiency (weak)
    next to the memory-bandwidth bound of the before/after probes."""
    lines = []
    for r in rows:
        if "failed" in r or r["ranks"] == 1:
            continue
        P = r["ranks"]
        cb = ceilings(bandwidth, P)
        if kind == "strong":
            head = f"speedup {r.get('speedup', float('nan')):.2f} at P={P}"
            bound = None if cb is None else f"memory-bandwidth ceiling {cb[0]:.2f}-{cb[1]:.2f} (before/after)"
        else:
            head = f"efficiency {r.get('efficiency', float('nan')):.2f} at P={P}"
            bound = None if cb is None else \
                f"memory-bandwidth bound on efficiency {cb[0] / P:.2f}-{cb[1] / P:.2f} (ceiling/P, before/after)"
        lines.append(f"{head}; {bound or 'memory-bandwidth ceiling not measured (' + (note or 'no data') + ')'}")
    return lines


def probe_bandwidth(exe: Path | None, ranks: list[int], window: float, label: str) -> dict | None:
    """One run of :func:`mfc_hpc.perf.bandwidth_ceiling` (``None`` without a compiled triad)."""
    if exe is None:
        return None
    bw = bandwidth_ceiling(ranks, exe=exe, window=window)
    if bw is not None:
        agg = ", ".join(f"P={P}: {v['aggregate'] / 1e9:.1f} GB/s (x{v['ceiling']:.2f})"
                        for P, v in bw["ranks"].items())
        print(f"  triad {label}: {agg}", flush=True)
    else:
        print(f"  triad {label}: failed", flush=True)
    return bw


def cmd_run(a: argparse.Namespace, extra: list[str]) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ranks = [int(r) for r in a.ranks.split(",")]
    ndim, a.classes = config_dim(a.config)
    if a.quick:
        a.mesh, a.weak_mesh, a.repeats = ("129x32", "65x16", 1) if ndim == 1 else ("17x17x8", "17x17x4", 1)
    a.ndim = ndim
    if a.mesh is None:
        a.mesh = "1409x352" if ndim == 1 else "129x129x64"
    if a.weak_mesh is None:
        a.weak_mesh = "513x128" if ndim == 1 else "65x65x32"
    kinds = ["strong", "weak"] if a.kind == "both" else [a.kind]
    with tempfile.TemporaryDirectory() as tmp:
        exe, note = None, "--no-bandwidth"
        if a.bandwidth:
            exe = compile_triad(tmp)  # once for every probe
            note = None if exe is not None else "no C compiler (cc or gcc) to build the triad"
        if note:
            print(f"memory-bandwidth ceiling not measured: {note}")
        for kind in kinds:
            _run_kind(a, extra, out, kind, ranks, exe, note)
    print(f"wrote {', '.join(str(out / f'{k}.json') for k in kinds)}")
    return 0


def _run_kind(a: argparse.Namespace, extra: list[str], out: Path, kind: str, ranks: list[int],
              exe: Path | None, note: str | None) -> None:
    """The launches of one kind between two bandwidth probes; writes ``OUT/<kind>.json``."""
    window = 0.5 if a.quick else 2.0
    before = probe_bandwidth(exe, ranks, window, "before")
    cases = []
    for P in ranks:
        if kind == "strong":
            M, N = parse_sizes(a.mesh, a.ndim)[0]
        else:
            M0, N0 = parse_sizes(a.weak_mesh, a.ndim)[0]
            # layers grow with the ranks (process grid split along depth); or the intervals of the first axis
            M, N = (M0, N0 * P) if a.weak_grow == "layers" else (((M0[0] - 1) * P + 1,) + tuple(M0[1:]), N0)
        case = {"config": a.config, "ndim": a.ndim, "classes": a.classes, "nodes": list(M), "layers": N,
                "solver": a.solver,
                "repeats": a.repeats, "io": a.io}
        rec = run_case(case, P, a.launcher, extra, a.timeout)
        cases.append(rec)
        m = rec.get("median")
        print(f"  {kind} P={P} {format_mesh(M, N)}: " + (f"{m['total']:.2f} s" if m else rec.get("error", "failed")),
              flush=True)
    after = probe_bandwidth(exe, ranks, window, "after")
    if before is not None and after is not None:
        bandwidth = {"method": "compiled STREAM triad, P copies at once over a common window (bytes/s)",
                     "before": before, "after": after}
    else:
        bandwidth = None
        if note is None:
            note = "the triad failed to run"
    rows = summarise(kind, cases, bandwidth)
    doc = {"kind": kind, "command": " ".join(["scaling_study.py"] + sys.argv[1:]), "solver": a.solver,
           "options": " ".join(solver_options(a.solver, a.ndim, classes=a.classes or 1)) or f"(solver.linear = {SOLVERS[a.solver].package})",
           "config": a.config, "ndim": a.ndim, "launcher": a.launcher, "repeats": a.repeats,
           "date": time.strftime("%Y-%m-%d %H:%M"), "bandwidth": bandwidth,
           "bandwidth_note": note if bandwidth is None else None, "table": rows, "cases": cases}
    (out / f"{kind}.json").write_text(json.dumps(doc, indent=1))
    print_table(kind, rows)
    for line in summary_lines(kind, rows, bandwidth, note):
        print(line)


def cmd_plot(a: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    out = Path(a.out)
    docs = [json.loads((out / f"{k}.json").read_text()) for k in ("strong", "weak") if (out / f"{k}.json").is_file()]
    if not docs:
        print(f"no strong.json or weak.json in {out}", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(len(docs), 3, figsize=(15, 4.2 * len(docs)), squeeze=False)
    for ax, doc in zip(axes, docs):
        rows = [r for r in doc["table"] if "failed" not in r]
        P = [r["ranks"] for r in rows]
        T = [r["time"] for r in rows]
        kind = doc["kind"]
        ax[0].loglog(P, T, "o-", label="measured (median)")
        for r in rows:
            ax[0].plot([r["ranks"]] * len(r["times"]), r["times"], "k.", alpha=0.4)
        ideal = [T[0] / (p / P[0]) for p in P] if kind == "strong" else [T[0]] * len(P)
        ax[0].loglog(P, ideal, "--", color="gray", label="ideal")
        bw = [ceilings(doc.get("bandwidth"), p) for p in P]
        if P and all(b is not None for b in bw):
            # the time a memory-bound solve could reach: t1 / ceiling (strong), t1 P / ceiling (weak)
            mean = [0.5 * (b[0] + b[1]) for b in bw]
            c0 = mean[0]
            lim = [T[0] * c0 / c if kind == "strong" else T[0] * (p / P[0]) * c0 / c for p, c in zip(P, mean)]
            ax[0].loglog(P, lim, "--", color="tab:red", label="bandwidth-limited")
            # a speed-up cannot exceed the ceiling: efficiency at most ceiling / P
            for i, lab in ((0, "bandwidth bound (before)"), (1, "bandwidth bound (after)")):
                ax[1].semilogx(P, [b[i] * P[0] / (p * bw[0][i]) for p, b in zip(P, bw)],
                               "v" if i == 0 else "^", color="tab:red", alpha=0.7, ls="none", label=lab)
        ax[0].set_xlabel("ranks")
        ax[0].set_ylabel("solve time [s]")
        ax[0].set_title(f"{kind} scaling, {doc['solver']}")
        ax[0].legend()
        ax[0].set_xticks(P, [str(p) for p in P])
        ax[0].xaxis.set_minor_formatter(NullFormatter())
        eff = [r.get("efficiency", float("nan")) for r in rows]
        ax[1].semilogx(P, eff, "o-", label="measured")
        ax[1].axhline(1.0, ls="--", color="gray")
        ax[1].set_ylim(0, 1.2)
        ax[1].set_xticks(P, [str(p) for p in P])
        ax[1].xaxis.set_minor_formatter(NullFormatter())
        ax[1].set_xlabel("ranks")
        ax[1].set_ylabel("parallel efficiency")
        if ax[1].get_legend_handles_labels()[0]:
            ax[1].legend(fontsize=8)
        bottom = [0.0] * len(rows)
        for ph in PHASES:
            v = [r["phases"][ph] for r in rows]
            ax[2].bar([str(p) for p in P], v, bottom=bottom, label=ph)
            bottom = [b + x for b, x in zip(bottom, v)]
        st = [(r["startup"] or 0) + (r["import"] or 0) for r in rows]
        ax[2].bar([str(p) for p in P], st, bottom=bottom, label="start-up + import", hatch="//", alpha=0.5)
        ax[2].set_xlabel("ranks")
        ax[2].set_ylabel("seconds by phase")
        ax[2].legend(fontsize=8)
    fig.tight_layout()
    png = out / "scaling.png"
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="run the study, write OUT/strong.json and/or OUT/weak.json")
    r.add_argument("--kind", choices=["strong", "weak", "both"], default="both")
    r.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    r.add_argument("--config", default=str(DEFAULT_CONFIG))
    r.add_argument("--mesh", default=None, help="strong scaling mesh NODESxLAYERS or N1xN2xLAYERS "
                                                 "(default 1409x352 in 1-D, 129x129x64 in 2-D)")
    r.add_argument("--weak-mesh", default=None, help="weak scaling mesh on one rank (default 513x128, 65x65x32)")
    r.add_argument("--weak-grow", choices=["layers", "nodes"], default="layers")
    r.add_argument("--solver", default="default", choices=list(SOLVERS))
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--io", action=argparse.BooleanOptionalAction, default=True, help="write solution.h5")
    r.add_argument("--launcher", default="mpiexec -n {n}", help="template with {n} for the rank count")
    r.add_argument("--bandwidth", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the memory-bandwidth ceiling (compiled triad) before and after the runs")
    r.add_argument("--timeout", type=float, default=3600)
    r.add_argument("--quick", action="store_true", help="smoke run: tiny meshes, one repeat")
    r.add_argument("--out", required=True)
    pl = sub.add_parser("plot", help="plot OUT/*.json into OUT/scaling.png")
    pl.add_argument("--out", required=True)
    a, extra = p.parse_known_args(argv)
    if a.mode == "run":
        return cmd_run(a, extra)
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return cmd_plot(a)


if __name__ == "__main__":
    sys.exit(main())
