"""A stability sweep over ``(N layers, M nodes)``: what each point shows against the
verdicts of the three rules (:mod:`mfc_hpc.studies.stability`).

A point is one solve (:func:`~mfc_hpc.studies.stability_runs.solve_point`, collective),
recorded in ``OUT/points/point_KKKK.json``; the points can run here one after the other or
as the tasks of an array job. :func:`collect` then reads the point files, solves the
sharp rule's coarse reference once (when the rule needs one), gives every point the a
priori, a posteriori and sharp verdicts, and writes ``OUT/sweep.json`` with the hit rate
of each rule, its false "stable" verdicts and every miss; :func:`boundaries` gives each
rule's smallest stable ``N`` for the node counts of the diagram.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio.summary import versions, write_json
from ..problem.build import Problem
from .stability import (ACCURACY_TOL, POSITIVITY_TOL, SWEEPS, AccuracyFn, Reference, min_layers, needs_reference,
                        predict, scaled_nodes, sharp_min_layers)
from .stability_runs import on_root, reference_mesh, reference_solve, solve_point

__all__ = ["SweepSpec", "point_path", "run_point", "collect", "boundaries", "table", "markdown", "RULES"]

log = logging.getLogger("stability")

#: the rules compared with what the runs show
RULES = ("a_priori", "a_posteriori", "sharp")


@dataclass
class SweepSpec:
    """The grid (``layers`` x ``nodes``, row-major: point ``k = i_N * len(nodes) + i_M``), where
    it writes and how a point is judged."""

    config: str
    layers: list[int]
    nodes: list[int]
    out: Path
    positivity_tol: float = POSITIVITY_TOL
    accuracy_tol: float = ACCURACY_TOL
    keep_solutions: bool = False
    reference: tuple[int, int] | None = None  # (nodes along axis 1, layers) of the sharp rule's coarse solve
    sharp_sweeps: int = SWEEPS  # forward-backward sweeps of the sharp rule when something is frozen

    def grid(self) -> list[tuple[int, int]]:
        return [(N, M) for N in self.layers for M in self.nodes]

    def problem_at(self, base: Problem, N: int, M: int) -> Problem:
        return base.on_mesh(scaled_nodes(base.grid.nodes, M), N)


def point_path(out: Path, k: int) -> Path:
    return Path(out) / "points" / f"point_{k:04d}.json"


def run_point(spec: SweepSpec, base: Problem, k: int, comm=None, accuracy: AccuracyFn | None = None) -> dict:
    """Solve grid point ``k`` (collective) and write its record (rank 0)."""
    from petsc4py import PETSc

    comm = comm or PETSc.COMM_WORLD
    N, M = spec.grid()[k]
    rec = solve_point(spec.problem_at(base, N, M), comm, Path(spec.out) / "solutions" / f"point_{k:04d}",
                      spec.positivity_tol, accuracy, spec.accuracy_tol, keep_solution=spec.keep_solutions)
    rec["index"] = k
    rec["M"] = M
    if comm.tompi4py().rank == 0:
        point_path(spec.out, k).parent.mkdir(parents=True, exist_ok=True)
        write_json(point_path(spec.out, k), rec)
    return rec


def _reference(spec: SweepSpec, base: Problem, comm) -> Reference | None:
    if not needs_reference(base):
        return None
    if spec.reference is not None:
        m, n = spec.reference
        nodes, layers = scaled_nodes(base.grid.nodes, m), n
    else:
        nodes, layers = reference_mesh(base)
    ref = reference_solve(base, comm, Path(spec.out) / "reference", nodes, layers)
    if not spec.keep_solutions and comm.tompi4py().rank == 0:  # its summary.json stays
        for f in ("solution.h5", "solution.xmf"):
            (Path(spec.out) / "reference" / f).unlink(missing_ok=True)
    return ref


def collect(spec: SweepSpec, base: Problem, comm=None, accuracy: AccuracyFn | None = None,
            boundary_nodes: list[int] | None = None) -> dict | None:
    """Verdicts, hit rates and misses of every rule over the point files (collective for the
    reference solve; the rest on rank 0). Returns the result on rank 0 (``None`` elsewhere)
    and writes ``OUT/sweep.json``."""
    from petsc4py import PETSc

    comm = comm or PETSc.COMM_WORLD
    ref = _reference(spec, base, comm)
    res = on_root(comm, _verdicts, spec, base, ref, accuracy, boundary_nodes)
    return res if comm.tompi4py().rank == 0 else None


def _verdicts(spec: SweepSpec, base: Problem, ref: Reference | None, accuracy: AccuracyFn | None,
              boundary_nodes: list[int] | None) -> dict:
    grid = spec.grid()
    pts, missing = [], []
    for k in range(len(grid)):
        f = point_path(spec.out, k)
        if f.is_file():
            pts.append(json.loads(f.read_text()))
        else:
            missing.append(k)
    rows = []
    for r in pts:
        N, M = r["layers"], r["M"]
        pr = predict(spec.problem_at(base, N, M), ref, spec.positivity_tol, accuracy, spec.accuracy_tol,
                     max_sweeps=spec.sharp_sweeps)
        o = r["observed"]
        rows.append({
            "index": r["index"], "layers": N, "nodes": M, "observed": o["stable"], "failures": o["failures"],
            "converged": r["newton"]["converged"], "newton_iterations": r["newton"]["iterations"],
            "newton_failure": r["newton"]["failure"],
            "min_density": r["diagnostics"]["min_density"], "max_density": r["max_density"],
            "min_density_relative": r["diagnostics"]["min_density"] / r["max_density"] if r["max_density"] else None,
            "dt_outflow_rate": r["diagnostics"]["dt_max_outflow_rate"],
            "dt_compression": r["diagnostics"]["dt_max_compression"],
            "test_accuracy": r.get("test_accuracy"), "baseline_accuracy": r.get("baseline_accuracy"),
            "a_priori": r["a_priori"]["stable"], "a_priori_numbers": {
                "dt_outflow_rate": r["a_priori"].get("dt_outflow_rate"),
                "dt_compression": r["a_priori"].get("dt_compression"), "min_layers": r["a_priori"].get("min_layers")},
            "a_posteriori": None if r["a_posteriori"] is None else r["a_posteriori"]["stable"],
            "sharp": pr["stable"],
            "sharp_numbers": {k: pr.get(k) for k in ("failures", "exact", "settled", "sweeps", "change", "min_density",
                                                      "max_density", "dt_outflow_rate", "dt_compression",
                                                      "accuracy", "baseline_accuracy")},
        })
    res: dict = {"config": spec.config, "resolved_config": base.resolved_config(), "dim": base.ndim,
                 "layers": spec.layers, "nodes": spec.nodes, "positivity_tol": spec.positivity_tol,
                 "accuracy_tol": spec.accuracy_tol, "accuracy_measured": accuracy is not None,
                 "reference": None if ref is None else ref.label, "sharp_sweeps": spec.sharp_sweeps,
                 "sharp_exact": not needs_reference(base), "points": rows, "missing_points": missing,
                 "total": len(rows), "observed_stable": sum(r["observed"] for r in rows),
                 "observed_unstable": sum(not r["observed"] for r in rows),
                 "failure_counts": {f: sum(f in r["failures"] for r in rows) for f in
                                    ("newton", "positivity", "invertibility", "accuracy")},
                 "rules": {}, "versions": versions()}
    for rule in RULES:
        judged = [r for r in rows if r[rule] is not None]
        misses = [{"layers": r["layers"], "nodes": r["nodes"], "kind": "false stable" if r[rule] else "false unstable",
                   "failures": r["failures"]} for r in judged if bool(r[rule]) != r["observed"]]
        hits = len(judged) - len(misses)
        res["rules"][rule] = {"judged": len(judged), "hits": hits,
                              "hit_rate": hits / len(judged) if judged else None,
                              "false_stable": sum(m["kind"] == "false stable" for m in misses),
                              "false_unstable": sum(m["kind"] == "false unstable" for m in misses),
                              "not_available": len(rows) - len(judged), "misses": misses}
    res["boundaries"] = boundaries(spec, base, ref, boundary_nodes or spec.nodes)
    out = Path(spec.out)
    if not spec.keep_solutions and (out / "solutions").is_dir() and not any((out / "solutions").iterdir()):
        (out / "solutions").rmdir()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", res)
    return res


def boundaries(spec: SweepSpec, base: Problem, ref: Reference | None, nodes: list[int]) -> dict:
    """Each rule's smallest stable ``N`` (a priori and sharp; ``None``: none up to the cap) for
    node counts ``nodes`` (serial)."""
    cap = 2 * max(spec.layers)
    out = {"nodes": list(nodes), "a_priori": [], "sharp": [], "cap": cap}
    for M in nodes:
        p = spec.problem_at(base, max(spec.layers), M)
        out["a_priori"].append(min_layers(p))
        out["sharp"].append(sharp_min_layers(p, ref, cap, spec.positivity_tol, spec.sharp_sweeps))
    return out


def _v(x) -> str:
    return {True: "stable", False: "UNSTABLE", None: "-"}[x]


def table(res: dict) -> str:
    """One line per point, then each rule's hit rate and misses."""
    lines = [f"{'N':>4s} {'M':>5s} {'observed':>9s} {'failures':26s} {'a priori':>9s} {'a post.':>9s} "
             f"{'sharp':>9s} {'min rho/max':>11s} {'dt*rate':>8s} {'comp.':>8s} {'acc':>6s} {'base':>6s}"]
    for r in res["points"]:
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
        base = "-" if r["baseline_accuracy"] is None else f"{r['baseline_accuracy']:.3f}"
        rel = r["min_density_relative"]
        lines.append(f"{r['layers']:4d} {r['nodes']:5d} {_v(r['observed']):>9s} {','.join(r['failures']) or '-':26s} "
                     f"{_v(r['a_priori']):>9s} {_v(r['a_posteriori']):>9s} {_v(r['sharp']):>9s} "
                     f"{'-' if rel is None else format(rel, '.2e'):>11s} {r['dt_outflow_rate']:8.3g} "
                     f"{r['dt_compression']:8.3g} {acc:>6s} {base:>6s}")
    lines.append(f"{res['total']} points: {res['observed_stable']} observed stable, {res['observed_unstable']} unstable "
                 f"(" + ", ".join(f"{k} {v}" for k, v in res["failure_counts"].items()) + ")"
                 + ("" if res["reference"] is None else f"; sharp rule reference: {res['reference']}")
                 + ("; sharp rule exact (nothing frozen)" if res["sharp_exact"] else ""))
    for rule, st in res["rules"].items():
        rate = "-" if st["hit_rate"] is None else f"{st['hit_rate']:.3f}"
        lines.append(f"{rule}: right on {st['hits']}/{st['judged']} = {rate}; false stable {st['false_stable']}, "
                     f"false unstable {st['false_unstable']}"
                     + (f"; no verdict on {st['not_available']}" if st["not_available"] else ""))
        for m in st["misses"]:
            lines.append(f"  miss ({m['kind']}): N = {m['layers']}, M = {m['nodes']}"
                         + (f" ({', '.join(m['failures'])})" if m["failures"] else ""))
    if res["missing_points"]:
        lines.append(f"missing points: {res['missing_points']}")
    return "\n".join(lines)


