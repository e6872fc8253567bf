"""Rank-aware logging: one logger per module, lines carry ``rank/size``, and only rank 0
speaks at info level (other ranks report warnings and errors)."""
from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, size: int) -> None:
        super().__init__()
        self.rank, self.size = rank, size

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = f"{self.rank}/{self.size}"
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(level: str | int = "INFO", rank: int | None = None, size: int | None = None) -> None:
    """Configure the root logger of the package for the current MPI rank."""
    if rank is None or size is None:
        from mpi4py import MPI
        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_RankFilter(rank, size))
    handler.setFormatter(logging.Formatter("%(asctime)s %(rank)s %(name)s %(levelname)s :: %(message)s",
                                           "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, level.upper()))
