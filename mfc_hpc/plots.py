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

__all__ = ["training_figures", "decision_regions"]


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
