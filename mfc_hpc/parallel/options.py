"""PETSc options owned per solver object (after petsctools' ``options.py``).

Every solver has its own prefix: ``mfc_`` for the Newton solve of the finest mesh,
``mfc_level{L}_`` for the coarse meshes of grid sequencing (``L = 1`` the coarsest), and one
per auxiliary solve (``mfc_walk_``, ``mfc_tao_``). A :class:`SolverOptions` holds the
package's defaults for its prefix and inserts them into PETSc's options database *only
while that solver reads options or solves* (:meth:`SolverOptions.inserted`), removing them
afterwards, so defaults never leak from one solver into another and whatever the user
gave wins. Options a user gives under the parent prefix ``mfc_`` apply to every level
(copied under the level's prefix for the duration, unless the level has its own);
``-mfc_level2_ksp_type gmres`` changes one level only. PETSc's ``-options_left`` (set by
the command line whenever PETSc options are given) reports options nobody used.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

from petsc4py import PETSc

from ..errors import BadInput

__all__ = ["PREFIX", "level_prefix", "SolverOptions", "user_options", "petsc_error_message", "check_user_options",
           "PETSC_ERRORS"]

#: the package's options prefix
PREFIX = "mfc_"


def level_prefix(level: int | None) -> str:
    """The prefix of the Newton solver of grid-sequencing level ``level`` (``None``: the
    finest mesh, ``mfc_``)."""
    return PREFIX if level is None else f"{PREFIX}level{level}_"


def user_options() -> dict[str, str]:
    """Every option in PETSc's database (name without the dash -> value)."""
    return {k: (v if isinstance(v, str) else str(v)) for k, v in PETSc.Options().getAll().items()}


#: PETSc error codes (petscerror.h) a user's options can cause, and what they mean
PETSC_ERRORS = {55: "out of memory", 56: "not supported", 62: "wrong argument", 63: "argument out of range or "
                "not a number", 65: "cannot open a file", 66: "cannot read a file", 75: "incompatible arguments",
                73: "object in the wrong state", 76: "error in an external library", 77: "error in PETSc",
                86: "unknown type", 92: "no such factorisation package", 95: "bad user input"}


def petsc_error_message(e: Exception) -> str:
    """One line from a PETSc error (its code, what the code means and, where petsc4py
    gives it, the text)."""
    code = getattr(e, "ierr", None)
    txt = str(e).strip().splitlines()
    msg = txt[0] if txt else ""
    out = f"PETSc error {code}" + (f" ({PETSC_ERRORS[code]})" if code in PETSC_ERRORS else "")
    return out + (f": {msg}" if msg and str(code) not in msg else "")


# ---------------------------------------------------------------------------- checking user options
_LINESEARCH = ("basic", "bt", "l2", "cp", "nleqerr", "shell", "none")


def _types(cls) -> tuple[str, ...]:
    return tuple(sorted(getattr(cls, k) for k in dir(cls) if not k.startswith("_")
                        and isinstance(getattr(cls, k), str)))


def _solver_types() -> tuple[str, ...]:
    return _types(PETSc.Mat.SolverType)


#: options (below any ``mfc_*`` prefix, matched at the end of the name) whose value is
#: checked before any solver reads it: integers with their least value, reals with their
#: range ``(lo, hi, hi_open)``, and types
_INTS = {"snes_max_it": 1, "snes_max_funcs": 1, "snes_max_fail": 0, "snes_max_linear_solve_fail": 0,
         "snes_linesearch_max_it": 1, "ksp_max_it": 1, "ksp_gmres_restart": 1, "pc_mg_levels": 1,
         "da_processors_x": 1, "da_processors_y": 1, "da_processors_z": 1, "pc_factor_levels": 0,
         "ksp_chebyshev_esteig_steps": 1, "mg_levels_ksp_max_it": 1}
