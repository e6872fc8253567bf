"""The discrete training problem on the distributed mesh: the log-tilts of every layer as
one PETSc Vec, ``J_h`` and its exact adjoint gradient (METHOD.md 4, 8).

**Layout.** A DMDA with the mesh's sizes (the state axes and the ``N + 1`` depth levels)
and ``2d`` fields: at level ``n + 1`` and node ``i``, field ``2k`` is the log-tilt of the
jump ``i -> i + e_k`` of layer ``n`` and field ``2k + 1`` that of the jump back
(:func:`~mfc_hpc.numerics.training.nodal_parts`). Level 0 and the nodes past the last
one along axis ``k`` hold no tilt: they stay 0 (the bounds pin them there). The ranks
split the depth only, so that the density rows of layer ``n`` (level ``n + 1``) and its
tilts sit on the same rank; when the mesh is split the same way (the multigrid default,
or ``solver.process_grid = [1, .., P]``) the ranges are the mesh's and the KKT state goes
into the mesh's Vec without moving, otherwise one natural-order scatter moves it.

**Why a depth split.** With the tilts fixed the forward walk of all layers is one block
lower-bidiagonal system on the depth-time mesh (the density block of the scheme's
Jacobian): diagonal blocks ``W - dt/2 A_n`` (per layer an implicit solve that couples every
node of the layer), sub-diagonal blocks ``-(W + dt/2 A_n)``; the adjoint sweep is its
transpose. Its exact solve is block forward (backward) substitution, causal in depth.
Everything that does not depend on the densities -- the rates, the factorisation of every
``W - dt/2 A_n``, and afterwards the cost, ``q`` and the gradient -- is local to the rank
that owns the layer and runs on all ranks at once. Only the substitutions are a pipeline:
rank ``p`` receives ``rho`` at its first level from rank ``p - 1`` and ``phi`` at its last
level from rank ``p + 1`` (one message of ``K prod M`` values each). Without a running cost
the adjoint sweep does not read the densities (``phi^N = -s G``, ``q`` depends on the tilts
only), so the two pipelines run at the same time in opposite directions: on two ranks
both are busy from start to end. A state split instead would need one distributed solve
per layer and sweep (``2N`` latency-bound collective solves per evaluation).

The formulas are those of :mod:`mfc_hpc.numerics.training` (the serial reference), called
on each rank's chunk of layers: the two give the same numbers up to the order of the
final sums.
"""
from __future__ import annotations

import time

import numpy as np
from petsc4py import PETSc

from ..numerics.grid import BoxGeometry
from ..numerics.model import Discretisation
from ..numerics.terminal import BoundaryData
from ..numerics.training import (LayerStack, TiltLayout, _check_fixed_terminal, _layer_costs, adjoint_source,
                                 adjoint_walk, hashed_uniform, nodal_parts, tilt_gradient, walk)
from .mesh import DepthTimeMesh

__all__ = ["TiltMesh", "Evaluation"]

_FWD, _BWD = 17, 18  # message tags of the two pipelines


def _min():
    from mpi4py import MPI
    return MPI.MIN


def _nan_solve(b: np.ndarray, transpose: bool = False) -> np.ndarray:
    return np.full(np.shape(b), np.nan)


class Evaluation:
    """One evaluation of ``J_h`` at a network: the global cost split (``cost``), the
    smallest density of the walk (``min_density``), whether everything was finite, and
    the rank's owned levels of ``rho`` and ``phi`` (``[n, c, *i]``, for the KKT state)."""

    def __init__(self, cost: dict, min_density: float, finite: bool, rho: np.ndarray, phi: np.ndarray) -> None:
        self.cost, self.min_density, self.finite = cost, min_density, finite
        self.rho, self.phi = rho, phi


