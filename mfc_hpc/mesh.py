"""The depth-time mesh as a PETSc DMDA: ``M`` nodes (x) by ``N + 1`` levels (y), ``2K``
fields per point, box stencil of width 1, decomposed over ranks in both directions."""
from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from .scheme import Discretisation, Slab, natural_index, stencil_columns

__all__ = ["DepthTimeMesh"]


class DepthTimeMesh:
    """A distributed ``M x (N+1)`` mesh with ``2K`` fields per point.

    Parameters
    ----------
    d
        The discretisation (sizes and constants).
    comm
        PETSc communicator (default ``PETSc.COMM_WORLD``).
    proc_grid
        ``(px, py)`` ranks along nodes and levels; 0 lets PETSc choose.
    prefix
        Options prefix of the DMDA (``-mfc_da_...``).
    """

    def __init__(self, d: Discretisation, comm: PETSc.Comm | None = None,
                 proc_grid: tuple[int, int] = (0, 0), prefix: str = "mfc_",
                 da: PETSc.DMDA | None = None) -> None:
        self.d = d
        comm = comm or PETSc.COMM_WORLD
        if da is None:
            px, py = (p if p > 0 else PETSc.DECIDE for p in proc_grid)
            if proc_grid[0] > 0 and proc_grid[1] > 0 and proc_grid[0] * proc_grid[1] != comm.getSize():
                raise ValueError(f"solver.process_grid: {proc_grid[0]} x {proc_grid[1]} does not match "
                                 f"{comm.getSize()} ranks")
            da = PETSc.DMDA().create(dim=2, dof=2 * d.K, sizes=(d.M, d.N + 1),
                                     proc_sizes=(px, py),
                                     boundary_type=(PETSc.DM.BoundaryType.NONE,) * 2,
                                     stencil_type=PETSc.DMDA.StencilType.BOX,
                                     stencil_width=1, comm=comm, setup=False)
            da.setOptionsPrefix(prefix)
            da.setFromOptions()
            da.setUp()
        self.da = da
        (xs, xe), (ys, ye) = da.getRanges()
        (gxs, gxe), (gys, gye) = da.getGhostRanges()
        self.slab = Slab(l0=gys, i0=gxs, ys=ys, ye=ye, xs=xs, xe=xe)
        self.ghost_shape = (gye - gys, gxe - gxs, 2 * d.K)
        self.owned_shape = (ye - ys, xe - xs, 2 * d.K)
        self._local = da.createLocalVec()
        self._pattern: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ arrays
    @property
    def comm(self) -> PETSc.Comm:
        return self.da.getComm()

    @property
    def proc_sizes(self) -> tuple[int, int]:
        return tuple(self.da.getProcSizes())

    def create_vec(self) -> PETSc.Vec:
        return self.da.createGlobalVec()

    def ghosted(self, X: PETSc.Vec) -> np.ndarray:
        """Ghosted local copy of ``X`` as ``Z[l, i, a]`` (levels/nodes of the ghost box)."""
        self.da.globalToLocal(X, self._local)
        return self._local.getArray(readonly=True).reshape(self.ghost_shape)

    def owned(self, X: PETSc.Vec, readonly: bool = True) -> np.ndarray:
        """The owned box of ``X`` as ``Z[n, i, a]`` (a view when writable)."""
        return X.getArray(readonly=readonly).reshape(self.owned_shape)

    def set_owned(self, X: PETSc.Vec, Z: np.ndarray) -> None:
        """Fill ``X`` from a global natural array ``Z[n, i, a]`` (only the owned box is read)."""
        s = self.slab
        X.getArray()[:] = Z[s.ys:s.ye, s.xs:s.xe].ravel()

    def gather(self, X: PETSc.Vec) -> np.ndarray:
        """The whole ``Z[n, i, a]`` on every rank (for small meshes and tests)."""
        s = self.slab
        Z = np.zeros((self.d.N + 1, self.d.M, 2 * self.d.K))
        Z[s.ys:s.ye, s.xs:s.xe] = self.owned(X)
        return self.comm.tompi4py().allreduce(Z)

    # ------------------------------------------------------------------ matrix
    def create_matrix(self) -> PETSc.Mat:
        A = self.da.createMatrix()
        A.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        # every rank sets only its own rows (jacobian_pattern): assembly then skips the
        # stash exchange, which otherwise costs a two-sided handshake per assembly
        A.setOption(PETSc.Mat.Option.NO_OFF_PROC_ENTRIES, True)
        return A

    def jacobian_pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rowptr, cols, rows)`` in PETSc's global numbering for :func:`slab_jacobian`.

        Columns outside the mesh are ``-1`` (MatSetValues ignores negative indices).
        Computed once: the stencil is fixed.
        """
        if self._pattern is None:
            s, d = self.slab, self.d
            level, node, field, valid = stencil_columns(s, d)
            Lg, mg, dof = self.ghost_shape
            local = ((level - s.l0) * mg + (node - s.i0)) * dof + field
            shape = (s.ye - s.ys, s.xe - s.xs, dof, 2, 3, dof)
            local = np.broadcast_to(local, shape)
            valid = np.broadcast_to(valid, shape)
            lg = self.da.getLGMap()
            cols = np.full(shape, -1, dtype=PETSc.IntType)
            cols[valid] = lg.apply(local[valid].astype(PETSc.IntType))
            nrow = int(np.prod(shape[:3]))
            cols = cols.reshape(nrow, -1)
            lrow = ((np.arange(s.ys, s.ye)[:, None, None] - s.l0) * mg
                    + (np.arange(s.xs, s.xe)[None, :, None] - s.i0)) * dof + np.arange(dof)
            rows = lg.apply(lrow.ravel().astype(PETSc.IntType))
            rowptr = (np.arange(nrow + 1) * cols.shape[1]).astype(PETSc.IntType)
            self._pattern = (rowptr, np.ascontiguousarray(cols), rows)
        return self._pattern

    def natural_owned_indices(self) -> np.ndarray:
        """Natural-order indices of the owned unknowns, in the owned array's order."""
        s, d = self.slab, self.d
        n = np.arange(s.ys, s.ye)[:, None, None]
        i = np.arange(s.xs, s.xe)[None, :, None]
        a = np.arange(2 * d.K)[None, None, :]
        return natural_index(n, i, a, d).ravel()

    # ------------------------------------------------------------------ reductions
    def level_sum(self, per_level_node: np.ndarray) -> np.ndarray:
        """Sum over all nodes of an owned-box quantity ``q[n, ...]`` -> global ``[N+1, ...]``."""
        s = self.slab
        part = np.zeros((self.d.N + 1,) + per_level_node.shape[2:])
        part[s.ys:s.ye] = per_level_node.sum(axis=1)
        return self.comm.tompi4py().allreduce(part)

    def allmin(self, v: float) -> float:
        from mpi4py import MPI
        return self.comm.tompi4py().allreduce(float(v), op=MPI.MIN)

    def allmax(self, v: float) -> float:
        from mpi4py import MPI
        return self.comm.tompi4py().allreduce(float(v), op=MPI.MAX)

    def allsum(self, v: float) -> float:
        return self.comm.tompi4py().allreduce(float(v))

    def destroy(self) -> None:
        self._local.destroy()
        self.da.destroy()
