"""``mfc-hpc inspect FILE``: what a checkpoint or a solution file holds (state dimension,
the mesh per axis, classes, stage, iteration, residual, versions), with every dataset's
checksum verified.

A truncated, corrupted, foreign (not written by mfc_hpc) or future-format file is reported
in one line on stderr with exit status 2, and never hangs (the file's digest, or a
child-process probe with a time limit, comes before HDF5 parses it); a good one prints
its summary (or ``--json``). Runs on any number of ranks (checkpoint checksums are
verified in parallel).
"""
from __future__ import annotations

import argparse
import json
import math
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show and verify a checkpoint or solution file",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("file", help="checkpoint (ckpt_NNNNNN.h5) or solution.h5")
    p.add_argument("--json", action="store_true", help="print the header as JSON")
    p.add_argument("--xdmf", action="store_true", help="also write FILE.xmf for ParaView/VisIt")
    p.set_defaults(func=run)


def _mesh_line(nodes, lo, hi, layers, depth) -> str:
    axes = " x ".join(f"{n} nodes on [{a:g}, {b:g}]" for n, a, b in zip(nodes, lo, hi))
    return f"{axes}, {layers} layers of depth {depth:g}"


def describe(h: dict) -> list[str]:
    """Human-readable lines for a verified checkpoint header."""
    m, r, v = h["mesh"], h["resume"], h["versions"] or {}
    unknowns = 2 * m["classes"] * (m["layers"] + 1) * math.prod(m["nodes"])
    lines = [
        f"file       {h['path']}",
        f"format     {h['format']} v{h['format_version']}, written {h['created']} by {h['ranks']} ranks "
        f"(process grid {'x'.join(map(str, h['process_grid']))}), reason: {h['reason']}, sequence {h['sequence']}",
        f"state      d = {m['dim']}",
        f"mesh       {_mesh_line(m['nodes'], m['x_min'], m['x_max'], m['layers'], m['depth'])}: {unknowns} unknowns",
        f"classes    {m['classes']}",
    ]
    levels = r.get("history", [])
    mesh = r.get("mesh") or [m["nodes"], m["layers"]]
    nodes = mesh[0] if isinstance(mesh[0], list) else [mesh[0]]
    stage = f"grid level {r['level'] + 1} ({' x '.join(map(str, nodes))} x {mesh[1]}), phase {r['phase']}"
    if r.get("attempt"):
        stage += " (second attempt, from the uncontrolled flow)"
    cont = r.get("cont")
    if cont:
        stage += f", {cont['param']} = {cont['value']:.6g} accepted after {cont['stages']} stages"
        if cont.get("target_u") is not None:
            tgt = math.exp(cont["target_u"]) if cont["param"] == "nu" else cont["target_u"]
            stage += f", solving for {cont['param']} = {tgt:.6g}"
    p = r.get("params") or {}
    lw, nu = p.get("loss_weight"), p.get("nu")
    lines.append(f"stage      {stage}; loss weight {lw if lw is not None else float('nan'):g}, "
                 f"nu {nu if nu is not None else float('nan'):g}; {len(levels)} coarser level(s) done")
    nw = r.get("newton")
    if nw and nw.get("history"):
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
    lines.append("checksums  " + ", ".join(f"{k} ok" for k in h["checksums"]) + " (mix64-sum-v1)")
    return lines


def describe_solution(path: str, s: dict) -> list[str]:
    g = s["grid"]
    rho = s["rho"]
    cfg = s["attrs"].get("config") or {}
    depth = float(s["t"][-1]) if s["t"].size else float("nan")
    return [f"file       {path}",
            f"format     mfc_hpc.solution v{s['attrs'].get('format_version', 1)}, converged: "
            f"{s['attrs'].get('converged')}",
            f"state      d = {s['dim']}",
            f"mesh       {_mesh_line(g['nodes'], g['lower'], g['upper'], rho.shape[0] - 1, depth)}: "
            f"{2 * rho.size} unknowns",
            f"classes    {rho.shape[1]}",
            f"model      nu {cfg.get('model', {}).get('nu')}, eta {cfg.get('model', {}).get('eta')}, "
            f"loss {(cfg.get('loss') or {}).get('kind')}",
            "checksums  " + ("every dataset ok" if int(s["attrs"].get("format_version", 1)) >= 2
                             else "none in a version 1 file")]


def run(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    from ...errors import BadInput
    from ...fileio.checkpoint import FORMAT, CheckpointError, verify
    from ...fileio.hdf5 import HDF5_SIGNATURE
    from ...fileio.solution import read_solution
    from ...parallel.agreement import collective

    comm = MPI.COMM_WORLD
    path = args.file
    kind, err, signed = None, None, False
    if comm.rank == 0:  # which kind of file, without letting HDF5 parse a damaged one
        try:
            import os
            if not os.path.isfile(path):
                raise BadInput(f"{path}: no such file")
            with open(path, "rb") as fh:
                if fh.read(8) != HDF5_SIGNATURE:
                    raise CheckpointError(f"checkpoint {path}: foreign file: not HDF5")
            from ...fileio.hdf5 import read_in_child, verify_digest
            signed = verify_digest(path)
            if signed:
                import h5py
                with h5py.File(path, "r") as f:
                    fmt = f.attrs.get("format")
            else:  # no digest: a child process reads it (a damaged file can hang or crash HDF5)
                fmt = read_in_child(path)["attrs"].get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            kind = "solution" if fmt == "mfc_hpc.solution" else "checkpoint"
        except BadInput as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001
            err = f"{path}: damaged HDF5 file ({type(e).__name__})"
    kind, err, signed = comm.bcast((kind, err, signed), root=0)
    if err:
        raise BadInput(err)
    if kind == "solution":
        def show() -> None:  # rank 0 reads and prints; its error is raised on every rank
            s = read_solution(path, probe=not signed)
            if args.json:
                print(json.dumps({"path": path, "dim": s["dim"], "grid": s["grid"], "shape": list(s["rho"].shape),
                                  "attrs": s["attrs"]}, indent=2, default=str))
            else:
                print("\n".join(describe_solution(path, s)))
            if args.xdmf:
                print(f"wrote {xdmf(path, tuple(s['grid']['nodes']), s['rho'].shape[0] - 1, s['rho'].shape[1])}")
            sys.stdout.flush()

        collective(comm, show)
        return 0
    h = verify(path, comm)  # CheckpointError (a BadInput): one line, exit 2

    def show() -> None:
        if args.json:
            out = {k: v for k, v in h.items() if k not in ("axes", "t")}
            print(json.dumps(out, indent=2, default=str))
        else:
            print("\n".join(describe(h)))
        if args.xdmf:
            m = h["mesh"]
            print(f"wrote {xdmf(path, tuple(m['nodes']), m['layers'], m['classes'])}")
        sys.stdout.flush()

    collective(comm, show)
    del FORMAT
    return 0


def xdmf(path: str, nodes, N: int, K: int):
    """The XDMF sidecar of ``path``; a failure to write it is an OutputError (exit 74)."""
    from ...errors import OutputError
    from ...fileio.xdmf import write_xdmf

    try:
        return write_xdmf(path, nodes, N, K)
    except OSError as e:
        raise OutputError(f"cannot write the XDMF sidecar of {path}: {e.strerror or e}") from None
