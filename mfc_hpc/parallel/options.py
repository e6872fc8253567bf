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
from typing import Iterator

from petsc4py import PETSc

from ..errors import BadInput

__all__ = ["PREFIX", "level_prefix", "SolverOptions", "user_options", "petsc_error_message"]

#: the package's options prefix
PREFIX = "mfc_"


def level_prefix(level: int | None) -> str:
    """The prefix of the Newton solver of grid-sequencing level ``level`` (``None``: the
    finest mesh, ``mfc_``)."""
    return PREFIX if level is None else f"{PREFIX}level{level}_"


def user_options() -> dict[str, str]:
    """Every option in PETSc's database (name without the dash -> value)."""
    return {k: (v if isinstance(v, str) else str(v)) for k, v in PETSc.Options().getAll().items()}


def petsc_error_message(e: Exception) -> str:
    """One line from a PETSc error (its code and, where petsc4py gives it, the text)."""
    code = getattr(e, "ierr", None)
    txt = str(e).strip().splitlines()
    msg = txt[0] if txt else ""
    return f"PETSc error {code}" + (f": {msg}" if msg and str(code) not in msg else "")


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

    def set_from_options(self, obj) -> None:
        """``obj.setFromOptions()`` with the defaults inserted; a PETSc error (an unknown
        type, a value of the wrong kind) becomes a one-line :class:`~mfc_hpc.errors.BadInput`."""
        with self.inserted():
            try:
                obj.setFromOptions()
            except PETSc.Error as e:
                raise BadInput(f"PETSc options of {self.prefix}*: {petsc_error_message(e)} "
                               f"(check -{self.prefix}... options and -options_file)") from None
