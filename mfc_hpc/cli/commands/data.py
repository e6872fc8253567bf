"""``mfc-hpc data moons|spirals --out FILE.csv``: write a synthetic data set of the
package (:mod:`mfc_hpc.problem.synthetic`, the same table as ``builtin:NAME``) as CSV
(columns ``x1, x2, label``), so that users can see the data."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger("data")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ...problem.synthetic import DEFAULTS

    p = sub.add_parser("data", help="write a synthetic data set (two half-moons, two spirals) as CSV",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("name", choices=sorted(DEFAULTS), help="the data set")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--samples", type=int, default=None, help="number of samples (default: as builtin:NAME)")
    p.add_argument("--noise", type=float, default=None, help="noise standard deviation (default: as builtin:NAME)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: as builtin:NAME)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from mpi4py import MPI

    from ...errors import BadInput, OutputError
    from ...problem.synthetic import DEFAULTS, write_csv

    out = Path(args.out)
    if not str(args.out).strip():
        raise BadInput("data: --out: the file name is empty")
    if out.is_dir():
        raise BadInput(f"data: --out: {out} is a directory (give a file name)")
    if not out.parent.is_dir():
        raise BadInput(f"data: --out: the directory {out.parent} does not exist")
    kw = {}
    if args.samples is not None:
        if args.samples < 4:
            raise BadInput(f"data: --samples must be >= 4, got {args.samples}")
        kw["samples"] = args.samples
    if args.noise is not None:
        if not (math.isfinite(args.noise) and args.noise >= 0):
            raise BadInput(f"data: --noise must be a number >= 0, got {args.noise}")
        kw["noise"] = args.noise
    if args.seed is not None:
        kw["seed"] = args.seed
    if MPI.COMM_WORLD.Get_rank() == 0:
        try:
            write_csv(args.name, out, **kw)
        except OSError as e:
            raise OutputError(f"cannot write {out}: {e.strerror or e}") from None
        params = dict(DEFAULTS[args.name], **kw)
        log.info("wrote %s: %s (%s)", out, args.name, ", ".join(f"{k} {v}" for k, v in params.items()))
    return 0
