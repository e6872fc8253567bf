"""Pictures of a trained network (matplotlib, Agg backend; PNG files next to the JSON).

1-D (as the releases): ``densities.png`` class densities ``rho_c(t, x)`` over depth-time;
``trajectories.png`` training samples through the network over the head's decision
regions; ``velocity.png`` the learned velocity field ``b^{n+1/2}(x)``; ``histograms.png``
the samples before and after the network(s) over the solved ``rho^0_c``, ``rho^N_c``.

2-D: ``untangle.png`` (the one figure: training samples and the image of a square grid at
five depths, with the head's decision boundary, and the decision regions in input space);
``densities.png`` small multiples, a row per class (and the total), columns at chosen
depths; ``trajectories.png`` test samples' paths in the plane over the head's regions;
``grid_deformation.png`` a square grid pushed through the network; ``decision_regions.png``
the classes the network + head give each input, with the test data on top (misclassified
ringed; the gradient-descent network's boundary dashed); ``velocity.png`` the velocity
field of a few layers over the total density.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["training_figures", "decision_regions", "transport_figure", "depth_columns"]

DPI = 120


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors():
    return _plt().get_cmap("tab10").colors


def depth_columns(N: int, count: int = 5) -> list[int]:
    """``count`` depth levels from 0 to ``N`` (distinct, evenly spread)."""
    return sorted(set(int(v) for v in np.linspace(0, N, count).round()))


# ---------------------------------------------------------------------------- 1-D

def decision_regions(head, x: np.ndarray) -> list[tuple[float, float, int]]:
    """1-D: intervals ``(a, b, class)`` of ``x`` where the head predicts each class."""
    p = head.predict(x)
    cut = np.flatnonzero(np.diff(p)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [x.size]])
    return [(float(x[s]), float(x[e - 1]), int(p[s])) for s, e in zip(starts, ends)]


def _shade(ax, head, x, colors, vertical: bool = False) -> None:
    for a, b, c in decision_regions(head, x):
        (ax.axhspan if vertical else ax.axvspan)(a, b, color=colors[c], alpha=0.08, lw=0)


def _figures_1d(out: Path, net, rho: np.ndarray, data, gd_net=None) -> list[Path]:
    plt = _plt()
    K = rho.shape[1]
    x, N = net.nodes, net.N
    t = net.dt * np.arange(N + 1)
    colors = _colors()
    names = net.class_names
    paths = []

    fig, axs = plt.subplots(1, K + 1, figsize=(3.2 * (K + 1), 3.2), sharey=True, constrained_layout=True)
    for c, ax in enumerate(axs):
        r = rho[:, c] if c < K else rho.sum(axis=1)
        im = ax.pcolormesh(t, x, r.T, shading="auto", cmap="viridis")
        ax.set_title(names[c] if c < K else "all classes")
        ax.set_xlabel("depth t")
        fig.colorbar(im, ax=ax, shrink=0.8)
    axs[0].set_ylabel("state x")
    fig.suptitle("class densities rho_c(t, x)")
    paths.append(out / "densities.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    P = net.forward(data.x_train, path=True)
    for c in range(K):
        sel = data.y_train == c
        ax.plot(t, P[:, sel], color=colors[c], lw=0.6, alpha=0.7)
        ax.plot([], [], color=colors[c], label=names[c])
    _shade(ax, net.head, np.linspace(x[0], x[-1], 2001), colors, vertical=True)
    ax.set_xlabel("depth t (layer n dt)")
    ax.set_ylabel("state x")
    ax.set_title("training samples through the network (shade: head at depth T)")
    ax.legend(loc="upper left", fontsize=8)
    paths.append(out / "trajectories.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    tm = t[:-1] + 0.5 * net.dt
    b = net.drift[:, 0]
    v = np.abs(b).max() or 1.0
    im = ax.pcolormesh(tm, x, b.T, shading="auto", cmap="RdBu_r", vmin=-v, vmax=v)
    ax.contour(t, x, rho.sum(axis=1).T, levels=5, colors="k", linewidths=0.5)
    fig.colorbar(im, ax=ax, label="drift b(t, x)")
    ax.set_xlabel("depth t")
    ax.set_ylabel("state x")
    ax.set_title("learned velocity field (contours: total density)")
    paths.append(out / "velocity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    ncol = 3 if gd_net is not None else 2
    fig, axs = plt.subplots(1, ncol, figsize=(4.2 * ncol, 3.6), sharey=True, constrained_layout=True)
    xs = [data.x_train, net.forward(data.x_train)] + ([gd_net.forward(data.x_train)] if gd_net is not None else [])
    titles = ["input (depth 0)", "mean-field network (depth T)", "gradient descent (depth T)"]
    bins = np.linspace(x[0], x[-1], 65)
    for k, ax in enumerate(axs):
        lev = 0 if k == 0 else -1
        for c in range(K):
            ax.hist(xs[k][data.y_train == c], bins=bins, density=False, color=colors[c], alpha=0.5,
                    weights=np.full((data.y_train == c).sum(), 1.0 / (data.y_train.size * (bins[1] - bins[0]))),
                    label=names[c])
            ax.plot(x, rho[lev, c], color=colors[c], lw=1.2)
        _shade(ax, net.head, np.linspace(x[0], x[-1], 2001), colors)
        ax.set_title(titles[k])
        ax.set_xlabel("state x")
    axs[0].set_ylabel("density (bars: training samples, lines: solved rho_c)")
    axs[0].legend(fontsize=8)
    paths.append(out / "histograms.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------- 2-D

def _box(net):
    g = net.grid
    return (g.lower[0], g.upper[0], g.lower[1], g.upper[1])


def _plane(lo, hi, n: int = 241):
    a = np.linspace(lo[0], hi[0], n)
    b = np.linspace(lo[1], hi[1], n)
    A, B = np.meshgrid(a, b, indexing="xy")
    return a, b, np.stack([A.ravel(), B.ravel()], axis=1)


def _head_boundary(ax, head, lo, hi, **kw) -> None:
    """The head's decision boundaries in the state plane (lines between predicted classes)."""
    a, b, P = _plane(lo, hi, 301)
    lab = head.predict(P).reshape(b.size, a.size)
    if lab.min() == lab.max():
        return
    ax.contour(a, b, lab, levels=np.arange(head.K - 1) + 0.5, colors=kw.pop("colors", "k"),
               linewidths=kw.pop("linewidths", 1.2), linestyles=kw.pop("linestyles", "--"), **kw)


