"""The linear solver of the Newton steps: the presets (plain dicts of options below a
solver's prefix) and the size rule behind ``solver.linear = "auto"``.

PETSc-free (the benchmark launchers import it before PETSc is initialised); applied by
:class:`mfc_hpc.parallel.snes.MeshSolver` through :mod:`mfc_hpc.parallel.options` and named
as configurations in :data:`mfc_hpc.studies.perf.SOLVERS`. The one place for them.
"""
from __future__ import annotations

__all__ = ["MULTIGRID_FROM", "DIRECT", "MULTIGRID", "multigrid_levels", "choose_linear", "multigrid_from",
           "options_string", "preset"]

#: ``linear = "auto"`` uses multigrid from this many unknowns on, per state dimension
#: ``d`` and number of classes (``1``: one class, ``2``: two or more), on a mesh that
#: coarsens at least three times (mfc_hpc/docs/performance.md, "The default by size"):
#: * 1-D, one class: FGMRES + PCMG is 2.7x faster than MUMPS on one rank at 1e6 unknowns
#:   and 6x at 5.3e5, with 40 % less memory; below ~2e5 MUMPS is as fast and more robust;
#: * 1-D, several classes (provisional, loaded machine): 1.2x faster than MUMPS at 1.3e5
#:   unknowns with 48 % less memory, the same CPU share; the one-class threshold until a
#:   quiet run places it;
#: * 2-D (a 3-D depth-time mesh, where LU fills like n^(4/3)): multigrid is 3x faster than
#:   MUMPS at 1e4 unknowns and 11x at 7.4e4 (two classes, per CPU second), with 2-4.6x less
#:   memory, and both reach the same solution to round-off: the default from 1e4 on
MULTIGRID_FROM: dict[tuple[int, int], float] = {(1, 1): 2.0e5, (1, 2): 2.0e5, (2, 1): 1.0e4, (2, 2): 1.0e4}

#: MUMPS LU (the package inserts the factor package only where PETSc has MUMPS)
DIRECT = {"ksp_type": "preonly", "pc_type": "lu"}

#: FGMRES + geometric multigrid on the DMDA hierarchy: Galerkin coarse operators,
#: GMRES(4) + block-Jacobi ILU(0) smoothing,
#: LU (MUMPS where PETSc has it) on the coarsest level; any given on the command line wins
MULTIGRID = {
    "ksp_type": "fgmres", "ksp_gmres_restart": "100", "ksp_rtol": "1e-8", "ksp_max_it": "500",
    "pc_type": "mg",
    "pc_mg_galerkin": "both",
    "mg_levels_ksp_type": "gmres",
    "mg_levels_ksp_max_it": "4",
    "mg_levels_pc_type": "bjacobi",
    "mg_levels_sub_pc_type": "ilu",
    "mg_coarse_pc_type": "lu",
}


def options_string(opts: dict[str, str]) -> str:
    """``{"ksp_type": "fgmres", ...}`` -> ``"ksp_type fgmres ..."``."""
    return " ".join(f"{k} {v}" for k, v in opts.items())


def multigrid_levels(nodes: tuple[int, ...] | int, N: int, most: int = 4) -> int:
    """Levels of the DMDA hierarchy of a mesh with ``nodes`` per state axis and ``N + 1``
    levels: halving every ``M_k - 1`` and ``N`` while they stay even and the coarsest mesh
    keeps at least 5 nodes per axis and 2 layers."""
    nodes = (nodes,) if isinstance(nodes, int) else tuple(nodes)
    L = 1
    while L < most and all((M - 1) % 2 ** L == 0 and (M - 1) // 2 ** L >= 4 for M in nodes) \
            and N % 2 ** L == 0 and N // 2 ** L >= 2:
        L += 1
    return L


def choose_linear(d, linear: str = "auto") -> str:
    """``"direct"`` (MUMPS LU) or ``"multigrid"`` for ``linear`` = ``auto|direct|multigrid``
    on the discretisation ``d``.

    ``auto``: multigrid from :func:`multigrid_from` unknowns on a mesh with 3 or more
    levels; direct otherwise.
    """
    if linear not in ("auto", "direct", "multigrid"):
        raise ValueError(f"solver.linear: expected auto, direct or multigrid, got {linear!r}")
    if linear != "auto":
        return linear
    big = d.unknowns >= multigrid_from(d.ndim, d.K)
    deep = multigrid_levels(d.grid.nodes, d.N) >= 3
    return "multigrid" if big and deep else "direct"


def multigrid_from(ndim: int, K: int) -> float:
    """Unknowns from which ``auto`` picks multigrid (:data:`MULTIGRID_FROM`)."""
    return MULTIGRID_FROM[(min(max(ndim, 1), 2), 1 if K <= 1 else 2)]


#: The smoother is block-Jacobi ILU(0) in every dimension. In 2-D it was additive Schwarz
#: with one level of overlap from session 3 to the second quiet window of 2026-12-02: the
#: overlap keeps the one-rank iteration count on two ranks (65^2 x 32: 3/3/3/3 against
#: 4/4/3/3), but it costs more than the iteration it saves (two ranks, two classes:
#: 162.3 s against 184.6 s at 129^2 x 64, 15.6 s against 18.4 s at 65^2 x 32, 22-25 %
#: less memory; docs/performance.md, "Multigrid for several classes").


def preset(linear: str, mumps: bool, levels: int) -> dict[str, str]:
    """The options of a linear solver choice (``direct`` or ``multigrid`` with ``levels``
    levels), the same in every state dimension."""
    if linear == "multigrid":
        out = dict(MULTIGRID, pc_mg_levels=str(levels))
        if mumps:
            out["mg_coarse_pc_factor_mat_solver_type"] = "mumps"
        return out
    out = dict(DIRECT)
    if mumps:
        out["pc_factor_mat_solver_type"] = "mumps"
    return out
