"""Checksums that partition: every rank hashes its own block, one reduction combines them.

``mix64-sum-v1``: the float64 words ``w_j`` of an array, ``j`` the flat index in the
*global* C-ordered array, give ``sum_j w_j * (splitmix64(j) | 1) mod 2^64``. The sum is
additive over any partition of the array, so no rank holds the whole array and the value
does not depend on the decomposition. Every single-bit error is detected (the multiplier
is odd), and a moved or swapped value changes the sum. It guards against storage
corruption, not against an adversary.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CHECKSUM", "checksum_block", "hex64", "MASK"]

CHECKSUM = "mix64-sum-v1"
MASK = (1 << 64) - 1


def _mix64(j: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of the indices ``j`` (uint64), forced odd."""
    z = j + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) | np.uint64(1)


def checksum_block(block: np.ndarray, shape: tuple[int, ...], start: tuple[int, ...],
                   rows_per_chunk: int | None = None) -> int:
    """This block's term of the ``mix64-sum-v1`` checksum of a global float64 array.

    ``block`` is the part of the global array of ``shape`` that starts at ``start`` (one
    corner, any extent); the checksum of the array is the sum of the terms of blocks that
    partition it, mod 2^64. Vectorised, in chunks of leading-axis rows.
    """
    block = np.asarray(block, dtype="<f8")
    if block.size == 0:
        return 0
    strides = np.cumprod((1,) + tuple(shape[::-1]))[:-1][::-1].astype(np.uint64)
    row = int(np.prod(block.shape[1:], dtype=np.int64)) or 1
    step = rows_per_chunk or max(1, (1 << 20) // row)
    tail = [np.arange(st, st + n, dtype=np.uint64) * s
            for st, n, s in zip(start[1:], block.shape[1:], strides[1:])]
    off = np.zeros((1,) * len(tail), dtype=np.uint64)
    for k, a in enumerate(tail):  # offsets of a leading-axis row, broadcast over the tail axes
        off = off + a.reshape((1,) * k + (-1,) + (1,) * (len(tail) - k - 1))
    total = 0
    with np.errstate(over="ignore"):
        for r0 in range(0, block.shape[0], step):
            part = np.ascontiguousarray(block[r0:r0 + step]).view("<u8")
            lead = np.arange(start[0] + r0, start[0] + r0 + part.shape[0], dtype=np.uint64) * strides[0]
            j = lead.reshape((-1,) + (1,) * len(tail)) + off[None]
            total = (total + int((part * _mix64(j)).sum(dtype=np.uint64))) & MASK
    return total


def hex64(v: int) -> str:
    return f"{v & MASK:016x}"
