"""The Jacobian's sparsity in PETSc numbering, from the one stencil table of the scheme.

:func:`~mfc_hpc.numerics.depth.stencil_columns` names, for every entry of the slab
Jacobian ``V[n, *i, a, q, s, b]``, its global natural column; here those become PETSc
global indices through the DMDA's local-to-global map (columns outside the mesh are
``-1``, which ``MatSetValues`` ignores), and the matrix is preallocated from exactly these
entries: ``2(2d+1)`` points of ``2K`` fields per row (fewer at the walls and the first and
last levels) instead of the DMDA's full box of ``3^(d+1)`` points.
"""
from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from ..numerics.depth import Slab, jacobian_chunks, stencil_columns
from .mesh import DepthTimeMesh

__all__ = ["ChunkPattern", "JacobianPattern"]


class ChunkPattern:
    """``(rowptr, cols, rows)`` of the owned levels ``ys .. ye-1`` of one chunk."""

    def __init__(self, mesh: DepthTimeMesh, s: Slab) -> None:
        d = mesh.d
        nd = d.ndim
        g = mesh.slab
        level, nodes, field, valid = stencil_columns(s, d)
        gshape = mesh.ghost_shape
        dof = 2 * d.K
        local = level - g.l0
        for k in range(nd):
            local = local * gshape[1 + k] + (nodes[k] - g.i0[k])
        local = local * dof + field
        shape = (s.ye - s.ys,) + s.owned_count + (dof, 2, 2 * nd + 1, dof)
        local = np.broadcast_to(local, shape)
        valid = np.broadcast_to(valid, shape)
        lg = mesh.da.getLGMap()
        cols = np.full(shape, -1, dtype=PETSc.IntType)
        cols[valid] = lg.apply(local[valid].astype(PETSc.IntType))
        nrow = int(np.prod(shape[:nd + 2]))
        self.cols = np.ascontiguousarray(cols.reshape(nrow, -1))
        lrow = np.arange(s.ys - g.l0, s.ye - g.l0).reshape([-1] + [1] * (nd + 1))
        for k in range(nd):
            lrow = lrow * gshape[1 + k] + (np.arange(s.xs[k], s.xe[k]) - g.i0[k]).reshape(
                [1] * (k + 1) + [-1] + [1] * (nd - k))
        lrow = lrow * dof + np.arange(dof).reshape([1] * (nd + 1) + [-1])
        self.rows = lg.apply(lrow.ravel().astype(PETSc.IntType))
        self.rowptr = (np.arange(nrow + 1) * self.cols.shape[1]).astype(PETSc.IntType)
        self.slab = s

    @property
    def set_entries(self) -> int:
        return int((self.cols >= 0).sum())


class JacobianPattern:
    """The pattern of the rank's rows, in chunks of levels (bounded temporaries), and the
    matrix preallocated from it."""

    def __init__(self, mesh: DepthTimeMesh, max_values: int = 1 << 23) -> None:
        self.mesh = mesh
        self.chunks = [ChunkPattern(mesh, c) for c in jacobian_chunks(mesh.slab, mesh.d, max_values)]

    @property
    def rows(self) -> int:
        return int(sum(c.rows.size for c in self.chunks))

    @property
    def set_entries(self) -> int:
        return int(sum(c.set_entries for c in self.chunks))

    def create_matrix(self) -> PETSc.Mat:
        """An AIJ matrix preallocated for exactly the entries the scheme sets."""
        mesh = self.mesh
        X = mesh.create_vec()
        n, N = X.getLocalSize(), X.getSize()
        r0, r1 = X.getOwnershipRange()
        X.destroy()
        dnnz = np.zeros(n, dtype=PETSc.IntType)
        onnz = np.zeros(n, dtype=PETSc.IntType)
        for c in self.chunks:
            ok = c.cols >= 0
            inside = ok & (c.cols >= r0) & (c.cols < r1)
            dnnz[c.rows - r0] = inside.sum(axis=1)
            onnz[c.rows - r0] = (ok & ~inside).sum(axis=1)
        A = PETSc.Mat().createAIJ(size=((n, N), (n, N)), nnz=(dnnz, onnz), comm=mesh.comm)
        A.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        # every rank sets only its own rows: assembly then skips the stash exchange
        A.setOption(PETSc.Mat.Option.NO_OFF_PROC_ENTRIES, True)
        A.setDM(mesh.da)
        return A

    def insert(self, P: PETSc.Mat, chunk: ChunkPattern, V: np.ndarray) -> None:
        """``MatSetValuesIJV`` of one chunk's slab Jacobian ``V``."""
        P.setValuesIJV(chunk.rowptr, chunk.cols, V.reshape(chunk.rows.size, -1),
                       addv=PETSc.InsertMode.INSERT_VALUES, rowmap=chunk.rows)