_REALS = {"snes_rtol": (0.0, 1.0, True), "snes_atol": (0.0, math.inf, False), "snes_stol": (0.0, 1.0, True),
          "snes_divergence_tolerance": (-1.0, math.inf, False), "ksp_rtol": (0.0, 1.0, True),
          "ksp_atol": (0.0, math.inf, False), "ksp_divtol": (0.0, math.inf, False),
          "snes_linesearch_damping": (0.0, math.inf, False), "snes_linesearch_maxstep": (0.0, math.inf, False),
          "snes_linesearch_minlambda": (0.0, 1.0, False), "pc_factor_shift_amount": (0.0, math.inf, False)}
_TYPE_KEYS: dict[str, Callable[[], tuple[str, ...]]] = {
    "pc_factor_mat_solver_type": _solver_types,
    "snes_linesearch_type": lambda: _LINESEARCH,
    "snes_type": lambda: _types(PETSc.SNES.Type),
    "ksp_type": lambda: _types(PETSc.KSP.Type),
    "pc_type": lambda: _types(PETSc.PC.Type),
}
#: DMDA options that would change the mesh the configuration fixes (refused)
_DA_FIXED = ("da_grid_x", "da_grid_y", "da_grid_z", "da_refine", "da_refine_x", "da_refine_y", "da_refine_z",
             "da_refine_hierarchy_x", "da_refine_hierarchy_y", "da_refine_hierarchy_z", "da_stencil_type",
             "da_stencil_width", "da_overlap", "da_bd_x", "da_bd_y", "da_bd_z", "da_dof", "da_coarsen")


def _key(name: str, keys) -> str | None:
    """The longest of ``keys`` that ``name`` ends with (after an underscore)."""
    for k in sorted(keys, key=len, reverse=True):
        if name == k or name.endswith("_" + k):
            return k
    return None


def check_user_options(prefix: str = PREFIX) -> None:
    """Check the values of the user's PETSc options below ``prefix`` before any solver
    reads them: integers and reals parse (PETSc's own parser) and lie in range, types
    exist (a factorisation package must also be built into this PETSc), and DMDA options
    that would change the mesh fixed by the configuration are refused. Raises a
    :class:`~mfc_hpc.errors.BadInput` naming the option and its value."""
    opts = PETSc.Options()
    for name, value in user_options().items():
        if not name.startswith(prefix):
            continue
        shown = f"-{name}" + ("" if value in (None, "None") else f" {value}")
        k = _key(name, _DA_FIXED)
        if k is not None:
            raise BadInput(f"PETSc option {shown}: the mesh is fixed by the configuration ([mesh] nodes, layers); "
                           f"-*{k} would change it")
        k = _key(name, _INTS)
        if k is not None:
            try:
                v = opts.getInt(name)
            except (PETSc.Error, KeyError, TypeError, ValueError):
                raise BadInput(f"PETSc option {shown}: not an integer") from None
            if v < _INTS[k]:
                raise BadInput(f"PETSc option {shown}: must be an integer >= {_INTS[k]}")
            continue
        k = _key(name, _REALS)
        if k is not None:
            lo, hi, hi_open = _REALS[k]
            try:
                v = opts.getReal(name)
            except (PETSc.Error, KeyError, TypeError, ValueError):
                raise BadInput(f"PETSc option {shown}: not a number") from None
            if not (math.isfinite(v) and v >= lo and (v < hi if hi_open else v <= hi)):
                rng = f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi) else f">= {lo:g}"
                raise BadInput(f"PETSc option {shown}: must be a finite number {rng}")
            continue
        k = _key(name, _TYPE_KEYS)
        if k is not None:
            if value in (None, "None", ""):
                raise BadInput(f"PETSc option -{name}: needs a value (one of {', '.join(_TYPE_KEYS[k]())})")
            known = _TYPE_KEYS[k]()
            if value not in known:
                raise BadInput(f"PETSc option {shown}: unknown type (known: {', '.join(known)})")
            if k == "pc_factor_mat_solver_type" and value != "petsc" and not PETSc.Sys.hasExternalPackage(value):
                raise BadInput(f"PETSc option {shown}: this PETSc is built without {value}")


