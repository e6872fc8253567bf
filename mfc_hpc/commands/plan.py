"""``mfc-hpc plan --memory 256G --ranks 128``: the largest mesh that fits, and its time.

The model is fitted to measurements on this package's own benchmark
(``scripts/bench_solver.py --write-rates`` writes ``mfc_hpc/perf_rates.json``): peak
bytes per unknown ``a n^p`` and seconds per Newton iteration ``a (n/P)^p`` on one rank,
the parallel efficiency measured at the benchmark's largest rank count, and the Newton
iteration count. The time is a rough guide: the rates come from the benchmark machine.
"""
from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("plan")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="largest mesh that fits a memory budget, and its expected time",
                       description="Print the largest mesh M x (N+1) (with M - 1 = aspect * N) whose modelled "
                                   "memory fits the budget, and the time expected from measured rates.")
    p.add_argument("--memory", required=True, help="memory of the whole job, e.g. 256G, 1.5T, 512M")
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks (default 1)")
    p.add_argument("--classes", type=int, default=1, help="classes K (2K unknowns per mesh point)")
    p.add_argument("--solver", default=None,
                   help="linear-solver configuration with measured rates (default: the rates file's default)")
    p.add_argument("--aspect", type=float, default=4.0, help="(M - 1) / N of the mesh (default 4)")
    p.add_argument("--safety", type=float, default=0.8, help="fraction of --memory the model may use")
    p.add_argument("--rates", default=None, help="rates JSON (default: mfc_hpc/perf_rates.json)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import BadInput
    from ..perf import load_rates, parse_bytes, plan, solver_options

    try:
        mem = parse_bytes(args.memory)
        if args.ranks < 1 or args.classes < 1 or not 0 < args.safety <= 1 or args.aspect <= 0:
            raise ValueError("--ranks and --classes must be >= 1, --aspect > 0, 0 < --safety <= 1")
        rates = load_rates(args.rates)
        ans = plan(mem, args.ranks, classes=args.classes, solver=args.solver, aspect=args.aspect,
                   safety=args.safety, rates=rates)
    except ValueError as e:
        raise BadInput(str(e)) from None
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() != 0:
        return 0
    if args.json:
        print(json.dumps(ans, indent=1))
        return 0
    gib = 2**30
    print(f"solver {ans['solver']} ({' '.join(solver_options(ans['solver']))})")
    print(f"budget {mem / gib:.1f} GiB x safety {args.safety:g} on {args.ranks} ranks, {args.classes} class(es)")
    print(f"largest mesh: nodes M = {ans['nodes']}, layers N = {ans['layers']} "
          f"({ans['unknowns']:.3e} unknowns)")
    print(f"modelled memory {ans['bytes'] / gib:.1f} GiB ({ans['bytes_per_rank'] / gib:.2f} GiB per rank)")
    print(f"expected time: {ans['newton_iterations']:.0f} Newton iterations x {ans['seconds_per_iteration']:.3g} s "
          f"= {ans['seconds']:.3g} s (rates measured on {ans['machine']})")
    return 0
