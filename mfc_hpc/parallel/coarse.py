"""Rediscretised coarse operators for the multigrid linear solver.

With ``-mfc_mg_coarse_operators rediscretised`` the coarse levels of PETSc's PCMG do not
use Galerkin products ``P^T A P`` (``pc_mg_galerkin none``): each coarse level's matrix
is the scheme's own Jacobian on that coarser depth-time mesh (every ``M_k - 1`` and ``N``
halved), evaluated at the fine Newton iterate injected onto the coarse nodes and levels
(the coarse mesh's points are a subset of the fine one's). The Jacobian keeps its
15-point stencil on every level (a Galerkin product of trilinear interpolation widens it
to the full 27-point box) and no sparse matrix-matrix products are formed.

PETSc builds the hierarchy from the SNES's DMDA (``DMCoarsen``) and asks each coarse
level for its operator through the DM's KSP compute-operators hook; :class:`CoarseOperators`
answers: it recognises the level by its sizes, injects the last fine iterate level by
level and assembles the coarse Jacobian into the matrix PETSc created for that DM.
Only fixed terminal losses (the training problem) are supported: their Jacobian does not
depend on the boundary data's values.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from petsc4py import PETSc

from ..numerics.depth import slab_jacobian_fields
from ..numerics.model import Discretisation
from ..numerics.terminal import BoundaryData
from .mesh import DepthTimeMesh
from .pattern import JacobianPattern

__all__ = ["CoarseOperators", "COARSE_OPERATORS"]

#: values of ``-<prefix>mg_coarse_operators``
COARSE_OPERATORS = ("galerkin", "rediscretised")


def _sizes(dm: PETSc.DMDA) -> tuple[tuple[int, ...], int]:
    s = tuple(dm.getSizes())
    return tuple(reversed(s[:-1])), s[-1] - 1


class _Level:
    """One coarse level: its discretisation, mesh on PETSc's coarse DM and pattern."""

    def __init__(self, dm: PETSc.DMDA, d: Discretisation) -> None:
        self.dm = dm
        self.d = d
        self.mesh = DepthTimeMesh(d, da=dm)
        self.pattern = JacobianPattern(self.mesh, ijv=True)


class CoarseOperators:
    """The compute-operators hook of the coarse levels (see the module docstring).

    ``fine``: the fine discretisation; ``fine_da``: the SNES's DMDA; ``bd``: the boundary
    data (a fixed loss). :meth:`remember` is called with every fine Jacobian's state.
    """

    def __init__(self, fine: Discretisation, fine_da: PETSc.DMDA, bd: BoundaryData) -> None:
        self.fine, self.fine_da, self.bd = fine, fine_da, bd
        self.X: PETSc.Vec | None = None
        self.uncontrolled = False
        self.levels: dict[tuple, _Level] = {}
        self._chain: list[tuple[PETSc.DMDA, PETSc.Mat, PETSc.Vec]] = []  # our own coarsened DMs, injections

    def remember(self, X: PETSc.Vec, uncontrolled: bool = False) -> None:
        """The fine iterate at which the coarse operators are to be evaluated (and whether
        it is the uncontrolled flow's matrix: ``z = 0``, no running cost)."""
        self.X, self.uncontrolled = X, uncontrolled

    def _discretisation(self, nodes: tuple[int, ...], N: int) -> Discretisation:
        g = self.fine.grid.with_nodes(nodes)
        return dataclasses.replace(self.fine, grid=g, N=N)

    def _injected(self, nodes: tuple[int, ...], N: int) -> PETSc.Vec:
        """The fine iterate injected level by level down to the mesh ``nodes x N``."""
        if not self._chain:
            da = self.fine_da
            while True:
                n_, N_ = _sizes(da)
                if any((m - 1) % 2 for m in n_) or N_ % 2 or min(n_) < 3 or N_ < 2:
                    break
                dc = da.coarsen()
                inj = dc.createInjection(da)
                self._chain.append((dc, inj, dc.createGlobalVec()))
                da = dc
        x = self.X
        for dc, inj, v in self._chain:
            inj.mult(x, v)
            x = v
            if _sizes(dc) == (nodes, N):
                return v
        raise RuntimeError(f"coarse operators: no coarse mesh {nodes} x {N} in the hierarchy")

    def __call__(self, ksp: PETSc.KSP, A: PETSc.Mat, B: PETSc.Mat) -> None:
        dm = ksp.getDM()
        if dm.handle == self.fine_da.handle:  # the finest level is the SNES's own Jacobian
            return
        nodes, N = _sizes(dm)
        key = (nodes, N, dm.handle)
        lev = self.levels.get(key)
        if lev is None:
            lev = self.levels[key] = _Level(dm, self._discretisation(nodes, N))
        x = self._injected(nodes, N)
        Zg = lev.mesh.ghosted(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for chunk in lev.pattern.chunks:
                lev.pattern.insert(B, chunk, slab_jacobian_fields(Zg, chunk.slab, lev.d, self.bd,
                                                                  uncontrolled=self.uncontrolled))
        B.assemble()
        if A.handle != B.handle:
            A.assemble()

    def destroy(self) -> None:
        for dc, inj, v in self._chain:
            v.destroy()
            inj.destroy()
            dc.destroy()
        self._chain = []
        for lev in self.levels.values():
            lev.mesh._local.destroy()
        self.levels = {}