def _mv(x) -> str:
    return {True: "stable", False: "**unstable**", None: "-"}[x]


def markdown(res: dict) -> str:
    """The sweep as a Markdown table (one row per point) and the rules' hit rates and misses."""
    acc = any(r["test_accuracy"] is not None for r in res["points"])
    head = ("| N | M | observed | failures | a priori | a posteriori | sharp | min rho / max rho | dt * rate | "
            "max(1 - det) |" + (" accuracy (zero network) |" if acc else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in res["points"]:
        rel = r["min_density_relative"]
        row = (f"| {r['layers']} | {r['nodes']} | {_mv(r['observed'])} | {', '.join(r['failures']) or '-'} | "
               f"{_mv(r['a_priori'])} | {_mv(r['a_posteriori'])} | {_mv(r['sharp'])} | "
               f"{'-' if rel is None else format(rel, '.2e')} | {r['dt_outflow_rate']:.3g} | {r['dt_compression']:.3g} |")
        if acc:
            a, b = r["test_accuracy"], r["baseline_accuracy"]
            row += f" {'-' if a is None else format(a, '.3f')} ({'-' if b is None else format(b, '.3f')}) |"
        lines.append(row)
    lines.append("")
    fc = ", ".join(f"{k} {v}" for k, v in res["failure_counts"].items() if v)
    lines.append(f"{res['total']} points, {res['observed_stable']} observed stable, {res['observed_unstable']} "
                 f"unstable ({fc})." + ("" if res["reference"] is None else f" Sharp rule reference: {res['reference']}.")
                 + (" Sharp rule exact (one class, eta = 0: nothing frozen)." if res["sharp_exact"] else ""))
    lines.append("")
    lines.append("| rule | right | hit rate | false stable | false unstable | misses |")
    lines.append("|---|---|---|---|---|---|")
    for rule, st in res["rules"].items():
        ms = "; ".join(f"N = {m['layers']}, M = {m['nodes']} ({m['kind']})" for m in st["misses"]) or "-"
        rate = "-" if st["hit_rate"] is None else f"{st['hit_rate']:.3f}"
        lines.append(f"| {rule.replace('_', ' ')} | {st['hits']}/{st['judged']} | {rate} | {st['false_stable']} | "
                     f"{st['false_unstable']} | {ms} |")
    return "\n".join(lines)
