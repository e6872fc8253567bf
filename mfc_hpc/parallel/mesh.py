"""The depth-time mesh as a PETSc DMDA of dimension ``d + 1``: the state axes and depth,
``2K`` fields per point, box stencil of width 1, decomposed over ranks along every axis.

DMDA axis order: x is the last state axis, then the others backwards, and depth is the
slowest (the DMDA's last dimension), so a rank's local array reshapes to
``Z[l, i_1, .., i_d, a]`` in C order and ranks split along depth as the multigrid needs.
"""
from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from ..errors import BadInput
from ..numerics.depth import Slab, natural_index
from ..numerics.model import Discretisation
from .options import petsc_error_message

__all__ = ["DepthTimeMesh", "process_grid_error"]


def process_grid_error(pg: tuple[int, ...], axes: tuple[int, ...], size: int) -> str | None:
    """Why ``solver.process_grid = pg`` (ranks along each state axis and along depth, 0 =
    PETSc chooses) cannot split a mesh of ``axes`` points (nodes per state axis, then
    depth levels) over ``size`` ranks; ``None`` if it can."""
    nd = len(axes) - 1
    if len(pg) != nd + 1:
        return (f"solver.process_grid: needs {nd + 1} entries (ranks along each state axis and along depth), "
                f"got {list(pg)}")
    if all(p > 0 for p in pg) and int(np.prod(pg)) != size:
        return (f"solver.process_grid: {' x '.join(map(str, pg))} = {int(np.prod(pg))} ranks does not match the "
                f"{size} rank(s) of this run")
    for k, (p, m) in enumerate(zip(pg, axes)):
        if p > m:
            what = "levels" if k == nd else f"nodes along axis {k + 1}"
            return f"solver.process_grid[{k}]: {p} ranks for {m} {what}"
    prod_set = int(np.prod([p for p in pg if p > 0]) or 1)
    if size % prod_set:
        return f"solver.process_grid: {list(pg)} cannot be completed to {size} ranks"
    return None


