"""The global layout of a state on disk: ``rho``, ``phi`` of shape ``(N+1, K, M_1, .., M_d)``
(``rho[n, c, i_1, .., i_d] = rho^n_{c,i}``), independent of the decomposition. A rank's
owned box of ``Z[n, *i, a]`` maps to one hyperslab of each."""
from __future__ import annotations

import numpy as np

from ..numerics.depth import Slab
from ..numerics.model import Discretisation

__all__ = ["STATE", "global_shape", "selection", "owned_blocks", "fill_owned"]

#: the datasets of a state
STATE = ("rho", "phi")


def global_shape(d: Discretisation) -> tuple[int, ...]:
    return (d.N + 1, d.K) + tuple(d.grid.nodes)


def selection(s: Slab) -> tuple[slice, ...]:
    """The hyperslab of a rank's owned box in the global datasets."""
    return (slice(s.ys, s.ye), slice(None)) + s.global_nodes


def owned_blocks(Zo: np.ndarray, K: int) -> dict[str, np.ndarray]:
    """``Z[n, *i, a]`` -> ``{"rho": [n, c, *i], "phi": [n, c, *i]}`` (contiguous copies)."""
    return {"rho": np.ascontiguousarray(np.moveaxis(Zo[..., :K], -1, 1)),
            "phi": np.ascontiguousarray(np.moveaxis(Zo[..., K:], -1, 1))}


def fill_owned(Z: np.ndarray, rho: np.ndarray, phi: np.ndarray, K: int) -> None:
    """The inverse of :func:`owned_blocks` into a writable owned view ``Z[n, *i, a]``."""
    Z[..., :K] = np.moveaxis(rho, 1, -1)
    Z[..., K:] = np.moveaxis(phi, 1, -1)
