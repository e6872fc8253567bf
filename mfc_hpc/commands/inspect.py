"""``mfc-hpc inspect FILE``: what a checkpoint holds (mesh, classes, stage, iteration,
residual, versions), with every dataset's checksum verified.

A truncated, corrupted, foreign (not written by mfc_hpc) or future-format file is reported
in one line on stderr with exit status 2; a good one prints its summary (or ``--json``).
Runs on any number of ranks (the checksums are verified in parallel).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show and verify a checkpoint file",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("file", help="checkpoint file (ckpt_NNNNNN.h5)")
    p.add_argument("--json", action="store_true", help="print the header as JSON")
    p.add_argument("--xdmf", action="store_true", help="also write FILE.xmf for ParaView/VisIt")
    p.set_defaults(func=run)


def describe(h: dict) -> list[str]:
    """Human-readable lines for a verified checkpoint header."""
    m, r, v = h["mesh"], h["resume"], h["versions"]
    lines = [
        f"file       {h['path']}",
        f"format     {h['format']} v{h['format_version']}, written {h['created']} by {h['ranks']} ranks "
        f"(process grid {'x'.join(map(str, json.loads(h['process_grid'])))}), reason: {h['reason']}, "
        f"sequence {h['sequence']}",
        f"mesh       {m['nodes']} nodes on [{m['x_min']:g}, {m['x_max']:g}] x {m['layers']} layers of "
        f"depth {m['depth']:g}: {m['unknowns']} unknowns",
        f"classes    {m['classes']}",
    ]
    levels = r.get("history", [])
    stage = f"grid level {r['level'] + 1} ({r['mesh'][0]}x{r['mesh'][1]}), phase {r['phase']}"
    if r.get("attempt"):
        stage += " (second attempt, from the uncontrolled flow)"
    cont = r.get("cont")
    if cont:
        stage += f", {cont['param']} = {cont['value']:.6g} accepted after {cont['stages']} stages"
        if cont.get("target_u") is not None:
            import math
            tgt = math.exp(cont["target_u"]) if cont["param"] == "nu" else cont["target_u"]
            stage += f", solving for {cont['param']} = {tgt:.6g}"
    p = r.get("params", {})
    lines.append(f"stage      {stage}; loss weight {p.get('loss_weight', float('nan')):g}, "
                 f"nu {p.get('nu', float('nan')):g}; {len(levels)} coarser level(s) done")
    nw = r.get("newton")
    if nw:
        lines.append(f"iteration  Newton {nw['iteration']} of the current solve, |F| = {nw['history'][-1]:.3e} "
                     f"(from {nw['history'][0]:.3e})")
    else:
        rec = r.get("record") or {}
        st = (cont or {}).get("records") or rec.get("stages") or []
        res = st[-1].get("residual") if st else None
        if res is None and st and st[-1].get("residuals"):
            res = st[-1]["residuals"][-1]
        lines.append("iteration  between solves" + (f", last |F| = {res:.3e}" if res is not None else ""))
    lines.append(f"progress   {r.get('newton_total', 0)} Newton iterations, {r.get('wall_used', 0):.1f} s wall "
                 f"time used, {r.get('restarts', 0)} restart(s)")
    lines.append("versions   " + ", ".join(f"{k} {v[k]}" for k in ("mfc_hpc", "python", "numpy", "petsc",
                                                                     "petsc4py", "mpi4py", "h5py", "hdf5") if k in v))
    lines.append("checksums  " + ", ".join(f"{k} ok" for k in h["checksums"]) + f" ({h.get('checksum', 'mix64-sum-v1')})")
    return lines


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from ..checkpoint import verify, write_xdmf

    comm = MPI.COMM_WORLD
    h = verify(args.file, comm)  # CheckpointError (a BadInput): one line, exit 2
    if comm.rank == 0:
        if args.json:
            out = {k: v for k, v in h.items() if k not in ("x", "t")}
            print(json.dumps(out, indent=2, default=str))
        else:
            print("\n".join(describe(h)))
        if args.xdmf:
            m = h["mesh"]
            print(f"wrote {write_xdmf(args.file, m['nodes'], m['layers'], m['classes'])}")
        sys.stdout.flush()
    return 0