class TiltMesh:
    """The log-tilts of a discretisation as a distributed Vec, and ``J_h`` on it.

    Parameters
    ----------
    d, bd
        The discretisation and the fixed-loss boundary data (``phi^N = -s G``).
    mesh
        The depth-time mesh whose decomposition the tilts follow when it splits the depth
        only (its communicator is used); ``None``: a depth split of ``comm`` by PETSc's rule.
    comm
        Communicator when no mesh is given (default ``PETSc.COMM_WORLD``).
    """

    def __init__(self, d: Discretisation, bd: BoundaryData, mesh: DepthTimeMesh | None = None,
                 comm: PETSc.Comm | None = None) -> None:
        _check_fixed_terminal(bd)
        self.d, self.bd, self.mesh = d, bd, mesh
        nd = d.ndim
        full = mesh.comm if mesh is not None else (comm or PETSc.COMM_WORLD)
        self.full = full
        fmpi = full.tompi4py()
        levels = d.N + 1
        # a DMDA needs at least one level per rank: with more ranks than levels the first
        # N + 1 ranks hold the tilts and the others wait (:attr:`active`)
        self.active = fmpi.rank < levels
        P = min(fmpi.size, levels)
        if fmpi.size > levels:
            from mpi4py import MPI

            sub = fmpi.Split(0 if self.active else MPI.UNDEFINED, fmpi.rank)
            comm = PETSc.Comm(sub) if self.active else None
        else:
            comm = full
        if mesh is not None and all(p == 1 for p in mesh.proc_sizes[:nd]):
            ranges = [int(v) for v in mesh.da.getOwnershipRanges()[nd]]
            self.shares_mesh = True
        else:
            ranges = [levels // P + (1 if r < levels % P else 0) for r in range(P)]
            self.shares_mesh = False
        self.ranges = ranges
        self.layout = TiltLayout(d)
        self.geom = BoxGeometry(d.grid, (0,) * nd, d.grid.nodes)
        self.timings = dict.fromkeys(("setup", "forward", "backward", "gradient", "reduce", "evaluations"), 0.0)
        self.da = None
        if not self.active:
            self.ys = self.ye = levels
            self.owned_shape = (0,) + tuple(d.grid.nodes) + (2 * nd,)
            return
        own = tuple((m,) for m in reversed(d.grid.nodes)) + (tuple(ranges),)
        self.da = self._dmda(comm, 2 * nd, own)
        self.mpi = comm.tompi4py()
        r = self.da.getRanges()
        self.ys, self.ye = r[nd]
        rank = self.mpi.rank
        if self.ys != sum(ranges[:rank]):  # the DMDA numbers ranks along depth (x fastest)
            raise RuntimeError("TiltMesh: unexpected rank order of the depth split")
        self.prev = rank - 1 if self.ys > 0 else None
        self.next = rank + 1 if self.ye < levels else None
        self.a, self.b = max(self.ys - 1, 0), self.ye - 1  # the rank's layers a .. b-1
        self.owned_shape = (self.ye - self.ys,) + tuple(d.grid.nodes) + (2 * nd,)

    def _dmda(self, comm, dof: int, own) -> PETSc.DMDA:
        d = self.d
        nd = d.ndim
        sizes = tuple(reversed(d.grid.nodes)) + (d.N + 1,)
        return PETSc.DMDA().create(dim=nd + 1, dof=dof, sizes=sizes, proc_sizes=(1,) * nd + (len(own[-1]),),
                                   boundary_type=(PETSc.DM.BoundaryType.NONE,) * (nd + 1),
                                   stencil_type=PETSc.DMDA.StencilType.BOX, stencil_width=0,
                                   ownership_ranges=own, comm=comm)

    # ------------------------------------------------------------------ vectors
    @property
    def comm(self) -> PETSc.Comm:
        return self.da.getComm()

    @property
    def comm_size(self) -> int:
        """Ranks that hold tilts (``min(P, N + 1)``)."""
        return len(self.ranges)

    def create_vec(self) -> PETSc.Vec | None:
        """A tilt Vec set to 0 (the zero network: ``E = 1``, data only diffused); ``None``
        on a rank that holds no tilts."""
        if not self.active:
            return None
        X = self.da.createGlobalVec()
        X.zeroEntries()
        return X

    def owned(self, X: PETSc.Vec, readonly: bool = True) -> np.ndarray:
        """The rank's levels of ``X`` as ``T[n, *i, 2d]`` (a view when writable)."""
        return X.getArray(readonly=readonly).reshape(self.owned_shape)

    def _layers(self, T: np.ndarray) -> np.ndarray:
        """The owned levels that hold layers (level 0 holds none)."""
        return T[max(self.ys, 1) - self.ys:]

    def used(self) -> np.ndarray:
        """``1`` where the owned slots hold a tilt, ``0`` on the unused ones."""
        U = np.zeros(self.owned_shape)
        for r, l in nodal_parts(self._layers(U), self.d.ndim):
            r[...] = 1.0
            l[...] = 1.0
        return U

    def bounds(self, bound: float) -> tuple[PETSc.Vec, PETSc.Vec]:
        """``|theta| <= bound`` on every tilt; the unused slots pinned at 0."""
        lo, hi = self.da.createGlobalVec(), self.da.createGlobalVec()
        U = self.used().ravel()
        lo.getArray()[:] = -bound * U
        hi.getArray()[:] = bound * U
        return lo, hi

    def perturb(self, X: PETSc.Vec | None, amplitude: float, seed: int = 0) -> None:
        """Add ``amplitude`` times :func:`~mfc_hpc.numerics.training.hashed_uniform` of each
        slot's natural index to the used slots of ``X``: the same network for every rank
        count (the depth split numbers the slots in natural order)."""
        if amplitude == 0.0 or X is None:
            return
        lo, hi = X.getOwnershipRange()
        u = hashed_uniform(np.arange(lo, hi), seed).reshape(self.owned_shape)
        self.owned(X, readonly=False)[...] += amplitude * u * self.used()

    def set_serial(self, X: PETSc.Vec, theta: np.ndarray) -> None:
        """Fill ``X`` from a serial log-tilt array (:class:`TiltLayout`; only the rank's
        levels are read)."""
        T = np.zeros((self.d.N + 1,) + self.owned_shape[1:])
        T[1:] = self.layout.to_nodal(theta)
        self.owned(X, readonly=False)[...] = T[self.ys:self.ye]

    def gather_serial(self, X: PETSc.Vec) -> np.ndarray:
        """The whole log-tilts in the serial layout on every rank (tests, small meshes)."""
        parts = self.mpi.allgather((self.ys, np.array(self.owned(X))))
        T = np.zeros((self.d.N + 1,) + self.owned_shape[1:])
        for ys, b in parts:
            T[ys:ys + b.shape[0]] = b
        return self.layout.from_nodal(T[1:])

    # ------------------------------------------------------------------ J_h
    def evaluate(self, X: PETSc.Vec, G: PETSc.Vec | None = None) -> Evaluation:
        """``J_h`` at the network ``X`` and, into ``G``, its exact gradient (collective).

        The forward walk and the adjoint sweep run over the rank's layers, pipelined along
        depth (module docstring); the cost is one reduction. Seconds per phase accumulate
        in :attr:`timings` (``setup``: rates and factorisations; ``forward``, ``backward``:
        the sweeps including the wait for the neighbour's level; ``gradient``: cost and
        gradient; ``reduce``: the reductions)."""
        with np.errstate(all="ignore"):  # trial networks may overflow: reported, not raised
            return self._evaluate(X, G)

    def _evaluate(self, X: PETSc.Vec, G: PETSc.Vec | None) -> Evaluation:
        from mpi4py import MPI

        d, bd, geom = self.d, self.bd, self.geom
        nd, K = d.ndim, d.K
        sel = (slice(None),) * nd
        tim = self.timings
        t0 = time.perf_counter()
        parts = nodal_parts(self._layers(self.owned(X)), nd)
        stack = LayerStack(parts, geom, d)
        try:
            solvers = stack.solvers()
        except (ValueError, RuntimeError, np.linalg.LinAlgError):  # e.g. an exactly singular layer
            solvers = [_nan_solve] * stack.L  # the pipeline runs on; the result is not finite
        tim["setup"] += time.perf_counter() - t0
        level_shape = (K,) + tuple(d.grid.nodes)
        reqs = []
        rho = phi = mu = None

        def forward():
            nonlocal rho
            t = time.perf_counter()
            if self.prev is None:
                rho_in = np.asarray(bd.rho0, dtype=float)
            else:
                rho_in = np.empty(level_shape)
                self.mpi.Recv(rho_in, source=self.prev, tag=_FWD)
            rho = walk(stack, solvers, rho_in)
            if self.next is not None:
                reqs.append(self.mpi.Isend(np.ascontiguousarray(rho[-1]), dest=self.next, tag=_FWD))
            tim["forward"] += time.perf_counter() - t

        def backward():
            nonlocal phi, mu
            t = time.perf_counter()
            if self.next is None:
                phi_out = np.asarray(bd.terminal(None, sel), dtype=float)  # the fixed loss: -s G
            else:
                phi_out = np.empty(level_shape)
                self.mpi.Recv(phi_out, source=self.next, tag=_BWD)
            q = adjoint_source(rho, parts, d, geom)
            mu, phi = adjoint_walk(stack, solvers, phi_out, q)
            if self.prev is not None:
                reqs.append(self.mpi.Isend(np.ascontiguousarray(phi[0]), dest=self.prev, tag=_BWD))
            tim["backward"] += time.perf_counter() - t

        if not d.running.active and 2 * self.mpi.rank >= self.mpi.size:  # both pipelines at once
            backward()
            forward()
        else:
            forward()
            backward()
        t = time.perf_counter()
        kin, run = _layer_costs(rho, parts, d, geom)
        term = bd.terminal_cost(rho[-1], geom.w, sel) if self.next is None else 0.0
        low = rho if self.prev is None else rho[1:]
        local_min = float(low.min()) if low.size else np.inf
        finite = bool(np.all(np.isfinite(rho)) and np.all(np.isfinite(phi)))
        sums = np.array([d.dt * kin.sum(), d.dt * run.sum(), term])
        if G is not None:
            Ga = self.owned(G, readonly=False)
            Ga[...] = 0.0
            for (r, l), (gr, gl) in zip(nodal_parts(self._layers(Ga), nd), tilt_gradient(rho, mu, parts, d, geom)):
                r[...] = gr
                l[...] = gl
            finite = finite and bool(np.all(np.isfinite(Ga)))
        t1 = time.perf_counter()
        tim["gradient"] += t1 - t
        tot, worst = np.empty(3), np.empty(2)
        self.mpi.Allreduce(sums, tot, op=MPI.SUM)
        self.mpi.Allreduce(np.array([-local_min, 0.0 if finite else 1.0]), worst, op=MPI.MAX)
        MPI.Request.Waitall(reqs)
        tim["reduce"] += time.perf_counter() - t1
        tim["evaluations"] += 1
        cost = {"kinetic": float(tot[0]), "running": float(tot[1]), "terminal": float(tot[2])}
        cost["total"] = cost["kinetic"] + cost["running"] + cost["terminal"]
        k = self.ys - self.a
        return Evaluation(cost, float(-worst[0]), bool(worst[1] == 0.0 and np.isfinite(cost["total"])),
                          rho[k:], phi[k:])

    # ------------------------------------------------------------------ KKT state
    def kkt_state(self, X: PETSc.Vec | None, ms_X: PETSc.Vec, mesh: DepthTimeMesh) -> Evaluation | None:
        """Write the KKT state of the network ``X`` (``rho`` of its walk, ``phi`` its adjoint;
        :func:`~mfc_hpc.numerics.training.kkt_state`) into the mesh Vec ``ms_X`` (collective
        over the mesh's ranks; ``X`` is ``None`` on the ranks that hold no tilts)."""
        e = self.evaluate(X) if self.active else None
        if e is not None:
            Z = np.concatenate([np.moveaxis(e.rho, 1, -1), np.moveaxis(e.phi, 1, -1)], axis=-1)
        else:
            Z = np.zeros((0,))
        s = mesh.slab
        same = self.shares_mesh and (s.ys, s.ye) == (self.ys, self.ye)
        if self.full.tompi4py().allreduce(int(same), op=_min()):
            mesh.owned(ms_X, readonly=False)[...] = Z
            return e
        # the ranks' levels are contiguous ranges of the natural order (C order of
        # Z[n, *i, a], depth slowest): a plain Vec over those ranges, scattered into the
        # mesh's numbering through its application ordering
        V = PETSc.Vec().createMPI((Z.size, PETSc.DECIDE), comm=self.full)
        V.getArray()[:] = Z.ravel()
        lo, hi = V.getOwnershipRange()
        nat = np.arange(lo, hi, dtype=PETSc.IntType)
        to = mesh.da.getAO().app2petsc(nat.copy())
        src, dst = PETSc.IS().createGeneral(nat, comm=self.full), PETSc.IS().createGeneral(to, comm=self.full)
        sc = PETSc.Scatter().create(V, src, ms_X, dst)
        sc.scatter(V, ms_X, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)
        for o in (sc, src, dst, V):
            o.destroy()
        return e

    def destroy(self) -> None:
        if self.da is not None:
            self.da.destroy()
            self.da = None
