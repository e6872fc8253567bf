"""Typed validators of configuration values: each returns the value or raises a
:class:`~mfc_hpc.errors.ConfigError` whose one-line message names the key."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["num", "integer", "string", "boolean", "nums", "vector", "table", "data_file", "matrix",
           "covariance", "MAX_INT", "MAX_ABS"]

#: the largest count a mesh may have along one axis or in depth (PETSc's 32-bit index
#: space is 2^31 - 1 unknowns in all; the product is checked where the mesh is known)
MAX_INT = 2 ** 31 - 1
#: magnitudes beyond this are refused (they overflow ``exp`` and the squares of the scheme)
MAX_ABS = 1e150


def num(key: str, v: Any, *, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {v!r}")
    try:
        v = float(v)
    except OverflowError:
        raise ConfigError(f"{key}: must be a number of magnitude below {MAX_ABS:g}, got {v!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be finite, got {v!r}")
    if abs(v) > MAX_ABS:
        raise ConfigError(f"{key}: must be of magnitude below {MAX_ABS:g}, got {v:g}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(f"{key}: must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ConfigError(f"{key}: must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def integer(key: str, v: Any, *, lo: int | None = None, hi: int = MAX_INT) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: must be an integer >= {lo}, got {v}")
    if v > hi:
        raise ConfigError(f"{key}: must be an integer <= {hi}, got {v}")
    return v


def string(key: str, v: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{key}: must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {v!r}")
    return v


def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: must be true or false, got {v!r}")
    return v


def nums(key: str, v: Any, **kw) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key}: must be a list of numbers, got {v!r}")
    return tuple(num(f"{key}[{i}]", x, **kw) for i, x in enumerate(v))


def vector(key: str, v: Any, n: int, **kw) -> tuple[float, ...]:
    """A number (``n = 1``) or a list of ``n`` numbers."""
    if isinstance(v, (list, tuple)):
        out = nums(key, v, **kw)
        if len(out) != n:
            raise ConfigError(f"{key}: needs {n} entr{'y' if n == 1 else 'ies'} (one per state axis), got {len(out)}")
        return out
    if n != 1:
        raise ConfigError(f"{key}: needs a list of {n} numbers (one per state axis), got {v!r}")
    return (num(key, v, **kw),)


def matrix(key: str, v: Any, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
    """A ``rows x cols`` list of lists of numbers (``cols = 1``: a list of numbers also)."""
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{key}: must be a list of {rows} rows, got {v!r}")
    if len(v) != rows:
        raise ConfigError(f"{key}: needs {rows} rows, got {len(v)}")
    out = []
    for i, r in enumerate(v):
        if cols == 1 and not isinstance(r, (list, tuple)):
            out.append((num(f"{key}[{i}]", r),))
        else:
            out.append(vector(f"{key}[{i}]", r, cols))
    return tuple(out)


def covariance(key: str, v: Any, n: int) -> np.ndarray:
    """``var`` of a Gaussian: a number (isotropic), a list of ``n`` variances (per axis) or
    an ``n x n`` symmetric positive-definite covariance matrix."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(r, (list, tuple)) for r in v):
        C = np.array(matrix(key, v, n, n))
        if not np.allclose(C, C.T, rtol=1e-12, atol=1e-300):
            raise ConfigError(f"{key}: the covariance matrix must be symmetric, got {C.tolist()}")
        ev = np.linalg.eigvalsh(C)
        if ev.min() <= 0:
            raise ConfigError(f"{key}: the covariance matrix must be positive definite "
                              f"(smallest eigenvalue {ev.min():.3g})")
        return C
    if isinstance(v, (list, tuple)):
        return np.diag(vector(key, v, n, lo=0.0, lo_open=True))
    return num(key, v, lo=0.0, lo_open=True) * np.eye(n)


def table(key: str, v: Any, allowed: set[str]) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: must be a table, got {v!r}")
    for k in v:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return v


def data_file(key: str, v: Any, base: Path) -> str:
    """An existing file named by ``key`` (relative paths: to the configuration's folder)."""
    p = Path(string(key, v))
    if not str(p).strip():
        raise ConfigError(f"{key}: must name a file, got an empty string")
    path = p if p.is_absolute() else base / p
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    return str(path)