def _head_shade(ax, head, lo, hi, colors, alpha: float = 0.10) -> None:
    from matplotlib.colors import ListedColormap

    a, b, P = _plane(lo, hi, 301)
    lab = head.predict(P).reshape(b.size, a.size)
    ax.pcolormesh(a, b, lab, cmap=ListedColormap([colors[c] for c in range(head.K)]), vmin=-0.5,
                  vmax=head.K - 0.5, alpha=alpha, shading="auto", lw=0, rasterized=True)


def _square_grid(lo, hi, lines: int = 17, pts: int = 121) -> list[np.ndarray]:
    """Polylines ``[p, 2]`` of a square grid on the box ``lo..hi``."""
    xs = np.linspace(lo[0], hi[0], lines)
    ys = np.linspace(lo[1], hi[1], lines)
    tx = np.linspace(lo[0], hi[0], pts)
    ty = np.linspace(lo[1], hi[1], pts)
    return ([np.stack([np.full(pts, x), ty], 1) for x in xs] +
            [np.stack([tx, np.full(pts, y)], 1) for y in ys])


def _data_box(x: np.ndarray, pad: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = x.min(axis=0), x.max(axis=0)
    w = hi - lo
    return lo - pad * w, hi + pad * w


def _scatter_classes(ax, x, y, names, colors, s=6, alpha=0.8, label=True, **kw) -> None:
    for c in range(len(names)):
        sel = y == c
        ax.scatter(x[sel, 0], x[sel, 1], s=s, color=colors[c], alpha=alpha, lw=0,
                   label=names[c] if label else None, **kw)


def _set_box(ax, box) -> None:
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_aspect("equal")


def _untangle(out: Path, net, data) -> Path:
    plt = _plt()
    colors = _colors()
    N = net.N
    cols = depth_columns(N, 5)
    P = net.forward(data.x_train, path=True)  # [n, s, 2]
    lo, hi = _data_box(data.x_train, 0.08)
    lines = _square_grid(lo, hi, 15, 101)
    pushed = [net.forward(L, path=True) for L in lines]  # each [n, p, 2]
    fig, axs = plt.subplots(1, len(cols) + 1, figsize=(3.3 * (len(cols) + 1), 4.6), constrained_layout=True)
    box = _box(net)
    vlo, vhi = _data_box(np.concatenate([P[n] for n in cols] + [L[n] for L in pushed for n in cols]), 0.04)
    view = (max(vlo[0], box[0]), min(vhi[0], box[1]), max(vlo[1], box[2]), min(vhi[1], box[3]))
    for ax, n in zip(axs, cols):
        for L in pushed:
            ax.plot(L[n][:, 0], L[n][:, 1], color="0.45", lw=0.45, alpha=0.8)
        _scatter_classes(ax, P[n], data.y_train, net.class_names, colors, s=5, label=(n == 0))
        _head_boundary(ax, net.head, view[::2], view[1::2], colors="k", linewidths=1.1,
                       linestyles="--" if n < N else "-")
        _set_box(ax, view)
        ax.set_title(f"depth t = {n * net.dt:.2f}" + (" (input)" if n == 0 else " (read-out)" if n == N else ""),
                     fontsize=10)
        ax.tick_params(labelsize=7)
    axs[0].legend(fontsize=7, loc="upper left", markerscale=2)
    _decision_panel(axs[-1], net, data, None)
    axs[-1].set_title("decision regions in input space", fontsize=10)
    fig.suptitle("how the network untangles the classes: training samples and a square grid carried through "
                 "the blocks; line: the linear read-out's decision boundary", fontsize=10)
    path = out / "untangle.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _decision_panel(ax, net, data, gd_net) -> None:
    from matplotlib.colors import ListedColormap

    colors = _colors()
    box = _box(net)
    lo, hi = _data_box(np.concatenate([data.x_train, data.x_test]), 0.1)
    lo, hi = np.maximum(lo, box[::2]), np.minimum(hi, box[1::2])
    a, b, G = _plane(lo, hi, 241)
    lab = net.predict(G).reshape(b.size, a.size)
    ax.pcolormesh(a, b, lab, cmap=ListedColormap([colors[c] for c in range(net.K)]), vmin=-0.5,
                  vmax=net.K - 0.5, alpha=0.22, shading="auto", rasterized=True)
    if gd_net is not None:
        lg = net.head.predict(gd_net.forward(G)).reshape(b.size, a.size)
        if lg.min() != lg.max():
            ax.contour(a, b, lg, levels=np.arange(net.K - 1) + 0.5, colors="k", linewidths=0.9, linestyles="--")
            ax.plot([], [], "k--", lw=0.9, label="gradient descent")
    _head_boundary(ax, net.head, lo, hi, colors="0.3", linewidths=0.9, linestyles=":")
    for c in range(net.K):
        ax.fill([], [], color=colors[c], alpha=0.3, lw=0, label=f"{net.class_names[c]}: network + head")
    ax.plot([], [], ":", color="0.3", lw=0.9, label="head alone (linear)")
    pred = net.predict(data.x_test)
    _scatter_classes(ax, data.x_test, data.y_test, net.class_names, colors, s=7, alpha=0.9, label=False)
    bad = pred != data.y_test
    ax.scatter(data.x_test[bad, 0], data.x_test[bad, 1], s=40, facecolors="none", edgecolors="r", lw=0.9,
               label=f"misclassified ({bad.sum()} of {bad.size})")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, frameon=False)
    ax.tick_params(labelsize=7)


