"""``mfc-hpc plan --memory 256G --ranks 128 [--dim 2] [--classes 2]``: the largest mesh that
fits a memory budget, and its expected time.

The model is fitted to measurements on this package's own benchmark
(``scripts/bench_solver.py --write-rates`` writes ``mfc_hpc/perf_rates.json``), per state
dimension ``d``, number of classes ``K`` and linear solver: peak bytes per unknown
``a n^p`` and seconds per Newton iteration ``a (n/P)^p`` on one rank, the parallel
efficiency measured at the benchmark's largest rank count, and the Newton iteration count
(:func:`mfc_hpc.studies.perf.plan`). Without ``--solver`` the planner models what
``solver.linear = "auto"`` runs on each candidate mesh. The time is a rough guide: the
rates come from the benchmark machine.
"""
from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="largest mesh that fits a memory budget, and its expected time",
                       description="Print the largest mesh M^d x (N+1) (with M - 1 = aspect * N) whose modelled "
                                   "memory fits the budget, and the time expected from measured rates.")
    p.add_argument("--memory", required=True, help="memory of the whole job, e.g. 256G, 1.5T, 512M")
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks (default 1)")
    p.add_argument("--dim", type=int, default=None, choices=[1, 2],
                   help="state dimension d (default: from --config, else 1)")
    p.add_argument("--classes", type=int, default=None, help="classes K (2K unknowns per mesh point; default: "
                                                             "from --config, else 1)")
    p.add_argument("--config", default=None, help="take d and K from this TOML configuration (read only)")
    p.add_argument("--solver", default=None,
                   help="linear-solver configuration with measured rates (default: what solver.linear = auto "
                        "runs on the mesh)")
    p.add_argument("--aspect", type=float, default=None, help="(M - 1) / N of the mesh (default 4 in 1-D, 2 in 2-D)")
    p.add_argument("--safety", type=float, default=0.8, help="fraction of --memory the model may use")
    p.add_argument("--rates", default=None, help="rates JSON (default: mfc_hpc/perf_rates.json)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...errors import BadInput
    from ...studies.perf import load_rates, parse_bytes, plan, solver_options

    dim, classes = args.dim, args.classes
    if args.config is not None:
        from ...config import load_config

        cfg = load_config(args.config)  # a ConfigError is one line, exit 2
        if dim is not None and dim != cfg.ndim:
            raise BadInput(f"--dim {dim} disagrees with the {cfg.ndim}-D configuration {args.config}")
        dim = cfg.ndim
        if classes is None:
            if cfg.K is None:
                raise BadInput(f"--classes: {args.config} reads its classes from a data table; give --classes")
            classes = cfg.K
    dim = 1 if dim is None else dim
    classes = 1 if classes is None else classes
    try:
        mem = parse_bytes(args.memory)
        if args.ranks < 1 or classes < 1 or not 0 < args.safety <= 1 or (args.aspect is not None and args.aspect <= 0):
            raise ValueError("--ranks and --classes must be >= 1, --aspect > 0, 0 < --safety <= 1")
        rates = load_rates(args.rates)
        ans = plan(mem, args.ranks, classes=classes, ndim=dim, solver=args.solver, aspect=args.aspect,
                   safety=args.safety, rates=rates)
    except ValueError as e:
        raise BadInput(f"plan: {e}") from None
    except FileNotFoundError as e:
        raise BadInput(str(e)) from None
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() != 0:
        return 0
    if args.json:
        print(json.dumps(ans, indent=1))
        return 0
    gib = 2**30
    try:
        opts = " ".join(solver_options(ans["solver"], dim)) or "chosen by solver.linear"
    except ValueError:
        opts = "options of the rates file"
    print(f"solver {ans['solver']} ({opts})")
    print(f"budget {mem / gib:.1f} GiB x safety {args.safety:g} on {args.ranks} ranks, d = {dim}, "
          f"{classes} class(es)")
    mesh = " x ".join(map(str, ans["nodes"]))
    print(f"largest mesh: nodes {mesh}, layers N = {ans['layers']} ({ans['unknowns']:.3e} unknowns)")
    print(f"modelled memory {ans['bytes'] / gib:.1f} GiB ({ans['bytes_per_rank'] / gib:.2f} GiB per rank)")
    print(f"expected time: {ans['newton_iterations']:.0f} Newton iterations x {ans['seconds_per_iteration']:.3g} s "
          f"= {ans['seconds']:.3g} s (rates measured on {ans['machine']} with K = {ans['measured']['classes']})")
    return 0
