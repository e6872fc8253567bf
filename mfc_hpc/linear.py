"""The linear solver of the Newton steps: the size-based choice and the multigrid defaults.

PETSc-free (the benchmark launchers import it before PETSc is initialised): the options
are strings below the solver's prefix, applied by :class:`mfc_hpc.solver.MeshSolver` and
named as configurations in :data:`mfc_hpc.perf.SOLVERS`.
"""
from __future__ import annotations

__all__ = ["MULTIGRID_FROM", "MULTIGRID_KSP", "MULTIGRID_OPTIONS", "multigrid_levels", "choose_linear",
           "options_string"]

#: ``linear = "auto"`` uses multigrid from this many unknowns on (one class, a mesh that
#: coarsens three times): measured in mfc_hpc/docs/performance.md, FGMRES + PCMG is 2.7x
#: faster than MUMPS on one rank at 1e6 unknowns and 6x at 5.3e5, with 40 % less memory;
#: below ~2e5 MUMPS is as fast and more robust
MULTIGRID_FROM = 2.0e5

#: the outer Krylov solver of the multigrid configuration
MULTIGRID_KSP = {"ksp_type": "fgmres", "ksp_gmres_restart": "100", "ksp_rtol": "1e-8", "ksp_max_it": "500",
                 "pc_type": "mg"}

#: the multigrid defaults (options below the solver's prefix; only a PCMG reads them, and
#: any given on the command line wins): Galerkin coarse operators on the DMDA hierarchy,
#: GMRES(4) + block-Jacobi ILU(0) smoothing, LU (MUMPS where PETSc has it) on the coarsest level
MULTIGRID_OPTIONS = {
    "pc_mg_galerkin": "both",
    "mg_levels_ksp_type": "gmres",
    "mg_levels_ksp_max_it": "4",
    "mg_levels_pc_type": "bjacobi",
    "mg_levels_sub_pc_type": "ilu",
    "mg_coarse_pc_type": "lu",
}


def options_string(opts: dict[str, str]) -> str:
    """``{"ksp_type": "fgmres", ...}`` -> ``"ksp_type fgmres ..."`` (the form of :data:`mfc_hpc.perf.SOLVERS`)."""
    return " ".join(f"{k} {v}" for k, v in opts.items())


def multigrid_levels(M: int, N: int, most: int = 4) -> int:
    """Levels of the DMDA hierarchy of an ``M x (N+1)`` mesh: halving ``M - 1`` and ``N``
    while both stay even and the coarsest mesh keeps at least 5 nodes and 2 layers."""
    L = 1
    while L < most and (M - 1) % 2 ** L == 0 and N % 2 ** L == 0 \
            and (M - 1) // 2 ** L >= 4 and N // 2 ** L >= 2:
        L += 1
    return L


def choose_linear(d, linear: str = "auto") -> str:
    """``"direct"`` (MUMPS LU) or ``"multigrid"`` for ``linear`` = ``auto|direct|multigrid``
    on the discretisation ``d`` (classes ``K``, nodes ``M``, layers ``N``).

    ``auto``: multigrid for one class, at least :data:`MULTIGRID_FROM` unknowns and a mesh
    with 3 or more levels; direct otherwise.
    """
    if linear not in ("auto", "direct", "multigrid"):
        raise ValueError(f"solver.linear: expected auto, direct or multigrid, got {linear!r}")
    if linear != "auto":
        return linear
    unknowns = 2 * d.K * d.M * (d.N + 1)
    if d.K == 1 and unknowns >= MULTIGRID_FROM and multigrid_levels(d.M, d.N) >= 3:
        return "multigrid"
    return "direct"
