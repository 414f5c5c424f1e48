"""Pixel windows and square chunks over a raster: the arithmetic every chunked read and write uses.

Apart from :mod:`urbanfusion.pipeline.grid` (which needs pyproj and shapely for its CRS and cell
shapes), so that a raster command (``urbanfusion dehaze``) chunks a file without importing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import rasterio.windows


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: first row and column, height and width."""

    row: int
    col: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    def grow(self, margin: int, within: Window) -> Window:
        """The window grown by ``margin`` pixels on every side, clipped to ``within``."""
        top, left = max(within.row, self.row - margin), max(within.col, self.col - margin)
        bottom = min(within.row + within.height, self.row + self.height + margin)
        right = min(within.col + within.width, self.col + self.width + margin)
        return Window(top, left, bottom - top, right - left)

    def relative_to(self, outer: Window) -> Window:
        """The window in the pixel coordinates of ``outer`` (which contains it)."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)

    def to_rasterio(self) -> rasterio.windows.Window:
        """The same window as rasterio reads and writes it (column first)."""
        return rasterio.windows.Window(self.col, self.row, self.width, self.height)


@dataclass(frozen=True)
class ChunkGrid:
    """Square chunks of ``size`` pixels over a ``height`` x ``width`` raster.

    Chunk ``(r, c)`` starts at pixel ``(r * size, c * size)``; the last row and column of chunks
    are clipped to the raster.
    """

    height: int
    width: int
    size: int

    @property
    def shape(self) -> tuple[int, int]:
        """Number of chunk rows and columns."""
        return -(-self.height // self.size), -(-self.width // self.size)

    @property
    def dask_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The chunk heights and widths, as dask writes an array's chunks."""
        rows, cols = self.shape
        return (
            tuple(self.window(r, 0).height for r in range(rows)),
            tuple(self.window(0, c).width for c in range(cols)),
        )

    def window(self, r: int, c: int) -> Window:
        """The pixels of chunk ``(r, c)``."""
        row, col = r * self.size, c * self.size
        return Window(row, col, min(self.size, self.height - row), min(self.size, self.width - col))

    def span(self, rows: range, cols: range) -> Window:
        """The pixels of a block of chunks."""
        first, last = self.window(rows[0], cols[0]), self.window(rows[-1], cols[-1])
        return Window(
            first.row,
            first.col,
            last.row + last.height - first.row,
            last.col + last.width - first.col,
        )

    def __iter__(self) -> Iterator[tuple[tuple[int, int], Window]]:
        """Every chunk's ``(r, c)`` and window, row by row."""
        rows, cols = self.shape
        for r in range(rows):
            for c in range(cols):
                yield (r, c), self.window(r, c)
