"""The Jacobian's sparsity in PETSc numbering, from the one stencil table of the scheme, and
the matrix that owns exactly those entries.

:func:`~mfc_hpc.numerics.depth.stencil_columns` names, for every entry of the slab
Jacobian ``V[n, *i, a, q, s, b]``, its global natural column; here those become PETSc
global indices through the DMDA's local-to-global map (columns outside the mesh are
dropped): ``2(2d+1)`` points of ``2K`` fields per row (fewer at the walls and the first and
last levels) instead of the DMDA's full box of ``3^(d+1)`` points.

The matrix is an AIJ matrix *on the pattern's own arrays* (``MatCreateSeqAIJWithArrays`` /
``MatCreateMPIAIJWithSplitArrays``: PETSc keeps pointers to them, nothing is copied):
the row pointers and sorted column indices are built once, together with, for every
stored entry, its position in the field-major slab Jacobian
(:func:`~mfc_hpc.numerics.depth.slab_jacobian_fields`) of its chunk of levels. An
assembly is then one ``numpy.take`` per chunk straight into the matrix's value arrays,
followed by ``MatAssemblyBegin/End`` (which tells the preconditioners the values
changed); no ``MatSetValues`` call, no reordering inside PETSc. Any other matrix (the
DMDA's full-box one, ``-mfc_jacobian_preallocation box``) is filled by
``MatSetValuesIJV`` from the same pattern.
"""
from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from ..numerics.depth import Slab, jacobian_chunks, stencil_columns
from .mesh import DepthTimeMesh

__all__ = ["ChunkPattern", "JacobianPattern"]

_BIG = np.iinfo(np.int64).max


