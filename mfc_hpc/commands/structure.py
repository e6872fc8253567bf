"""``mfc-hpc structure CONFIG --out DIR``: the preserved structure, midpoint vs implicit Euler.

For each scheme it solves the configuration on three families of meshes (collective, any
number of ranks): a depth refinement on the configuration's node mesh (``--layers``), a
joint refinement of nodes and layers (``--nodes``, layers scaled with them), and deeper
networks at the configuration's ``dt`` (``--depths``, multiples of ``T``). On every solution
it measures the Hamiltonian drift, the variation of the symplectic form of two linearised
solutions (obtained with the exact Jacobian through the solver's linear solver), the mass
error and the Euler-Poincare residual (:mod:`mfc_hpc.structure`), prints a table and the
observed orders, and writes ``DIR/structure.json`` and ``DIR/structure.png``.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("structure")

SCHEMES = ("midpoint", "euler")


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
    if not v or min(v) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {s!r}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("structure", help="measure the preserved structure: midpoint vs implicit Euler",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("config", help="TOML configuration file")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--layers", type=_ints, default=None,
                   help="depth refinement: layer counts on the configuration's nodes "
                        "(default N/4, N/2, N)")
    p.add_argument("--nodes", type=_ints, default=None,
                   help="joint refinement: node counts M_k, layers scaled as N (M_k - 1)/(M - 1) "
                        "(default (M-1)/4+1, (M-1)/2+1, M)")
    p.add_argument("--depths", type=_floats, default=[0.5, 1.0, 2.0],
                   help="depth multiples of T at the configuration's dt (default 0.5,1,2)")
    p.add_argument("--schemes", default="midpoint,euler",
                   help="schemes to compare (default midpoint,euler)")
    p.add_argument("--no-plot", action="store_true", help="do not draw structure.png")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------ one point

def measure(cfg, comm=None) -> dict:
    """Solve ``cfg`` (collective) and measure its structure; the record is on every rank."""
    from ..problem import boundary_data, discretisation
    from ..run import solve_config
    from ..structure import perturbations, structure_record

    ms, summary = solve_config(cfg, comm)
    try:
        rec = {"converged": bool(summary["converged"]), "failure": summary["failure"],
               "newton_iterations": summary["newton_iterations_fine"]}
        d, bd = discretisation(cfg), boundary_data(cfg)
        if not rec["converged"]:
            rec.update({"scheme": d.scheme, "nodes": d.M, "layers": d.N, "depth": d.T, "h": d.h, "dt": d.dt})
            return rec
        sols = []
        for r in perturbations(d, bd):
            rhs, x = ms.X.duplicate(), ms.X.duplicate()
            ms.mesh.set_owned(rhs, r)
            ms.jacobian_solve(rhs, x)
            sols.append(ms.mesh.gather(x))
            rhs.destroy()
            x.destroy()
        rec.update(structure_record(ms.state(), sols[0], sols[1], d, bd))
        return rec
    finally:
        ms.destroy()


def _point(cfg, scheme: str, M: int, N: int, T: float):
    return cfg.replace(mesh={"nodes": M, "layers": N, "depth": T}, model={"scheme": scheme})


def plan(cfg, layers: list[int] | None, nodes: list[int] | None, depths: list[float]
         ) -> dict[str, list[tuple[int, int, float]]]:
    """The ``(M, N, T)`` meshes of the three families (validated; ``BadInput`` if impossible)."""
    from ..cli import BadInput

    M, N, T = cfg.mesh.nodes, cfg.mesh.layers, cfg.mesh.depth
    if layers is None:
        layers = sorted({n for n in (N // 4, N // 2, N) if n >= 2})
    if nodes is None:
        if (M - 1) % 4:
            raise BadInput(f"--nodes: default joint refinement needs nodes - 1 divisible by 4, got nodes = {M}")
        nodes = [(M - 1) // 4 + 1, (M - 1) // 2 + 1, M]
    joint = []
    for m in nodes:
        n = N * (m - 1) / (M - 1)
        if m < 5 or abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise BadInput(f"--nodes: {m} nodes give {n:g} layers at the configuration's ratio; "
                           f"choose M_k with N (M_k - 1)/(M - 1) a positive integer and M_k >= 5")
        joint.append((m, int(round(n)), T))
    deep = []
    for f in depths:
        n = N * f
        if abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise BadInput(f"--depths: {f:g} T needs {n:g} layers at the configuration's dt; "
                           "choose multiples with N * f an integer")
        deep.append((M, int(round(n)), T * f))
    return {"dt_refinement": [(M, n, T) for n in layers], "joint_refinement": joint, "depth": deep}


def study(cfg, comm=None, layers=None, nodes=None, depths=(0.5, 1.0, 2.0),
          schemes=SCHEMES) -> dict:
    """All measurements of the structure study (collective); identical on every rank."""
    from ..structure import observed_order

    families = plan(cfg, layers, nodes, list(depths))
    cache: dict[tuple, dict] = {}
    out: dict = {"families": {k: [list(p) for p in v] for k, v in families.items()}, "schemes": {}}
    for scheme in schemes:
        fam_out = {}
        for fam, pts in families.items():
            recs = []
            for (M, N, T) in pts:
                key = (scheme, M, N, T)
                if key not in cache:
                    log.info("%s: M=%d N=%d T=%g", scheme, M, N, T)
                    cache[key] = measure(_point(cfg, scheme, M, N, T), comm)
                recs.append(cache[key])
            fam_out[fam] = recs
        # observed orders and constants
        ok = [r for r in fam_out["dt_refinement"] if r["converged"]]
        orders = {"hamiltonian_drift_in_dt": observed_order([r["dt"] for r in ok],
                                                            [r["hamiltonian_drift"] for r in ok])}
        okj = [r for r in fam_out["joint_refinement"] if r["converged"] and r.get("euler_poincare")]
        orders["euler_poincare_momentum_in_h"] = observed_order(
            [r["h"] for r in okj], [r["euler_poincare"]["momentum"] for r in okj])
        orders["euler_poincare_continuity_in_h"] = observed_order(
            [r["h"] for r in okj], [r["euler_poincare"]["continuity"] for r in okj])
        p = 2.0 if scheme == "midpoint" else 1.0
        okd = [r for r in fam_out["depth"] if r["converged"]]
        orders["depth_constant_power"] = p
        orders["depth_constants"] = [{"depth": r["depth"], "drift_over_dt_p": r["hamiltonian_drift"] / r["dt"] ** p}
                                     for r in okd]
        fam_out["orders"] = orders
        out["schemes"][scheme] = fam_out
    return out


# ------------------------------------------------------------------------------ output

def _fmt(v, f="%.2e") -> str:
    return "-" if v is None else f % v


def table(res: dict) -> str:
    """The printed table: one row per solve, then the observed orders."""
    lines = [f"{'scheme':9s} {'family':17s} {'M':>5s} {'N':>5s} {'T':>5s} {'Newton':>6s} {'H drift':>9s} "
             f"{'omega var':>9s} {'mass err':>9s} {'EP mom':>9s} {'EP cont':>9s} {'min rho':>10s}"]
    for scheme, fams in res["schemes"].items():
        for fam in ("dt_refinement", "joint_refinement", "depth"):
            for r in fams[fam]:
                if not r["converged"]:
                    lines.append(f"{scheme:9s} {fam:17s} {r['nodes']:5d} {r['layers']:5d} {r['depth']:5.2g} "
                                 f"{'FAILED':>6s} {r.get('failure') or ''}")
                    continue
                ep = r["euler_poincare"] or {}
                lines.append(
                    f"{scheme:9s} {fam:17s} {r['nodes']:5d} {r['layers']:5d} {r['depth']:5.2g} "
                    f"{r['newton_iterations']:6d} {r['hamiltonian_drift']:9.2e} "
                    f"{r['symplectic']['relative_variation']:9.2e} {r['mass_error']:9.2e} "
                    f"{_fmt(ep.get('momentum_relative')):>9s} {_fmt(ep.get('continuity_relative')):>9s} "
                    f"{r['min_density']:10.2e}")
    lines.append("")
    for scheme, fams in res["schemes"].items():
        o = fams["orders"]
        lines.append(f"{scheme}: Hamiltonian drift order in dt: "
                     + ", ".join(_fmt(x, "%.2f") for x in o["hamiltonian_drift_in_dt"]))
        if o["euler_poincare_momentum_in_h"]:
            lines.append(f"{scheme}: Euler-Poincare residual order in h (momentum; continuity): "
                         + ", ".join(_fmt(x, "%.2f") for x in o["euler_poincare_momentum_in_h"]) + "; "
                         + ", ".join(_fmt(x, "%.2f") for x in o["euler_poincare_continuity_in_h"]))
        lines.append(f"{scheme}: drift / dt^{o['depth_constant_power']:g} at depth T = "
                     + ", ".join(f"{c['depth']:g}: {c['drift_over_dt_p']:.3g}" for c in o["depth_constants"]))
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """Four panels: drift vs dt, symplectic form across levels, EP residual vs h, drift vs T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    colours = {"midpoint": "C0", "euler": "C3"}
    for scheme, fams in res["schemes"].items():
        c = colours.get(scheme, "k")
        ok = [r for r in fams["dt_refinement"] if r["converged"]]
        if ok:
            dt = np.array([r["dt"] for r in ok])
            ax[0, 0].loglog(dt, [r["hamiltonian_drift"] for r in ok], "o-", color=c, label=scheme)
            p = 2.0 if scheme == "midpoint" else 1.0
            ax[0, 0].loglog(dt, ok[-1]["hamiltonian_drift"] * (dt / dt[-1]) ** p, ":", color=c,
                            label=f"slope {p:g}")
            fin = ok[-1]
            dev = np.maximum(np.array(fin["symplectic"]["relative_deviation"]), 1e-17)
            ax[0, 1].semilogy(np.arange(dev.size) * fin["dt"], dev, ".-", color=c,
                              label=f"{scheme} (M={fin['nodes']}, N={fin['layers']})")
        okj = [r for r in fams["joint_refinement"] if r["converged"] and r.get("euler_poincare")]
        if okj:
            h = np.array([r["h"] for r in okj])
            ax[1, 0].loglog(h, [r["euler_poincare"]["momentum_relative"] for r in okj], "o-", color=c,
                            label=f"{scheme}: momentum")
            ax[1, 0].loglog(h, [r["euler_poincare"]["continuity_relative"] for r in okj], "s--", color=c,
                            label=f"{scheme}: continuity")
        dc = fams["orders"]["depth_constants"]
        if dc:
            ax[1, 1].plot([x["depth"] for x in dc], [x["drift_over_dt_p"] for x in dc], "o-", color=c,
                          label=f"{scheme}: drift / dt^{fams['orders']['depth_constant_power']:g}")
    ax[0, 0].set(xlabel="dt", ylabel="max_n |H^n - H^0|", title="Hamiltonian drift (fixed nodes)")
    ax[0, 1].set(xlabel="depth t", ylabel="|omega^n - omega^0| / max S",
                 title="symplectic form of two linearised solutions")
    ax[1, 0].set(xlabel="h", ylabel="relative residual",
                 title="Euler-Poincare pair on the discrete solution")
    ax[1, 1].set(xlabel="depth T", ylabel="drift / dt^p", title="error constant vs depth (fixed dt)")
    ax[1, 1].set_yscale("log")
    for a in ax.flat:
        if a.has_data():
            a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from petsc4py import PETSc

    from ..cli import BadInput, EXIT_NOT_CONVERGED
    from ..config import load_config
    from ..output import versions, write_json

    cfg = load_config(args.config)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or not schemes:
        raise BadInput(f"--schemes: must be a comma-separated subset of {', '.join(SCHEMES)}; got {args.schemes!r}")
    comm = PETSc.COMM_WORLD
    res = study(cfg, comm, args.layers, args.nodes, args.depths, schemes)
    res["config"] = cfg.to_dict()
    res["versions"] = versions()
    res["ranks"] = comm.getSize()
    failed = sum(not r["converged"] for f in res["schemes"].values()
                 for k in ("dt_refinement", "joint_refinement", "depth") for r in f[k])
    if comm.getRank() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(table(res), flush=True)
        write_json(out / "structure.json", res)
        if not args.no_plot:
            plot(res, out / "structure.png")
        log.info("wrote %s/structure.json%s", out, "" if args.no_plot else f" and {out}/structure.png")
    return EXIT_NOT_CONVERGED if failed else 0
