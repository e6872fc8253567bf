"""Pictures of a trained network (matplotlib, Agg backend; PNG files).

``densities.png``: class densities ``rho_c(t, x)`` over depth-time; ``trajectories.png``:
training samples through the network, with the head's decision regions at depth T;
``velocity.png``: the learned velocity field ``b^{n+1/2}(x)``; ``histograms.png``: the
samples before and after the network (mean-field and, if given, gradient descent) over
the solved densities ``rho^0_c`` and ``rho^N_c``, with the head's decision regions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["training_figures", "decision_regions", "transport_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def decision_regions(head, x: np.ndarray) -> list[tuple[float, float, int]]:
    """Intervals ``(a, b, class)`` of ``x`` where the head predicts each class."""
    p = head.predict(x)
    cut = np.flatnonzero(np.diff(p)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [x.size]])
    return [(float(x[s]), float(x[e - 1]), int(p[s])) for s, e in zip(starts, ends)]


def _shade(ax, head, x, colors, vertical: bool = False) -> None:
    for a, b, c in decision_regions(head, x):
        (ax.axhspan if vertical else ax.axvspan)(a, b, color=colors[c], alpha=0.08, lw=0)


def training_figures(out: Path, net, rho: np.ndarray, data, gd_net=None) -> list[Path]:
    """Write the four PNGs to ``out``; returns their paths."""
    plt = _plt()
    out = Path(out)
    K = rho.shape[1]
    x, N = net.nodes, net.N
    t = net.dt * np.arange(N + 1)
    colors = plt.get_cmap("tab10").colors
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
    v = np.abs(net.drift).max() or 1.0
    im = ax.pcolormesh(tm, x, net.drift.T, shading="auto", cmap="RdBu_r", vmin=-v, vmax=v)
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


def transport_figure(path: Path, net, rho: np.ndarray, q: np.ndarray, x0: np.ndarray, xN: np.ndarray,
                     title: str = "") -> Path:
    """The density flow of a transport solve, one PNG with four panels: the total density
    ``rho(t, x)`` over depth-time (image), snapshots of ``rho^n`` with the target ``q``,
    sample trajectories through the (noisy) network, and the samples at depth ``T``
    against ``q``. ``rho[n, c, i]``, ``q[c, i]``, ``x0``/``xN`` samples of class 0."""
    plt = _plt()
    x, N = net.nodes, net.N
    t = net.dt * np.arange(N + 1)
    r, qt = rho.sum(axis=1), q.sum(axis=0)
    fig, axs = plt.subplots(1, 4, figsize=(17, 3.9), constrained_layout=True)
    im = axs[0].pcolormesh(t, x, r.T, shading="auto", cmap="viridis")
    fig.colorbar(im, ax=axs[0], shrink=0.8)
    axs[0].set_xlabel("depth t")
    axs[0].set_ylabel("state x")
    axs[0].set_title("density flow rho(t, x)")
    cmap = plt.get_cmap("viridis")
    for k, n in enumerate(np.unique(np.linspace(0, N, 6).round().astype(int))):
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
