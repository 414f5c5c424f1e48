"""Partitions of a grid: rectangles of whole cells that cover it, each small enough for a worker.

A partition's sides are multiples of the cells in an imagery chunk where the grid allows, so a
chunk never straddles two partitions. Pure arithmetic on rows and columns of cells.
"""

from __future__ import annotations

import math
from typing import NamedTuple


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