class DepthTimeMesh:
    """A distributed ``(N+1) x M_1 x .. x M_d`` mesh with ``2K`` fields per point.

    Parameters
    ----------
    d
        The discretisation (sizes and constants).
    comm
        PETSc communicator (default ``PETSc.COMM_WORLD``).
    proc_grid
        Ranks along each state axis and along depth (``d + 1`` entries); 0 lets PETSc choose.
    prefix
        Options prefix of the DMDA (``-mfc_da_...``).
    da
        An existing DMDA of the right sizes (grid sequencing coarsens one).
    """

    def __init__(self, d: Discretisation, comm: PETSc.Comm | None = None,
                 proc_grid: tuple[int, ...] | None = None, prefix: str = "mfc_",
                 da: PETSc.DMDA | None = None) -> None:
        self.d = d
        nd = d.ndim
        comm = comm or PETSc.COMM_WORLD
        if da is None:
            pg = tuple(proc_grid) if proc_grid is not None else (0,) * (nd + 1)
            size = comm.getSize()
            axes = tuple(d.grid.nodes) + (d.N + 1,)
            why = process_grid_error(pg, axes, size)
            if why:
                raise BadInput(why)
            sizes = tuple(reversed(d.grid.nodes)) + (d.N + 1,)
            procs = tuple(p if p > 0 else PETSc.DECIDE for p in tuple(reversed(pg[:nd])) + (pg[nd],))
            try:
                da = PETSc.DMDA().create(dim=nd + 1, dof=2 * d.K, sizes=sizes, proc_sizes=procs,
                                         boundary_type=(PETSc.DM.BoundaryType.NONE,) * (nd + 1),
                                         stencil_type=PETSc.DMDA.StencilType.BOX,
                                         stencil_width=1, comm=comm, setup=False)
                da.setOptionsPrefix(prefix)
                da.setFromOptions()
                da.setUp()
            except PETSc.Error as e:
                da_opts = " ".join(f"-{k} {v}" for k, v in PETSc.Options().getAll().items()
                                   if k.startswith(prefix + "da_"))
                raise BadInput(f"mesh: PETSc cannot split the {' x '.join(map(str, axes))} mesh over {size} "
                               f"rank(s) with solver.process_grid = {list(pg)}"
                               + (f" and {da_opts}" if da_opts else "") + f": {petsc_error_message(e)}") from None
        self.da = da
        r = da.getRanges()
        g = da.getGhostRanges()
        st = list(reversed(r[:nd]))
        gst = list(reversed(g[:nd]))
        (ys, ye), (gys, gye) = r[nd], g[nd]
        self.slab = Slab(l0=gys, i0=tuple(a for a, _ in gst), ys=ys, ye=ye,
                         xs=tuple(a for a, _ in st), xe=tuple(b for _, b in st))
        self.ghost_shape = (gye - gys,) + tuple(b - a for a, b in gst) + (2 * d.K,)
        self.owned_shape = (ye - ys,) + tuple(b - a for a, b in st) + (2 * d.K,)
        self._local = da.createLocalVec()

    # ------------------------------------------------------------------ arrays
    @property
    def comm(self) -> PETSc.Comm:
        return self.da.getComm()

    @property
    def mpi(self):
        return self.da.getComm().tompi4py()

    @property
    def proc_sizes(self) -> tuple[int, ...]:
        """Ranks along each state axis and along depth (the order of ``solver.process_grid``)."""
        p = tuple(self.da.getProcSizes())
        nd = self.d.ndim
        return tuple(reversed(p[:nd])) + (p[nd],)

    def create_vec(self) -> PETSc.Vec:
        return self.da.createGlobalVec()

    def ghosted(self, X: PETSc.Vec) -> np.ndarray:
        """Ghosted local copy of ``X`` as ``Z[l, *i, a]`` (levels/nodes of the ghost box)."""
        self.da.globalToLocal(X, self._local)
        return self._local.getArray(readonly=True).reshape(self.ghost_shape)

    def owned(self, X: PETSc.Vec, readonly: bool = True) -> np.ndarray:
        """The owned box of ``X`` as ``Z[n, *i, a]`` (a view when writable)."""
        return X.getArray(readonly=readonly).reshape(self.owned_shape)

    def set_owned(self, X: PETSc.Vec, Z: np.ndarray) -> None:
        """Fill ``X`` from a global natural array ``Z[n, *i, a]`` (only the owned box is read)."""
        s = self.slab
        X.getArray()[:] = Z[(slice(s.ys, s.ye),) + s.global_nodes].ravel()

    def gather(self, X: PETSc.Vec, root: int | None = 0) -> np.ndarray | None:
        """The whole ``Z[n, *i, a]`` on rank ``root`` (``None`` elsewhere), or on every rank
        with ``root=None``: for tests and small meshes, never on the production path."""
        s = self.slab
        blocks = (s.ys, s.ye, s.xs, s.xe, np.array(self.owned(X)))
        comm = self.mpi
        parts = comm.allgather(blocks) if root is None else comm.gather(blocks, root=root)
        if parts is None:
            return None
        Z = np.zeros(self.d.state_shape)
        for ys, ye, xs, xe, b in parts:
            Z[(slice(ys, ye),) + tuple(slice(a, e) for a, e in zip(xs, xe))] = b
        return Z

    def natural_owned_indices(self) -> np.ndarray:
        """Natural-order indices of the owned unknowns, in the owned array's order."""
        s, d = self.slab, self.d
        nd = d.ndim
        tot = nd + 2

        def shaped(v, ax):
            return v.reshape([-1 if k == ax else 1 for k in range(tot)])

        n = shaped(np.arange(s.ys, s.ye), 0)
        nodes = tuple(shaped(np.arange(s.xs[k], s.xe[k]), 1 + k) for k in range(nd))
        a = shaped(np.arange(2 * d.K), nd + 1)
        return natural_index(n, nodes, a, d).ravel()

    # ------------------------------------------------------------------ reductions
    def level_sum(self, q: np.ndarray) -> np.ndarray:
        """Sum over all nodes of an owned-box quantity ``q[n, *i, ...]`` -> global ``[N+1, ...]``."""
        s, nd = self.slab, self.d.ndim
        part = np.zeros((self.d.N + 1,) + q.shape[1 + nd:])
        part[s.ys:s.ye] = q.sum(axis=tuple(range(1, 1 + nd)))
        return self.mpi.allreduce(part)

    def allmin(self, v: float) -> float:
        from mpi4py import MPI
        return self.mpi.allreduce(float(v), op=MPI.MIN)

    def allmax(self, v: float) -> float:
        from mpi4py import MPI
        return self.mpi.allreduce(float(v), op=MPI.MAX)

    def allsum(self, v: float) -> float:
        return self.mpi.allreduce(float(v))

    def destroy(self) -> None:
        self._local.destroy()
        self.da.destroy()