def _figures_2d(out: Path, net, rho: np.ndarray, data, gd_net=None) -> list[Path]:
    plt = _plt()
    colors = _colors()
    K, N = rho.shape[1], net.N
    names = net.class_names
    box = _box(net)
    g = net.grid
    xa, xb = g.axis(0), g.axis(1)
    paths = [_untangle(out, net, data)]

    # densities: a row per class and the total, columns at chosen depths
    cols = depth_columns(N, 5)
    rows = K + 1
    fig, axs = plt.subplots(rows, len(cols), figsize=(2.6 * len(cols) + 0.8, 2.5 * rows), sharex=True,
                            sharey=True, constrained_layout=True)
    for r in range(rows):
        dens = rho[:, r] if r < K else rho.sum(axis=1)
        vmax = float(np.max(dens[cols])) or 1.0
        for j, n in enumerate(cols):
            ax = axs[r, j]
            im = ax.pcolormesh(xa, xb, np.maximum(dens[n], 0.0).T, shading="gouraud", cmap="viridis", vmin=0.0,
                               vmax=vmax, rasterized=True)
            _head_boundary(ax, net.head, box[::2], box[1::2], colors="w", linewidths=0.7)
            _set_box(ax, box)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(f"t = {n * net.dt:.2f}", fontsize=9)
            if j == 0:
                ax.set_ylabel(names[r] if r < K else "all classes", fontsize=9)
        fig.colorbar(im, ax=list(axs[r]), shrink=0.9, pad=0.01)
    fig.suptitle("class densities rho_c(t, x) over depth (dashed: the head's decision boundary)", fontsize=10)
    paths.append(out / "densities.png")
    fig.savefig(paths[-1], dpi=DPI)
    plt.close(fig)

    # trajectories of test samples in the plane
    fig, ax = plt.subplots(figsize=(6.2, 5.6), constrained_layout=True)
    _head_shade(ax, net.head, box[::2], box[1::2], colors)
    rng = np.random.default_rng(0)
    sel = rng.choice(data.x_test.shape[0], size=min(160, data.x_test.shape[0]), replace=False)
    P = net.forward(data.x_test[sel], path=True)
    for k, s in enumerate(sel):
        c = colors[data.y_test[s]]
        ax.plot(P[:, k, 0], P[:, k, 1], color=c, lw=0.6, alpha=0.75)
    _scatter_classes(ax, P[0], data.y_test[sel], names, colors, s=8, alpha=0.5, label=False, marker="o")
    for c in range(K):
        m = data.y_test[sel] == c
        ax.scatter(P[-1, m, 0], P[-1, m, 1], s=22, color=colors[c], edgecolors="k", lw=0.4, label=f"{names[c]} at t = T")
    _head_boundary(ax, net.head, box[::2], box[1::2])
    lo, hi = _data_box(np.concatenate([P[0], P[-1]]), 0.1)
    ax.set_xlim(max(lo[0], box[0]), min(hi[0], box[1]))
    ax.set_ylim(max(lo[1], box[2]), min(hi[1], box[3]))
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{sel.size} test samples through the {N} blocks (small dots: input; shade: the head)", fontsize=9)
    paths.append(out / "trajectories.png")
    fig.savefig(paths[-1], dpi=DPI)
    plt.close(fig)

    # a square grid pushed through the network
    lo, hi = _data_box(data.x_train, 0.08)
    lines = _square_grid(lo, hi, 21, 161)
    pushed = [net.forward(L, path=True) for L in lines]
    cols = depth_columns(N, 4)
    fig, axs = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.8), constrained_layout=True)
    half = len(lines) // 2
    for ax, n in zip(axs, cols):
        for k, L in enumerate(pushed):  # lines of constant x1 purple, of constant x2 green
            ax.plot(L[n][:, 0], L[n][:, 1], color="#7b3294" if k < half else "#1b7837", lw=0.7, alpha=0.85)
        _head_boundary(ax, net.head, box[::2], box[1::2], linewidths=0.9)
        _set_box(ax, box)
        ax.set_title(f"depth t = {n * net.dt:.2f}", fontsize=10)
        ax.tick_params(labelsize=7)
    fig.suptitle("a square grid carried through the network (x -> x + dt U_n(x) per block; purple: lines of "
                 "constant x1, green: of constant x2; dashed: the head's boundary)", fontsize=10)
    paths.append(out / "grid_deformation.png")
    fig.savefig(paths[-1], dpi=DPI)
    plt.close(fig)

    # decision regions in input space
    fig, ax = plt.subplots(figsize=(6.2, 6.2), constrained_layout=True)
    _decision_panel(ax, net, data, gd_net)
    acc = float((net.predict(data.x_test) == data.y_test).mean())
    ax.set_title(f"decision regions of network + head in input space; test data (accuracy {acc:.3f})", fontsize=9)
    paths.append(out / "decision_regions.png")
    fig.savefig(paths[-1], dpi=DPI)
    plt.close(fig)

    # the velocity field of a few layers
    lays = sorted(set([0, N // 3, (2 * N) // 3, N - 1]))
    fig, axs = plt.subplots(1, len(lays), figsize=(3.6 * len(lays), 3.8), constrained_layout=True)
    step = max(1, g.nodes[0] // 17)
    tot = rho.sum(axis=1)
    vmax = float(np.abs(net.drift).max()) or 1.0
    for ax, n in zip(axs, lays):
        mid = 0.5 * (tot[n] + tot[n + 1])
        ax.pcolormesh(xa, xb, np.maximum(mid, 0.0).T, shading="gouraud", cmap="Greys", rasterized=True)
        U = net.drift[n]
        sp = np.hypot(U[0], U[1])
        q = ax.quiver(xa[::step], xb[::step], U[0][::step, ::step].T, U[1][::step, ::step].T,
                      sp[::step, ::step].T, cmap="plasma", clim=(0, vmax), scale=vmax * 14, width=0.004)
        _set_box(ax, box)
        ax.set_title(f"block {n} (t = {(n + 0.5) * net.dt:.2f})", fontsize=10)
        ax.tick_params(labelsize=7)
    fig.colorbar(q, ax=list(axs), shrink=0.85, label="|U_n(x)|")
    fig.suptitle("velocity field U_n of a few blocks (arrows; colour: speed) over the total density", fontsize=10)
    paths.append(out / "velocity.png")
    fig.savefig(paths[-1], dpi=DPI)
    plt.close(fig)
    return paths


def training_figures(out: Path, net, rho: np.ndarray, data, gd_net=None) -> list[Path]:
    """Write the PNGs of a trained network to ``out`` (module docstring); returns their
    paths. ``rho[n, c, *i]``; ``data`` has ``x_train, y_train, x_test, y_test`` in the
    network's states."""
    out = Path(out)
    if net.ndim == 1:
        return _figures_1d(out, net, rho, data, gd_net)
    return _figures_2d(out, net, rho, data, gd_net)


def transport_figure(path: Path, net, rho: np.ndarray, q: np.ndarray, x0: np.ndarray, xN: np.ndarray,
                     title: str = "") -> Path:
    """The density flow of a transport solve. 1-D, four panels: the total density
    ``rho(t, x)`` over depth-time, snapshots of ``rho^n`` with the target ``q``, sample
    trajectories through the noisy network, and the samples at depth ``T`` against ``q``.
    2-D: the total density at five depths, the target, and the input and pushed samples.
    ``rho[n, c, *i]``, ``q[c, *i]``, ``x0``/``xN`` samples of class 0."""
    plt = _plt()
    N = net.N
    t = net.dt * np.arange(N + 1)
    r, qt = rho.sum(axis=1), q.sum(axis=0)
    if net.ndim == 2:
        g = net.grid
        xa, xb = g.axis(0), g.axis(1)
        cols = depth_columns(N, 5)
        fig, axs = plt.subplots(1, len(cols) + 2, figsize=(2.9 * (len(cols) + 2), 3.3), constrained_layout=True)
        vmax = float(max(r.max(), qt.max()))
        box = _box(net)
        for ax, n in zip(axs, cols):
            ax.pcolormesh(xa, xb, np.maximum(r[n], 0).T, shading="gouraud", cmap="viridis", vmin=0, vmax=vmax)
            ax.set_title(f"rho, t = {t[n]:.2f}", fontsize=9)
            _set_box(ax, box)
        ax = axs[len(cols)]
        ax.pcolormesh(xa, xb, qt.T, shading="gouraud", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title("target q", fontsize=9)
        _set_box(ax, box)
        ax = axs[-1]
        ax.scatter(x0[:, 0], x0[:, 1], s=2, color="0.6", label="input samples")
        ax.scatter(xN[:, 0], xN[:, 1], s=2, color="tab:blue", label="pushed (noise nu)")
        ax.contour(xa, xb, qt.T, levels=5, colors="k", linewidths=0.6)
        ax.legend(fontsize=7, markerscale=4)
        ax.set_title("samples and q (contours)", fontsize=9)
        _set_box(ax, box)
        for ax in axs:
            ax.tick_params(labelsize=6)
        if title:
            fig.suptitle(title, fontsize=10)
        path = Path(path)
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        return path
    x = net.nodes
    fig, axs = plt.subplots(1, 4, figsize=(17, 3.9), constrained_layout=True)
    im = axs[0].pcolormesh(t, x, r.T, shading="auto", cmap="viridis")
    fig.colorbar(im, ax=axs[0], shrink=0.8)
    axs[0].set_xlabel("depth t")
    axs[0].set_ylabel("state x")
    axs[0].set_title("density flow rho(t, x)")
    cmap = plt.get_cmap("viridis")
    for n in np.unique(np.linspace(0, N, 6).round().astype(int)):
        axs[1].plot(x, r[n], color=cmap(n / N), lw=1.2, label=f"t = {t[n]:.2f}")
    axs[1].plot(x, qt, "k--", lw=1.2, label="target q")
    axs[1].set_xlabel("state x")
    axs[1].set_title("snapshots")
    axs[1].legend(fontsize=7)
    rng = np.random.default_rng(0)
    sel = rng.choice(x0.size, size=min(60, x0.size), replace=False)
    P = net.forward(x0[sel], noise=True, rng=1, path=True)
    axs[2].plot(t, P, color="tab:blue", lw=0.6, alpha=0.6)
    axs[2].set_xlabel("depth t (layer n dt)")
    axs[2].set_ylabel("state x")
    axs[2].set_title("samples through the network (noise nu)")
    bins = np.linspace(x[0], x[-1], 61)
    axs[3].hist(x0, bins=bins, density=True, color="0.6", alpha=0.5, label="input samples")
    axs[3].hist(xN, bins=bins, density=True, color="tab:blue", alpha=0.5, label="pushed (depth T)")
    axs[3].plot(x, q[0] / np.trapz(q[0], x), "k--", lw=1.2, label="target q")
    axs[3].set_xlabel("state x")
    axs[3].set_title("samples before / after")
    axs[3].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
