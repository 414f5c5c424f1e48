"""Partitions of a grid: rectangles of whole cells that cover it, each small enough for a worker.

A partition's sides are multiples of the cells in an imagery chunk where the grid allows, so a
chunk never straddles two partitions. Pure arithmetic on rows and columns of cells.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Partition(NamedTuple):
    """A rectangle of cells: its first row and column in the grid, and its size."""

    row: int
    col: int
    nrows: int
    ncols: int

    @property
    def n_cells(self) -> int:
        """Cells in the partition."""
        return self.nrows * self.ncols

    @property
    def rows(self) -> slice:
        """The partition's rows of the grid."""
        return slice(self.row, self.row + self.nrows)

    @property
    def cols(self) -> slice:
        """The partition's columns of the grid."""
        return slice(self.col, self.col + self.ncols)

    def cells(self, grid_ncols: int) -> np.ndarray:
        """Row-major indexes, in a grid ``grid_ncols`` wide, of the partition's cells (int64).

        In the partition's own row-major order: per-cell arrays of a partition go to these.
        """
        rows = np.arange(self.row, self.row + self.nrows, dtype=np.int64)
        return (rows[:, None] * grid_ncols + np.arange(self.col, self.col + self.ncols)).ravel()


def partition_grid(nrows: int, ncols: int, max_cells: int, align: int = 1) -> list[Partition]:
    """Squares of at most ``max_cells`` cells covering a ``nrows`` x ``ncols`` grid, row-major.

    Their side is the largest multiple of ``align`` (cells per imagery chunk) whose square fits,
    or the largest side that fits when even ``align`` is too large; those at the grid's right
    and bottom edges are cut to it. One partition when the whole grid fits.

    Raises:
        ValueError: ``max_cells`` or ``align`` is below 1.
    """
    if max_cells < 1 or align < 1:
        raise ValueError(f"max_cells {max_cells} and align {align} must be at least 1")
    if nrows * ncols <= max_cells:
        return [Partition(0, 0, nrows, ncols)]
    side = math.isqrt(max_cells)
    if side >= align:
        side -= side % align
    return [
        Partition(r, c, min(side, nrows - r), min(side, ncols - c))
        for r in range(0, nrows, side)
        for c in range(0, ncols, side)
    ]
