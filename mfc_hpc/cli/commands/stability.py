"""``mfc-hpc stability CONFIG --out DIR``: how many layers for how many nodes (d = 1, 2).

Before solving it gives the a priori verdict (METHOD.md 6, 8: ``dt * max outflow rate <= 2``
and ``det(I + dt grad U_n) > 0`` on every simplex for the adjoint frozen at its terminal
condition; no bound for the bridge) and the sharp verdict (the mesh's own layered solve,
its coupling frozen at a cheap coarse solve and settled by forward-backward sweeps; exact
for one class with eta = 0), with each rule's smallest number of layers for the
configuration's nodes and largest number of nodes for its layers. Then (unless
``--no-solve``) it solves and checks the bounds on the solution (a posteriori) and what the
run shows (Newton converged, densities non-negative to the tolerance, blocks invertible,
accuracy). Writes ``DIR/stability.json`` and ``DIR/stability.png``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("stability")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ...studies.stability import POSITIVITY_TOL

    p = sub.add_parser("stability", help="a priori, sharp and a posteriori stability rules (layers vs nodes)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--no-solve", action="store_true", help="predict only: do not solve the configuration's mesh")
    p.add_argument("--positivity-tol", type=float, default=POSITIVITY_TOL,
                   help=f"densities down to -tol * max density count as non-negative (default {POSITIVITY_TOL:g})")
    p.add_argument("--max-nodes-cap", type=int, default=None,
                   help="search the largest stable node count up to this (default 2049 for d = 1, 129 for d = 2)")
    p.add_argument("--max-layers-cap", type=int, default=None,
                   help="search the sharp rule's smallest stable N up to this (default 1024 for d = 1, 128 for d = 2)")
    p.add_argument("--reference", default=None, metavar="NODES:LAYERS",
                   help="the sharp rule's coarse solve (default: the configuration's mesh with M - 1 and N halved)")
    p.add_argument("--no-plot", action="store_true", help="do not draw stability.png")
    p.set_defaults(func=run)


def _reference(arg: str | None):
    from ...errors import BadInput

    if arg is None:
        return None
    try:
        m, n = (int(x) for x in arg.split(":"))
    except ValueError:
        raise BadInput(f"--reference: expected NODES:LAYERS, got {arg!r}") from None
    if m < 3 or n < 1:
        raise BadInput(f"--reference: expected NODES >= 3 and LAYERS >= 1, got {arg!r}")
    return m, n


def _v(x) -> str:
    return {True: "stable", False: "UNSTABLE", None: "no verdict"}[x]


def _g(x, f: str = ".4g") -> str:
    return "-" if x is None else format(x, f)


def table(res: dict) -> str:
    pre, sh, run = res["a_priori"], res["sharp"], res.get("run")
    post = run.get("a_posteriori") if run else None
    lines = [f"mesh: {res['mesh']}",
             f"a priori adjoint: {pre['source']}"]
    if pre.get("available"):
        f = pre["frozen"]
        lines.append(f"  max |b| = {f['velocity']:.4g}, loss slope per axis = "
                     f"{', '.join(format(v, '.4g') for v in f['loss_gradient'])}, cell Peclet = {f['cell_peclet']:.3g}")
    lines += [f"{'number':44s} {'a priori':>10s} {'sharp':>10s} {'a posteriori':>13s} {'limit':>7s}",
              f"{'dt * max outflow rate (Markov)':44s} {_g(pre.get('dt_outflow_rate')):>10s} "
              f"{_g(sh.get('dt_outflow_rate')):>10s} {_g(post and post['dt_outflow_rate']):>13s} {'<= 2':>7s}",
              f"{'max(1 - det(I + dt grad U)) (invertible)':44s} {_g(pre.get('dt_compression')):>10s} "
              f"{_g(sh.get('dt_compression')):>10s} {_g(post and post['dt_compression']):>13s} {'< 1':>7s}",
              f"{'min density / max density':44s} {'':>10s} "
              f"{_g(sh['min_density'] / sh['max_density'] if sh.get('min_density') is not None else None, '.3g'):>10s} "
              f"{_g(run and run['diagnostics']['min_density'] / run['max_density'], '.3g'):>13s} "
              f"{'>= -' + format(res['positivity_tol'], 'g'):>7s}"]
    if pre.get("available"):
        lines += [f"{'simple bound dt (2 nu sum 1/h^2 + sum |b|/h)':44s} {pre['simple_bound']:10.4g}",
                  f"{'nu dt sum 1/h^2':44s} {pre['parabolic']:10.4g}",
                  f"{'frozen-coefficient max |G| (<= 1 always)':44s} {pre['amplification']['max_abs']:10.4g}",
                  f"{'sawtooth factor G(pi)':44s} {pre['amplification']['sawtooth']:10.4g}"]
    lines.append(f"a priori: {_v(pre['stable'])}; smallest stable N for these nodes: {_g(res['a_priori_min_layers'])}; "
                 f"largest stable nodes for N = {pre['layers']}: {_g(res['a_priori_max_nodes'])}")
    how = "exact: nothing frozen" if sh["exact"] else f"{sh['reference']}, {sh['sweeps']} sweeps"
    lines.append(f"sharp ({how}): {_v(sh['stable'])}" + (f" ({', '.join(sh['failures'])})" if sh["failures"] else "")
                 + f"; smallest stable N for these nodes: {_g(res['sharp_min_layers'])}; largest stable nodes for "
                   f"N = {pre['layers']}: {_g(res['sharp_max_nodes'])}")
    if run is not None:
        o = run["observed"]
        lines.append(f"solve: Newton {'converged' if run['newton']['converged'] else 'FAILED'} "
                     f"({run['newton']['iterations']} iterations); a posteriori: "
                     f"{_v(post['stable']) if post else '-'}; observed: {_v(o['stable'])}"
                     + (f" ({', '.join(o['failures'])})" if o["failures"] else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from petsc4py import PETSc

    from ...config import load_config
    from ...errors import EXIT_NOT_CONVERGED, BadInput
    from ...fileio.summary import versions, write_json
    from ...jobs.solve import collective, prepare_out_dir, shared_problem
    from ...studies.stability import (a_priori, max_nodes, min_layers, needs_reference, predict, scaled_nodes,
                                      sharp_max_nodes, sharp_min_layers)
    from ...studies.stability_runs import on_root, reference_mesh, reference_solve, solve_point

    if not args.positivity_tol >= 0:
        raise BadInput(f"--positivity-tol: must be >= 0, got {args.positivity_tol}")
    for name in ("max_nodes_cap", "max_layers_cap"):
        v = getattr(args, name)
        if v is not None and v < (5 if name == "max_nodes_cap" else 1):
            raise BadInput(f"--{name.replace('_', '-')}: must be >= {5 if name == 'max_nodes_cap' else 1}, got {v}")
    refmesh = _reference(args.reference)
    comm = PETSc.COMM_WORLD
    mpi = comm.tompi4py()
    problem = shared_problem(load_config(args.config), comm)
    out = prepare_out_dir(args.out, comm)
    two = problem.ndim == 2
    ncap = args.max_nodes_cap or (129 if two else 2049)
    lcap = args.max_layers_cap or (128 if two else 1024)
    ref = None
    if needs_reference(problem):
        nodes, layers = reference_mesh(problem)
        if refmesh is not None:
            nodes, layers = scaled_nodes(problem.grid.nodes, refmesh[0]), refmesh[1]
        ref = reference_solve(problem, comm, out / "reference", nodes, layers)

    def rules() -> dict:
        pre = a_priori(problem)
        sh = predict(problem, ref, args.positivity_tol)
        M0 = problem.grid.nodes[0]
        Ms = sorted({int(m) for m in np.geomspace(min(9, M0), max(2 * (M0 - 1) + 1, 17), 8 if two else 12)} | {M0})
        Ms = [m for m in Ms if m <= ncap] if not args.no_plot else []
        bnd = {"nodes": Ms, "a_priori": [], "sharp": []}  # the picture's boundaries (not with --no-plot)
        for m in Ms:
            p = problem.on_mesh(scaled_nodes(problem.grid.nodes, m))
            bnd["a_priori"].append(min_layers(p))
            bnd["sharp"].append(sharp_min_layers(p, ref, lcap, args.positivity_tol))
        return {"a_priori": pre, "sharp": sh, "boundary": bnd,
                "a_priori_min_layers": pre["min_layers"], "a_priori_max_nodes": max_nodes(problem, ncap),
                "sharp_min_layers": sharp_min_layers(problem, ref, lcap, args.positivity_tol),
                "sharp_max_nodes": sharp_max_nodes(problem, ref, ncap, positivity_tol=args.positivity_tol)}

    res = on_root(comm, rules)
    res.update(mesh=f"{problem.grid.describe()}, {problem.d.N} layers (dt = {problem.d.dt:.4g})",
               nu=problem.d.nu, positivity_tol=args.positivity_tol, max_nodes_cap=ncap, max_layers_cap=lcap,
               config=problem.resolved_config(), versions=versions())
    rec = None if args.no_solve else solve_point(problem, comm, out / "run", args.positivity_tol)
    res["run"] = rec
    collective(mpi, write_json, out / "stability.json", res)
    if mpi.rank == 0:
        print(table(res), flush=True)
        if not args.no_plot:
            from ...studies.pictures import stability_figure

            stability_figure(res, out / "stability.png")
        log.info("wrote %s%s", Path(out) / "stability.json", "" if args.no_plot else f" and {Path(out) / 'stability.png'}")
    if rec is not None and not rec["newton"]["converged"]:
        return EXIT_NOT_CONVERGED
    return 0
