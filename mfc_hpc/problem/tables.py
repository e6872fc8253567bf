"""Labelled samples from a table: CSV (header row), NPZ or HDF5 (one 1-D array per column),
or a data set shipped with the package (``builtin:NAME``, :data:`SHIPPED`).

A table has a label column and numeric feature columns; :func:`labelled_samples` returns
the features ``X[s, f]`` and integer labels ``y[s]``. Every defect (missing column,
non-numeric value, duplicated header, too few samples per class) is a one-line
:class:`~mfc_hpc.errors.ConfigError` naming the file and the column.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config.sections import SHIPPED, SYNTHETIC, resolve_data_path
from ..errors import ConfigError

__all__ = ["SHIPPED", "SYNTHETIC", "resolve_data_path", "table_columns", "read_table", "Samples", "labelled_samples",
           "MAX_TABLE_BYTES"]

#: a table larger than this is refused unread
MAX_TABLE_BYTES = 1 << 30


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a table: CSV (header row), NPZ or HDF5 (one 1-D array per column).

    Values stay as read (strings for CSV); :func:`labelled_samples` converts them.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data: no such file: {path}")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise ConfigError(f"data: {path} is larger than {MAX_TABLE_BYTES} bytes")
    suf = path.suffix.lower()
    try:
        if suf == ".npz":
            with np.load(path, allow_pickle=False) as f:
                cols = {k: np.asarray(f[k]) for k in f.files}
        elif suf in (".h5", ".hdf5"):
            import h5py
            with h5py.File(path, "r") as f:
                cols = {k: np.asarray(f[k][()]) for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        else:
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
            if not rows:
                raise ConfigError(f"data: {path} is empty")
            header = [h.strip() for h in rows[0]]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise ConfigError(f"data: {path}: column {dup[0]!r} appears twice in the header")
            if any(not h for h in header):
                raise ConfigError(f"data: {path}: the header has an empty column name "
                                  f"(column {header.index('') + 1})")
            for k, r in enumerate(rows[1:], start=2):
                if len(r) != len(header):
                    raise ConfigError(f"data: {path} line {k}: expected {len(header)} fields, got {len(r)}")
            body = np.array([[c.strip() for c in r] for r in rows[1:]], dtype=str).reshape(-1, len(header))
            cols = {h: body[:, j] for j, h in enumerate(header)}
    except ConfigError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, EOFError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"data: cannot read {path}: {msg}") from None
    except Exception as e:  # noqa: BLE001 - zip/npz internals raise assorted errors on damaged files
        raise ConfigError(f"data: cannot read {path}: damaged file ({type(e).__name__})") from None
    if not cols:
        raise ConfigError(f"data: {path} holds no columns")
    for k, v in cols.items():
        if v.ndim != 1:
            raise ConfigError(f"data: column {k!r} of {path} must be 1-D, got shape {v.shape}")
    n = {v.shape[0] for v in cols.values()}
    if len(n) > 1:
        raise ConfigError(f"data: the columns of {path} have different lengths {sorted(n)}")
    return cols


def _numeric(name: str, v: np.ndarray, path: Path) -> np.ndarray:
    if v.dtype.kind in "biuf":
        a = v.astype(float)
    else:
        s = np.char.decode(v) if v.dtype.kind == "S" else v.astype(str)
        try:
            a = np.array([float(x) if x != "" else math.nan for x in s], dtype=float)
        except ValueError:
            bad = next(x for x in s if not _isfloat(x))
            raise ConfigError(f"data: column {name!r} of {path} is not numeric (value {bad!r})") from None
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ConfigError(f"data: column {name!r} of {path} has a missing or non-finite value "
                          f"in sample {bad[0] + 1} ({bad.size} in all)")
    big = np.flatnonzero(np.abs(a) > 1e150)
    if big.size:
        raise ConfigError(f"data: column {name!r} of {path} has a value of magnitude {abs(a[big[0]]):.3g} "
                          f"in sample {big[0] + 1} (beyond 1e150)")
    return a


def _isfloat(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _labels(v: np.ndarray) -> np.ndarray:
    if v.dtype.kind == "S":
        return np.char.decode(v)
    if v.dtype.kind == "f" and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
        v = v.astype(np.int64)
    return v.astype(str)


@dataclass(frozen=True)
class Samples:
    """Labelled samples: features ``X[s, f]``, labels ``y[s]`` in ``0..K-1``."""

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def K(self) -> int:
        return len(self.class_names)


def table_columns(file: str, base: Path | str = ".", seed: int = 0) -> tuple[dict[str, np.ndarray], Path]:
    """The columns of ``data.file`` (a shipped, synthetic or user table) and its path."""
    if file.startswith("builtin:") and file.split(":", 1)[1] in SYNTHETIC:
        from .synthetic import make_table
        return make_table(file.split(":", 1)[1]), Path(file)
    path = resolve_data_path(file, base)
    return read_table(path), path


def labelled_samples(path: str | Path, label: str, features: tuple[str, ...] = (),
                     classes: tuple[str, ...] = (), min_per_class: int = 2,
                     cols: dict[str, np.ndarray] | None = None) -> Samples:
    """Features and integer labels of a table; ``classes`` selects and orders the labels."""
    path = Path(path)
    cols = read_table(path) if cols is None else cols
    if label not in cols:
        raise ConfigError(f"data.label: no column {label!r} in {path} (columns: {', '.join(cols)})")
    feats = tuple(features) or tuple(k for k in cols if k != label)
    if not feats:
        raise ConfigError(f"data.columns: {path} has no feature column besides {label!r}")
    for f in feats:
        if f not in cols:
            raise ConfigError(f"data.columns: no column {f!r} in {path} (columns: {', '.join(cols)})")
        if f == label:
            raise ConfigError(f"data.columns: {f!r} is the label column")
    lab = _labels(cols[label])
    if lab.size == 0:
        raise ConfigError(f"data: {path} has a header but no samples")
    if np.any(np.char.strip(lab) == ""):
        k = int(np.flatnonzero(np.char.strip(lab) == "")[0])
        raise ConfigError(f"data: column {label!r} of {path} has a missing label in sample {k + 1}")
    names = tuple(classes) or tuple(dict.fromkeys(lab.tolist()))
    keep = np.isin(lab, names)
    X = np.column_stack([_numeric(f, cols[f][keep], path) for f in feats])
    lab = lab[keep]
    y = np.full(lab.shape, -1)
    for c, n in enumerate(names):
        y[lab == n] = c
    counts = np.bincount(y, minlength=len(names))
    for n, m in zip(names, counts):
        if m == 0:
            raise ConfigError(f"data.classes: class {n!r} has no samples in {path}")
        if m < min_per_class:
            raise ConfigError(f"data: class {n!r} of {path} has {m} sample(s); at least {min_per_class} needed")
    if len(names) < 2:
        raise ConfigError(f"data: {path} has {len(names)} class(es) in column {label!r}; at least two needed")
    return Samples(X, y, names, feats)