class SolverOptions:
    """The options of one solver: its ``prefix``, the package's ``defaults`` (option names
    below the prefix -> values) and an optional ``parent`` prefix whose user options it
    inherits."""

    def __init__(self, prefix: str, defaults: dict[str, str] | None = None, parent: str | None = None) -> None:
        self.prefix = prefix
        self.defaults = dict(defaults or {})
        self.parent = parent if parent != prefix else None
        self._depth = 0
        self._inserted: list[str] = []

    def set_defaults(self, defaults: dict[str, str]) -> None:
        """Replace the defaults; inside :meth:`inserted` the database changes at once."""
        if not self._depth:
            self.defaults = dict(defaults)
            return
        opts = PETSc.Options()
        for full in self._inserted:
            opts.delValue(full)
        self.defaults = dict(defaults)
        self._inserted = self._insert(opts)

    def _insert(self, opts) -> list[str]:
        added = []
        if self.parent is not None:
            plen = len(self.parent)
            for name, value in user_options().items():
                if name.startswith(self.parent) and not name.startswith(f"{PREFIX}level"):
                    full = f"{self.prefix}{name[plen:]}"
                    if not opts.hasName(full):
                        opts.setValue(full, value)
                        added.append(full)
        for key, value in self.defaults.items():
            full = f"{self.prefix}{key}"
            if not opts.hasName(full):
                opts.setValue(full, value)
                added.append(full)
        return added

    def has_user(self, key: str) -> bool:
        """Whether the user set ``key`` for this solver (under its prefix or the parent's)."""
        opts = PETSc.Options()
        if self._depth and f"{self.prefix}{key}" in self._inserted:
            return self.parent is not None and opts.hasName(f"{self.parent}{key}")
        return opts.hasName(f"{self.prefix}{key}") or (self.parent is not None and opts.hasName(f"{self.parent}{key}"))

    @contextlib.contextmanager
    def inserted(self) -> Iterator[None]:
        """Insert the defaults (and the parent's user options) that are not already set;
        remove exactly those afterwards. Re-entrant."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        opts = PETSc.Options()
        self._inserted, self._depth = self._insert(opts), 1
        try:
            yield
        finally:
            self._depth = 0
            for full in self._inserted:
                opts.delValue(full)
            self._inserted = []

    def set_from_options(self, obj, fresh: Callable[[], object] | None = None) -> None:
        """``obj.setFromOptions()`` with the defaults inserted; a PETSc error (an unknown
        type, a value of the wrong kind) becomes a one-line :class:`~mfc_hpc.errors.BadInput`
        naming the option: with ``fresh`` (a factory of an equivalent new object) each of
        the user's options of this solver is left out in turn until ``setFromOptions``
        succeeds on a fresh object; that option is the culprit."""
        with self.inserted():
            try:
                obj.setFromOptions()
            except PETSc.Error as e:
                raise BadInput(self._culprit(e, fresh)) from None

    def _culprit(self, e: Exception, fresh: Callable[[], object] | None) -> str:
        mine = [n for n in user_options() if n.startswith(self.prefix)
                or (self.parent is not None and n.startswith(self.parent) and not n.startswith(f"{PREFIX}level"))]
        base = f"PETSc options of {self.prefix}*: {petsc_error_message(e)}"
        if fresh is None or not mine:
            given = " ".join(f"-{n}" for n in mine)
            return base + (f" (options given: {given})" if given else " (check -options_file)")
        opts = PETSc.Options()
        given = user_options()
        for name in mine:
            value = given.get(name)
            opts.delValue(name)
            ok = False
            try:
                with self.inserted():
                    o = fresh()
                    try:
                        o.setFromOptions()
                        ok = True
                    except PETSc.Error:
                        pass
                    finally:
                        o.destroy()
            finally:
                opts.setValue(name, value)
            if ok:
                shown = f"-{name}" + (f" {value}" if value not in (None, "") else "")
                return f"PETSc option {shown}: PETSc refuses it ({petsc_error_message(e)})"
        return base + " (options given: " + " ".join(f"-{n}" for n in mine) + ")"
