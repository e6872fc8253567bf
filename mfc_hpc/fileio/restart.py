"""Restart and checkpointing: an observer of the driver (:class:`mfc_hpc.drivers.run.Run`).

The :class:`Checkpointer` is told of the run's transitions and writes checkpoints
(:mod:`mfc_hpc.fileio.checkpoint`) at its safe points: every ``k`` Newton iterations, at
the end of every continuation stage and grid level, every ``X`` minutes, and on
SIGTERM/SIGUSR1 (then it raises :class:`CheckpointAndExit`: exit 75, requeue). At every
safe point the ranks agree (one small allreduce) whether a signal arrived or the timer is
due. Before the run starts, :meth:`Checkpointer.restore` loads a checkpoint (``auto``: the
newest that verifies) into the run: the state of the grid level it was written on, each
rank reading only its hyperslab, and the validated :class:`~mfc_hpc.drivers.state.RunState`;
or, with ``interpolate``, a checkpoint of another mesh interpolated onto the finest mesh as
a starting guess.

Writing is atomic: all ranks write ``.ckpt_NNNNNN.h5.tmp`` (:func:`mfc_hpc.fileio.hdf5.write_file`),
the digest sidecar is written, then the file is renamed to ``ckpt_NNNNNN.h5``; only then
are checkpoints beyond the newest ``keep`` deleted. A crash (even kill -9) during a write
leaves at worst a stale temporary file (removed at the next start) and the previous
checkpoints intact.

Test hook (tests only): ``MFC_CHECKPOINT_TEST_SLEEP=SECONDS`` sleeps after the data are
written and before the file is closed and renamed, so a test can kill a run inside the
write window.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from petsc4py import PETSc

from ..config.sections import CheckpointConfig
from ..drivers.run import Run, RunObserver
from ..drivers.state import RunState
from ..errors import EXIT_BAD_INPUT, BadInput
from ..parallel.events import EVENTS
from ..parallel.snes import MeshSolver
from .checkpoint import (FORMAT, FORMAT_VERSION, CheckpointError, _fail, check_sums, find_checkpoints, meta_crc,
                         newest_good, probe_collective, read_collective, state_names, verify)
from .checksum import CHECKSUM, checksum_block, hex64
from .hdf5 import agree, write_file
from .layout import fill_owned, global_shape, owned_blocks, selection
from .solution import axis_datasets
from .summary import json_default, versions

__all__ = ["CheckpointAndExit", "Checkpointer", "problem_of"]

log = logging.getLogger(__name__.split(".")[-1])


class CheckpointAndExit(Exception):
    """A signal asked the run to stop: the checkpoint ``path`` is written; exit 75 (requeue)."""

    def __init__(self, path: Path, signum: int) -> None:
        super().__init__(f"checkpoint {path} written on {signal.Signals(signum).name}")
        self.path, self.signum = path, signum


def problem_of(cfg: dict) -> dict:
    """The parts of a resolved configuration that define the problem (not the solver):
    the domain and depth, the model, the classes, the loss and the data. Per-axis values
    are lists (a 1-D checkpoint's scalars are normalised)."""
    m = cfg.get("mesh", {})

    def lst(v):
        return v if isinstance(v, list) else [v]

    dom = {"x_min": lst(m.get("x_min")), "x_max": lst(m.get("x_max")), "depth": m.get("depth")}
    keep = {"domain": dom, "model": cfg.get("model"), "classes": cfg.get("classes"), "loss": cfg.get("loss"),
            "data": cfg.get("data")}
    return json.loads(json.dumps(keep, default=json_default))


def _first_difference(a: Any, b: Any, key: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{key}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{key} = {a!r} in the checkpoint, {b!r} here"


class Checkpointer(RunObserver):
    """Writes checkpoints at a run's safe points and resumes from one (collective).

    Parameters
    ----------
    comm
        PETSc communicator of the run.
    directory
        Where checkpoints live (created if missing).
    settings
        When to write (:class:`mfc_hpc.config.CheckpointConfig`).
    restart
        ``None`` (fresh start), ``"auto"`` (the newest good checkpoint in ``directory``,
        fresh start if there is none) or a file.
    interpolate
        Accept a checkpoint of another mesh and interpolate it onto the run's finest mesh
        (it seeds Newton there), instead of refusing it.
    """

    def __init__(self, comm: PETSc.Comm, directory: str | Path, settings: CheckpointConfig | None = None,
                 restart: str | Path | None = None, interpolate: bool = False) -> None:
        self.settings = settings or CheckpointConfig()
        self.comm = comm.tompi4py()
        self.directory = Path(directory)
        self.restart, self.interpolate = restart, interpolate
        self.signum = 0
        self.written: list[str] = []
        self.write_times: list[float] = []
        self.restarted_from: str | None = None
        self.restarts = 0
        self.wall_before = 0.0
        self.newton_count = 0
        self.t0 = time.perf_counter()
        self.last_write = time.monotonic()
        self._old_handlers: dict = {}
        err, seq = None, 1
        if self.comm.rank == 0 and (self.settings.enabled or restart):
            try:
                if self.directory.exists() and not self.directory.is_dir():
                    raise NotADirectoryError(20, "exists and is not a directory")
                if self.settings.enabled:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    for p in self.directory.glob(".ckpt_*.h5.tmp*"):  # left by a run killed while writing
                        log.info("removing stale partial checkpoint %s", p.name)
                        p.unlink(missing_ok=True)
                    for p in self.directory.glob("ckpt_*.h5.sum.tmp"):
                        p.unlink(missing_ok=True)
                found = find_checkpoints(self.directory)  # rank 0 lists: the ranks never disagree
                seq = found[0][0] + 1 if found else 1
            except OSError as e:
                err = f"checkpoint directory {self.directory}: {e.strerror or e}"
        err = agree(self.comm, err, code=EXIT_BAD_INPUT)
        if err:
            raise BadInput(err)
        self.seq = self.comm.bcast(seq, root=0)

    # ------------------------------------------------------------------ signals
    def _handler(self, signum, frame) -> None:  # only sets a flag: checked at the next safe point
        self.signum = signum

    def install_signals(self) -> None:
        """SIGTERM and SIGUSR1 set a flag (if ``settings.on_signal``)."""
        if self.settings.on_signal and self.settings.enabled:
            for s in (signal.SIGTERM, signal.SIGUSR1):
                self._old_handlers[s] = signal.signal(s, self._handler)

    def restore_signals(self) -> None:
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers = {}

    # ------------------------------------------------------------------ restart
    def restore(self, run: Run) -> bool:
        self.install_signals()
        path, hdr = self._resolve_restart()
        if path is None:
            return False
        self.restarted_from = str(path)
        r = hdr["resume"]
        levels = [(tuple(n), N) for n, N in run.levels]
        here = problem_of(run.problems[-1].resolved_config())
        diff = _first_difference(problem_of(hdr["config"]), here)
        m = hdr["mesh"]
        ck_mesh = (tuple(m["nodes"]), m["layers"])
        mesh_txt = f"{' x '.join(map(str, ck_mesh[0]))} x {ck_mesh[1]} (nodes x layers) with {m['classes']} classes"
        if m["classes"] != run.problem.K:
            raise _fail(path, f"other problem: {m['classes']} classes in the checkpoint, {run.problem.K} here")
        if m["dim"] != run.problem.ndim:
            raise _fail(path, f"other problem: a {m['dim']}-D state in the checkpoint, {run.problem.ndim}-D here")
        if diff and not self.interpolate:
            raise _fail(path, f"other problem: {diff}")
        if diff:
            log.warning("checkpoint %s is of another problem (%s): using it only as a starting guess", path, diff)
        lev = next((k for k, l in enumerate(levels) if tuple(l) == ck_mesh), None)
        if lev is not None and not diff:
            state = RunState.from_json(r, len(levels), where=f"checkpoint {path}")
            if state.level != lev:
                raise _fail(path, f"damaged resume metadata: level {state.level} but the data are of level {lev}")
            self.restarts = int(r.get("restarts", 0)) + 1 if isinstance(r.get("restarts", 0), int) else 1
            self.wall_before = float(r.get("wall_used", 0.0)) if isinstance(r.get("wall_used"), (int, float)) else 0.0
            self.newton_count = int(r.get("newton_total", 0)) if isinstance(r.get("newton_total"), int) else 0
            ms = run.solvers[lev]
            good = self._load_exact(path, hdr, ms)
            if state.nu is not None:
                ms.with_nu(state.nu)
            if state.loss_weight is not None:
                ms.bd.scale = state.loss_weight
            run.state = state
            if state.cont is not None and state.cont.target_u is not None:
                if good is None:
                    raise _fail(path, "damaged: a continuation cursor inside a Newton solve but no good/ state")
                run.restored_good = good
            elif good is not None:
                good.destroy()
            log.info("restart %d from %s: level %s, phase %s%s", self.restarts, path, mesh_txt, state.phase.value,
                     f", Newton iteration {state.newton.iteration}" if state.newton else "")
            return True
        if not self.interpolate:
            here_txt = " / ".join(f"{' x '.join(map(str, n))} x {N}" for n, N in levels)
            raise _fail(path, f"other mesh: {mesh_txt}, this run has {here_txt}; "
                              f"use --restart-interpolate to interpolate it onto this mesh")
        fine = run.solvers[-1]
        self._load_interpolated(path, hdr, fine)
        run.state = RunState(level=len(levels) - 1)
        run.state.phase = None  # no cursor: a fresh solve on the finest mesh from the seeded X
        log.info("seeding the finest mesh from checkpoint %s (%s), interpolated", path, mesh_txt)
        return True

    def _resolve_restart(self) -> tuple[Path | None, dict | None]:
        if self.restart is None:
            return None, None
        if str(self.restart) == "auto":
            p, hdr = newest_good(self.directory, self.comm, log)
            if p is None:
                log.info("no usable checkpoint in %s: fresh start", self.directory)
            return p, hdr
        hdr = probe_collective(self.restart, self.comm)
        return Path(self.restart), hdr

    def _load_exact(self, path: Path, hdr: dict, ms: MeshSolver) -> PETSc.Vec | None:
        """Each rank reads its own hyperslab of the state (and of ``good``), verifying the
        checksums of all of them together; returns the ``good`` state or ``None``."""
        s, K = ms.mesh.slab, ms.d.K
        shape = global_shape(ms.d)
        start = (s.ys, 0) + tuple(s.xs)
        names = state_names(hdr["has_good"])
        blocks = read_collective(path, self.comm, names, selection(s))
        check_sums(path, hdr, {k: checksum_block(v, shape, start) for k, v in blocks.items()}, self.comm)
        Z = ms.mesh.owned(ms.X, readonly=False)
        fill_owned(Z, blocks["rho"], blocks["phi"], K)
        del Z
        good = None
        if hdr["has_good"]:
            good = ms.X.duplicate()
            Z = ms.mesh.owned(good, readonly=False)
            fill_owned(Z, blocks["good/rho"], blocks["good/phi"], K)
            del Z
        return good

    def _load_interpolated(self, path: Path, hdr: dict, ms: MeshSolver) -> None:
        """Multilinear interpolation in (t, x_1, .., x_d) of the checkpointed state onto
        ``ms``'s mesh; each rank reads only the source box around its own box."""
        verify(path, self.comm, hdr)
        s, d = ms.mesh.slab, ms.d
        src_axes = [np.asarray(a) for a in hdr["axes"]]
        ts_src = np.asarray(hdr["t"])

        def bracket(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            k = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, src.size - 2)
            w = np.clip((dst - src[k]) / (src[k + 1] - src[k]), 0.0, 1.0)
            return k, w

        # positions of the owned nodes/levels in the source mesh (each axis scaled end to end)
        brk = []
        for k in range(d.ndim):
            x = d.grid.axis(k)
            xr = (x[s.xs[k]:s.xe[k]] - x[0]) / (x[-1] - x[0]) * (src_axes[k][-1] - src_axes[k][0]) + src_axes[k][0]
            brk.append(bracket(src_axes[k], xr))
        tr = d.t[s.ys:s.ye] / d.t[-1] * ts_src[-1]
        kt, wt = bracket(ts_src, tr)
        lo = [int(kt.min())] + [int(b[0].min()) for b in brk]
        hi = [int(kt.max()) + 2] + [int(b[0].max()) + 2 for b in brk]
        sel = (slice(lo[0], hi[0]), slice(None)) + tuple(slice(a, b) for a, b in zip(lo[1:], hi[1:]))
        src = read_collective(path, self.comm, list(("rho", "phi")), sel)
        out = {}
        for name, A in src.items():
            # separable: interpolate along depth, then along each state axis
            i0 = kt - lo[0]
            W = wt.reshape((-1,) + (1,) * (A.ndim - 1))
            A = (1 - W) * A[i0] + W * A[i0 + 1]
            for k, (kk, ww) in enumerate(brk):
                ax = 2 + k
                i0 = kk - lo[1 + k]
                shp = [1] * A.ndim
                shp[ax] = -1
                W = ww.reshape(shp)
                A = (1 - W) * np.take(A, i0, axis=ax) + W * np.take(A, i0 + 1, axis=ax)
            out[name] = A
        Z = ms.mesh.owned(ms.X, readonly=False)
        fill_owned(Z, out["rho"], out["phi"], d.K)
        del Z

    # ------------------------------------------------------------------ safe points
    def _poll(self) -> tuple[int, bool]:
        """Collective: the signal (if any rank got one) and whether the timer is due."""
        from mpi4py import MPI

        s = self.settings
        due = s.every_minutes > 0 and time.monotonic() - self.last_write >= 60.0 * s.every_minutes
        v = np.array([self.signum, int(due)], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, v, op=MPI.MAX)
        return int(v[0]), bool(v[1])

    def on_newton(self, run: Run, ms: MeshSolver, first: bool) -> None:
        if not self.settings.enabled:
            return
        if not first:
            self.newton_count += 1
        signum, due = self._poll()
        k = self.settings.every_newton
        periodic = k > 0 and not first and self.newton_count % k == 0
        if signum or due or periodic:
            path = self.write(run, ms, "signal" if signum else ("time" if due else "newton"))
            if signum:  # propagates out of SNESSolve (petsc4py re-raises callback exceptions)
                raise CheckpointAndExit(path, signum)

    def on_safe_point(self, run: Run, ms: MeshSolver, reason: str) -> None:
        if not self.settings.enabled:
            return
        signum, due = self._poll()
        if signum or due or self.settings.at_stage_end:
            path = self.write(run, ms, "signal" if signum else (reason if self.settings.at_stage_end else "time"))
            if signum:
                raise CheckpointAndExit(path, signum)

    # ------------------------------------------------------------------ writing
    def wall_used(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def write(self, run: Run, ms: MeshSolver, reason: str) -> Path:
        """Write checkpoint number ``seq`` of ``ms``'s state atomically (collective)."""
        t = time.perf_counter()
        EVENTS["io"].begin()
        try:
            return self._write(run, ms, reason, t)
        finally:
            EVENTS["io"].end()

    def _write(self, run: Run, ms: MeshSolver, reason: str, t: float) -> Path:
        st = run.state
        resume = st.to_json()
        resume["params"] = {"nu": ms.d.nu, "loss_weight": float(ms.bd.scale)}
        resume.update(newton_total=self.newton_count, wall_used=self.wall_used(), restarts=self.restarts)
        with_good = run.good is not None and st.cont is not None and st.cont.target_u is not None
        d = ms.d
        g = d.grid
        mesh = {"dim": g.ndim, "nodes": list(g.nodes), "layers": d.N, "classes": d.K, "x_min": list(g.lower),
                "x_max": list(g.upper), "depth": float(d.T), "unknowns": ms.X.getSize()}
        cfg = run.problems[run.state.level].resolved_config()
        attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "checksum": CHECKSUM,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "reason": reason, "sequence": self.seq, "ranks": self.comm.size,
                 "process_grid": json.dumps(list(ms.mesh.proc_sizes)), "mesh": json.dumps(mesh),
                 "config": json.dumps(cfg, default=json_default),
                 "resume": json.dumps(resume, default=json_default), "versions": json.dumps(versions())}
        attrs = self.comm.bcast(attrs, root=0)  # identical on all ranks (clocks differ)
        attrs["meta_crc32"] = meta_crc(attrs)
        path = self.directory / f"ckpt_{self.seq:06d}.h5"
        s = ms.mesh.slab
        shape = global_shape(d)
        sel = selection(s)
        start = (s.ys, 0) + tuple(s.xs)
        blocks = {}
        for prefix, X in (("", ms.X),) + ((("good/", run.good),) if with_good else ()):
            for k, v in owned_blocks(ms.mesh.owned(X), d.K).items():
                blocks[prefix + k] = v
        terms = {k: checksum_block(v, shape, start) for k, v in blocks.items()}
        sums = {k: hex64(sum(v)) for k, v in zip(terms, zip(*self.comm.allgather(list(terms.values()))))}
        small = axis_datasets(g, d.t)
        res = np.asarray(st.newton.history if st.newton else [], dtype="f8")
        small["residuals"] = (res, {"checksum": hex64(checksum_block(res, res.shape, (0,))) if res.size else hex64(0)})
        pause = float(os.environ.get("MFC_CHECKPOINT_TEST_SLEEP", "0") or 0)
        write_file(path, self.comm, attrs, small,
                   {k: (shape, sel, v, {"checksum": sums[k]}) for k, v in blocks.items()},
                   before_close=(lambda: time.sleep(pause)) if pause > 0 else None, digest=True)
        if self.comm.rank == 0:
            try:
                for _, old in find_checkpoints(self.directory)[self.settings.keep:]:
                    old.unlink(missing_ok=True)
                    Path(f"{old}.sum").unlink(missing_ok=True)
            except OSError as e:  # the new checkpoint is written: only the clean-up failed
                log.warning("could not delete old checkpoints in %s: %s", self.directory, e.strerror or e)
        self.comm.Barrier()
        self.seq += 1
        self.last_write = time.monotonic()
        self.written.append(path.name)
        self.write_times.append(time.perf_counter() - t)
        log.info("checkpoint %s (%s, phase %s%s) in %.2f s", path.name, reason, st.phase.value if st.phase else "-",
                 f", Newton {st.newton.iteration}" if st.newton else "", time.perf_counter() - t)
        return path

    def summary(self) -> dict:
        """For ``summary.json``: what was written, where the run restarted from, wall time."""
        return {"checkpoint": {"directory": str(self.directory), "written": len(self.written),
                               "last": self.written[-1] if self.written else None,
                               "write_seconds": float(sum(self.write_times)), "restarted_from": self.restarted_from,
                               "restarts": self.restarts, "wall_used_all_runs": self.wall_used()}}

