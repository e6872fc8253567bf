"""``mfc-hpc structure CONFIG --out DIR``: the preserved structure, midpoint vs implicit Euler.

For each scheme it solves the configuration (d = 1 or 2, any number of ranks) on three
families of meshes: a depth refinement on the configuration's nodes (``--layers``), a joint
refinement of nodes and layers (``--nodes``: counts along axis 1, the other axes and the
layers scaled with them) and deeper networks at the configuration's ``dt`` (``--depths``,
multiples of ``T``). On every solution it measures the Hamiltonian drift, the variation of
the symplectic form of two linearised solutions (solved with the exact Jacobian by the
solver's linear solver), the mass error and the Euler-Poincare residual
(:mod:`mfc_hpc.studies.structure`), prints a table and the observed orders, and writes
``DIR/structure.json`` and ``DIR/structure.png``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("structure")


def _ints(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {s!r}") from None
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return v


def _floats(s: str) -> list[float]:
    try:
        v = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {s!r}") from None
    if not v or not min(v) > 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {s!r}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("structure", help="measure the preserved structure: midpoint vs implicit Euler",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--layers", type=_ints, default=None,
                   help="depth refinement: layer counts on the configuration's nodes (default N/4, N/2, N)")
    p.add_argument("--nodes", type=_ints, default=None,
                   help="joint refinement: node counts along axis 1, the other axes and the layers scaled with "
                        "them (default (M-1)/4+1, (M-1)/2+1, M)")
    p.add_argument("--depths", type=_floats, default=[0.5, 1.0, 2.0],
                   help="depth multiples of T at the configuration's dt (default 0.5,1,2)")
    p.add_argument("--schemes", default="midpoint,euler", help="schemes to compare (default midpoint,euler)")
    p.add_argument("--no-plot", action="store_true", help="do not draw structure.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ...config import load_config
    from ...errors import EXIT_NOT_CONVERGED, BadInput
    from ...fileio.summary import versions, write_json
    from ...jobs.solve import collective, prepare_out_dir, shared_problem
    from ...studies.structure import FAMILIES, SCHEMES, plan, study, table

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or not schemes:
        raise BadInput(f"--schemes: must be a comma-separated subset of {', '.join(SCHEMES)}; got {args.schemes!r}")
    comm = PETSc.COMM_WORLD
    problem = shared_problem(load_config(args.config), comm)
    plan(problem, args.layers, args.nodes, args.depths)  # every family possible, before any solve
    out = prepare_out_dir(args.out, comm)
    res = study(problem, comm, out, args.layers, args.nodes, args.depths, schemes)
    res.update(config=problem.resolved_config(), versions=versions(), ranks=comm.getSize())
    failed = sum(not r["converged"] for f in res["schemes"].values() for k in FAMILIES for r in f[k])
    mpi = comm.tompi4py()
    collective(mpi, write_json, out / "structure.json", res)
    if mpi.rank == 0:
        print(table(res), flush=True)
        if not args.no_plot:
            from ...studies.pictures import structure_figure

            structure_figure(res, out / "structure.png")
        log.info("wrote %s%s", Path(out) / "structure.json", "" if args.no_plot else f" and {Path(out) / 'structure.png'}")
    return EXIT_NOT_CONVERGED if failed else 0