def _sorted_part(cols: np.ndarray, src: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row the kept entries in increasing column order: ``(counts, columns, sources)``."""
    key = np.where(keep, cols.astype(np.int64), _BIG)
    order = np.argsort(key, axis=1, kind="stable")
    cnt = keep.sum(axis=1)
    mask = np.arange(cols.shape[1])[None, :] < cnt[:, None]
    return (cnt, np.take_along_axis(key, order, axis=1)[mask],
            np.take_along_axis(src, order, axis=1)[mask])


_BLOCK = 1 << 18


def _entry_order(nd: int, dof: int) -> np.ndarray:
    """The entries ``(q, s, b)`` of a row in increasing natural column order: level (``q``),
    then the node offset ``-e_1 .. -e_d, 0, +e_d .. +e_1`` (axis 1 the slowest), then the
    field."""
    S = 2 * nd + 1
    node_rank = np.empty(S, dtype=np.int64)
    for k in range(nd):  # stencil index 1 + 2k is -e_k, 2 + 2k is +e_k (walk.stencil_offsets)
        node_rank[1 + 2 * k] = k
        node_rank[2 + 2 * k] = 2 * nd - k
    node_rank[0] = nd
    q, st, b = np.meshgrid(np.arange(2), np.arange(S), np.arange(dof), indexing="ij")
    return np.lexsort((b.ravel(), node_rank[st.ravel()], q.ravel()))


def _gather(flat: np.ndarray, src: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = flat[src]``; 32-bit ``src`` (half the memory of the index arrays) is
    widened block by block into a cache-sized buffer (``numpy.take`` would widen it all)."""
    if src.dtype == np.intp:
        np.take(flat, src, out=out, mode="clip")
        return
    buf = np.empty(min(_BLOCK, src.size), dtype=np.intp)
    for a in range(0, src.size, _BLOCK):
        b = min(a + _BLOCK, src.size)
        ix = buf[:b - a]
        ix[...] = src[a:b]
        np.take(flat, ix, out=out[a:b], mode="clip")


class ChunkPattern:
    """The owned levels ``ys .. ye-1`` of one chunk: its rows (contiguous in PETSc's
    numbering), and for the diagonal and off-diagonal blocks of the rank's rows the
    counts per row, the columns and the position of each value in the chunk's
    field-major slab Jacobian.

    With ``ijv=True`` it also keeps ``(rowptr, cols, rows)`` of every pattern entry in the
    slab Jacobian's row-major layout (``-1`` off the mesh) for ``MatSetValuesIJV``.
    """

    def __init__(self, mesh: DepthTimeMesh, s: Slab, r0: int, r1: int, ijv: bool = False) -> None:
        d = mesh.d
        nd = d.ndim
        g = mesh.slab
        dof = 2 * d.K
        S = 2 * nd + 1
        I32 = np.int32
        level, nodes, field, valid = stencil_columns(s, d)
        gshape = mesh.ghost_shape
        # ghosted-local index of every entry's column (32-bit: a rank's ghosted box is small)
        local = (level - g.l0).astype(I32)
        for k in range(nd):
            local = local * I32(gshape[1 + k]) + (nodes[k] - g.i0[k]).astype(I32)
        local = local * I32(dof) + field.astype(I32)
        nl = s.ye - s.ys
        owned = s.owned_count
        shape = (nl,) + owned + (dof, 2, S, dof)
        nrow = int(np.prod(shape[:nd + 2]))
        E = 2 * S * dof
        # the entries of a row in increasing natural column order (:func:`_entry_order`)
        order = _entry_order(nd, dof)
        local = np.broadcast_to(local, shape).reshape(nrow, E)[:, order]
        valid = np.broadcast_to(valid, shape).reshape(nrow, E)[:, order]
        lg = mesh.da.getLGMap()
        cols = np.full((nrow, E), -1, dtype=PETSc.IntType)
        cols[valid] = lg.apply(local[valid].astype(PETSc.IntType))
        del local
        lrow = np.arange(s.ys - g.l0, s.ye - g.l0).reshape([-1] + [1] * (nd + 1))
        for k in range(nd):
            lrow = lrow * gshape[1 + k] + (np.arange(s.xs[k], s.xe[k]) - g.i0[k]).reshape(
                [1] * (k + 1) + [-1] + [1] * (nd - k))
        lrow = lrow * dof + np.arange(dof).reshape([1] * (nd + 1) + [-1])
        rows = lg.apply(lrow.ravel().astype(PETSc.IntType))
        self.slab = s
        self.nrow = nrow
        self.row0 = int(rows[0]) - r0  # first local row
        if not np.array_equal(rows, rows[0] + np.arange(nrow)):  # pragma: no cover - DMDA numbering
            raise RuntimeError("pattern: the rows of a chunk of levels are not contiguous in PETSc's numbering")
        # position of entry (n, *i, a, q, s, b) in the field-major VF[a, q, s, b, n, *i]:
        # ((a E + e) nl + n) P + p for the row (n, p, a) and the entry e = (q, s, b)
        P = int(np.prod(owned))
        itype = I32 if nl * P * dof * E < 2**31 else np.int64
        tbl = (np.arange(dof, dtype=itype)[:, None] * E + order[None, :].astype(itype)) * itype(nl)  # [a, e]
        point = (np.arange(nl, dtype=itype)[:, None] * P + np.arange(P, dtype=itype)[None, :]).reshape(-1)
        src = ((tbl[None, :, :] * itype(P)) + point[:, None, None]).reshape(nrow, E)
        # the rank's own columns: PETSc numbers its box in natural order, so in every row
        # they increase in the entry order above
        inside = (cols >= r0) & (cols < r1)
        self.d_count = inside.sum(axis=1)
        dj = cols[inside]
        dsrc = src[inside]
        row = np.repeat(np.arange(nrow), self.d_count)
        if np.any((np.diff(dj) <= 0) & (row[1:] == row[:-1])):  # pragma: no cover - numbering changed
            raise RuntimeError("pattern: the rank's own columns are not in natural order")
        del row
        # columns of other ranks: only the rows next to a cut, sorted one by one
        outside = (cols >= 0) & ~inside
        cut = np.flatnonzero(outside.any(axis=1))
        self.o_count = np.zeros(nrow, dtype=np.int64)
        oj = osrc = np.zeros(0, dtype=np.int64)
        if cut.size:
            cnt, oj, osrc = _sorted_part(cols[cut], src[cut], outside[cut])
            self.o_count[cut] = cnt
        self.d_cols = (dj - r0).astype(PETSc.IntType)
        self.o_cols = oj.astype(PETSc.IntType)
        self.d_src = dsrc.astype(itype, copy=False)
        self.o_src = osrc.astype(itype)
        self.set_entries = int(inside.sum() + outside.sum())
        if ijv:  # row-major values V[n, *i, a, q, s, b]: the entries in their stencil order
            inv = np.empty_like(order)
            inv[order] = np.arange(E)
            self.cols = np.ascontiguousarray(cols[:, inv])
            self.rows = rows
            self.rowptr = (np.arange(nrow + 1) * E).astype(PETSc.IntType)
        else:
            self.cols = self.rows = self.rowptr = None
        self.d_range = self.o_range = (0, 0)


class JacobianPattern:
    """The pattern of the rank's rows, in chunks of levels (bounded temporaries), and the
    matrix built on it.

    ``ijv``: keep the row-major index arrays too, for filling a matrix that is not the
    pattern's own (the DMDA's full-box matrix)."""

    def __init__(self, mesh: DepthTimeMesh, max_values: int = 1 << 23, ijv: bool = False) -> None:
        self.mesh = mesh
        X = mesh.create_vec()
        self.n, self.N = X.getLocalSize(), X.getSize()
        self.r0, self.r1 = X.getOwnershipRange()
        X.destroy()
        self.chunks = [ChunkPattern(mesh, c, self.r0, self.r1, ijv)
                       for c in jacobian_chunks(mesh.slab, mesh.d, max_values)]
        if ijv:  # filled by MatSetValuesIJV only: the gather's arrays are not needed
            for c in self.chunks:
                c.d_cols = c.o_cols = c.d_src = c.o_src = None
        self.matrix: PETSc.Mat | None = None
        self._arrays: tuple = ()

    @property
    def rows(self) -> int:
        return int(sum(c.nrow for c in self.chunks))

    @property
    def set_entries(self) -> int:
        return int(sum(c.set_entries for c in self.chunks))

    @property
    def stored_entries(self) -> int:
        """Entries of the value arrays of :meth:`create_matrix`'s matrix (0 before)."""
        return int(sum(v.size for v in getattr(self, "_values", ())))

    def create_matrix(self) -> PETSc.Mat:
        """The AIJ matrix of exactly the entries the scheme sets, on this pattern's arrays
        (block size ``2K``); its values are filled by :meth:`insert`."""
        mesh = self.mesh
        n, N = self.n, self.N
        chunks = sorted(self.chunks, key=lambda c: c.row0)
        if sum(c.nrow for c in chunks) != n:  # pragma: no cover
            raise RuntimeError("pattern: the chunks do not cover the rank's rows")
        parts = {}
        for part in ("d", "o"):
            counts = np.concatenate([getattr(c, f"{part}_count") for c in chunks])
            ptr = np.zeros(n + 1, dtype=PETSc.IntType)
            np.cumsum(counts, out=ptr[1:])
            cols = np.concatenate([getattr(c, f"{part}_cols") for c in chunks]).astype(PETSc.IntType)
            vals = np.zeros(cols.size, dtype=PETSc.ScalarType)
            start = 0
            for c in chunks:
                m = int(getattr(c, f"{part}_count").sum())
                setattr(c, f"{part}_range", (start, start + m))
                start += m
            parts[part] = (ptr, cols, vals)
        for c in chunks:  # the columns now live in the matrix's arrays only
            c.d_cols = c.o_cols = c.d_count = c.o_count = None
        self._values = (parts["d"][2], parts["o"][2])
        csr = parts["d"] if mesh.comm.getSize() == 1 else (parts["d"], parts["o"])
        A = PETSc.Mat().createAIJWithArrays(size=((n, N), (n, N)), csr=csr, bsize=2 * mesh.d.K, comm=mesh.comm)
        self._arrays = (parts["d"], parts["o"])  # PETSc keeps pointers to these: keep them alive
        A.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        # every rank sets only its own rows: assembly then skips the stash exchange
        A.setOption(PETSc.Mat.Option.NO_OFF_PROC_ENTRIES, True)
        A.setDM(mesh.da)
        self.matrix = A
        return A

    def insert(self, P: PETSc.Mat, chunk: ChunkPattern, VF: np.ndarray) -> None:
        """Put one chunk's field-major slab Jacobian ``VF`` into ``P`` (assemble afterwards):
        gathered into the value arrays when ``P`` is this pattern's matrix, else by
        ``MatSetValuesIJV`` (needs ``ijv=True``)."""
        flat = VF.reshape(-1)
        if self.matrix is not None and P.handle == self.matrix.handle:
            vd, vo = self._values
            _gather(flat, chunk.d_src, vd[chunk.d_range[0]:chunk.d_range[1]])
            _gather(flat, chunk.o_src, vo[chunk.o_range[0]:chunk.o_range[1]])
            return
        if chunk.cols is None:
            raise RuntimeError("pattern: filling another matrix needs JacobianPattern(..., ijv=True)")
        V = np.moveaxis(VF, (0, 1, 2, 3), (-4, -3, -2, -1)).reshape(chunk.nrow, -1)  # row-major copy
        P.setValuesIJV(chunk.rowptr, chunk.cols, V, addv=PETSc.InsertMode.INSERT_VALUES, rowmap=chunk.rows)
