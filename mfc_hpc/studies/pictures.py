"""Pictures of the studies (matplotlib, Agg): the structure study's four panels, the
stability command's boundary and amplification, and a sweep's diagram. Each takes the
JSON-ready result it draws and a path; PNGs go next to their JSON."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["structure_figure", "stability_figure", "sweep_diagram"]

_MARK = {"newton": ("x", "k", "Newton failed"), "positivity": ("v", "C3", "lost positivity"),
         "invertibility": ("^", "C1", "non-invertible block"), "accuracy": ("s", "C4", "accuracy below baseline")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def structure_figure(res: dict, path: str | Path) -> None:
    """Drift vs dt, the symplectic form over levels, the Euler-Poincare residual vs h, drift
    constant vs depth."""
    plt = _plt()
    fig, ax = plt.subplots(2, 2, figsize=(11, 8.5))
    colours = {"midpoint": "C0", "euler": "C3"}
    for scheme, fams in res["schemes"].items():
        c = colours.get(scheme, "k")
        ok = [r for r in fams["dt_refinement"] if r["converged"]]
        if ok:
            dt = np.array([r["dt"] for r in ok])
            ax[0, 0].loglog(dt, [r["hamiltonian_drift"] for r in ok], "o-", color=c, label=scheme)
            p = 2.0 if scheme == "midpoint" else 1.0
            ax[0, 0].loglog(dt, ok[-1]["hamiltonian_drift"] * (dt / dt[-1]) ** p, ":", color=c, label=f"slope {p:g}")
            fin = ok[-1]
            dev = np.maximum(np.array(fin["symplectic"]["relative_deviation"]), 1e-17)
            ax[0, 1].semilogy(np.arange(dev.size) * fin["dt"], dev, ".-", color=c,
                              label=f"{scheme} (nodes {fin['nodes']}, N={fin['layers']})")
        okj = [r for r in fams["joint_refinement"] if r["converged"] and r.get("euler_poincare")]
        if okj:
            h = np.array([np.atleast_1d(r["h"])[0] for r in okj])
            ax[1, 0].loglog(h, [r["euler_poincare"]["momentum_relative"] for r in okj], "o-", color=c,
                            label=f"{scheme}: momentum")
            ax[1, 0].loglog(h, [r["euler_poincare"]["continuity_relative"] for r in okj], "s--", color=c,
                            label=f"{scheme}: continuity")
        dc = fams["orders"]["depth_constants"]
        if dc:
            ax[1, 1].plot([x["depth"] for x in dc], [x["drift_over_dt_p"] for x in dc], "o-", color=c,
                          label=f"{scheme}: drift / dt^{fams['orders']['depth_constant_power']:g}")
    ax[0, 0].set(xlabel="dt", ylabel="max_n |H^n - H^0|", title="Hamiltonian drift (fixed nodes)")
    ax[0, 1].set(xlabel="depth t", ylabel="|omega^n - omega^0| / max S", title="symplectic form of two linearised solutions")
    ax[1, 0].set(xlabel="h", ylabel="relative residual", title="Euler-Poincare pair on the discrete solution")
    ax[1, 1].set(xlabel="depth T", ylabel="drift / dt^p", title="error constant vs depth (fixed dt)")
    ax[1, 1].set_yscale("log")
    for a in ax.flat:
        if a.has_data():
            a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"structure, d = {res.get('dim', 1)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stability_figure(res: dict, path: str | Path) -> None:
    """Left: the a priori and sharp smallest stable ``N`` over node counts with this run;
    right: ``|G|`` of the frozen-coefficient amplification (1-D cut along axis 1)."""
    from .stability import amplification

    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    b = res["boundary"]
    Ms = np.array(b["nodes"], dtype=float)
    for key, style, lab in (("a_priori", "k--", "a priori smallest stable N"), ("sharp", "C0-", "sharp smallest stable N")):
        v = np.array([np.nan if x is None else x for x in b[key]], dtype=float)
        if np.isfinite(v).any():
            ax[0].loglog(Ms, v, style, label=lab)
    pre, run = res["a_priori"], res.get("run")
    M0, N0 = np.atleast_1d(pre["nodes"])[0], pre["layers"]
    if run is not None:
        st = run["observed"]["stable"]
        ax[0].loglog([M0], [N0], "o" if st else "x", color="C2" if st else "C3", ms=10, mew=2,
                     label="this run (observed " + ("stable)" if st else "unstable: " + ", ".join(run["observed"]["failures"]) + ")"))
    else:
        ax[0].loglog([M0], [N0], "D", color="C2", ms=8, label="this mesh")
    ax[0].set(xlabel="nodes per axis M", ylabel="layers N", title="layers for nodes")
    ax[0].legend(fontsize=8)
    ax[0].grid(True, which="both", alpha=0.3)
    if pre.get("available"):
        th = np.linspace(0, np.pi, 361)
        U = pre["frozen"]["loss_gradient"][0]
        h, dt, nu = np.atleast_1d(pre["h"])[0], pre["dt"], res["nu"]
        for scheme, c in (("midpoint", "C0"), ("euler", "C3")):
            G = amplification(th, dt, U, h, nu, scheme)
            ax[1].plot(th, np.abs(G), "-", color=c, label=f"|G| {scheme}")
            ax[1].plot(th, G.real, "--", color=c, label=f"Re G {scheme}")
        ax[1].set(title=f"frozen-coefficient amplification (U = {U:.3g})")
    else:
        ax[1].text(0.5, 0.5, "no a priori bound:\n" + pre["source"], ha="center", va="center", fontsize=8,
                   transform=ax[1].transAxes, wrap=True)
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(xlabel="theta = k h", ylabel="G")
    if ax[1].has_data():
        ax[1].legend(fontsize=8)
    ax[1].grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_diagram(res: dict, path: str | Path) -> None:
    """Observed stable (o) and unstable points (marker by the first failure) in the (M, N)
    plane, each rule's boundary (smallest stable N over M), the sharp rule's misses boxed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.2, 5.6))
    pts = res["points"]
    b = res["boundaries"]
    Ms = np.array(b["nodes"], dtype=float)
    ylo, yhi = min(res["layers"]) / 1.6, max(res["layers"]) * 1.6
    for key, style, lab in (("a_priori", "k--", "a priori: smallest stable N"), ("sharp", "C0-", "sharp: smallest stable N")):
        v = np.array([np.nan if x is None else x for x in b[key]], dtype=float)
        vv = np.where(np.isfinite(v), v, yhi * 4)
        ax.step(Ms, vv, style, where="mid", label=lab + (" (none beyond the top)" if not np.isfinite(v).all() else ""))
    st = [r for r in pts if r["observed"]]
    if st:
        ax.plot([r["nodes"] for r in st], [r["layers"] for r in st], "o", color="C2", ms=8, label="observed stable")
    for f, (mk, c, lab) in _MARK.items():
        sel = [r for r in pts if r["failures"] and r["failures"][0] == f]
        if sel:
            ax.plot([r["nodes"] for r in sel], [r["layers"] for r in sel], mk, color=c, ms=8, mew=2, label=lab)
    miss = [r for r in pts if r["sharp"] is not None and bool(r["sharp"]) != r["observed"]]
    if miss:
        ax.plot([r["nodes"] for r in miss], [r["layers"] for r in miss], "s", mfc="none", color="k", ms=15,
                label="sharp rule miss")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_ylim(ylo, yhi)
    ax.set_xlim(min(res["nodes"]) / 1.3, max(res["nodes"]) * 1.3)
    rules = res["rules"]

    def rate(k):
        h = rules[k]["hit_rate"]
        return "-" if h is None else f"{h:.2f}"
    ax.set(xlabel="nodes per axis M", ylabel="layers N",
           title=f"d = {res['dim']}: sharp {rate('sharp')} (false stable {rules['sharp']['false_stable']}), "
                 f"a priori {rate('a_priori')} ({rules['a_priori']['false_stable']}), "
                 f"a posteriori {rate('a_posteriori')}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
