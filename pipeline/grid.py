"""The city grid: snapped square cells in a projected CRS, with a pixel grid nested inside.

Cell edges sit on multiples of the cell size counted from the CRS origin, so two runs over
overlapping extents agree on every shared cell. A cell's absolute position is ``(abs_row,
abs_col)`` with ``abs_col = x_left / cell`` and ``abs_row = -y_top / cell`` (rows grow
southwards, like raster rows); ``cell_id`` packs that pair into one int64 and is therefore stable
across runs and extents for the same CRS and cell size.

The pixel grid has ``chip_px`` pixels per cell side, so a band of shape
``(nrows * chip_px, ncols * chip_px)`` reshapes to per-cell chips without any windowing.

Chunked work goes through :class:`~urbanfusion.pipeline.windows.ChunkGrid` and
:class:`~urbanfusion.pipeline.windows.Window`: :meth:`CityGrid.chunks` gives chunks of whole
cells, :meth:`CityGrid.window_transform` the georeferencing of any pixel window, so no caller
does chunk or window arithmetic by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.windows import ChunkGrid, Window

if TYPE_CHECKING:
    import geopandas as gpd

# Offsets that make absolute rows/cols non-negative before packing: 2**27 cells of 1 m cover
# +-134,000 km, well past any projected CRS's domain.
ID_OFFSET = 2**27
ID_SPAN = 2**28
# Cells in a grid above which we refuse to plan (a typo in the extent, not a city).
MAX_CELLS = 50_000_000
# Tolerance for snapping: coordinates within this fraction of a cell of an edge are on it.
_SNAP_EPS = 1e-9


def utm_crs_for(lon: float, lat: float) -> CRS:
    """Return the WGS84 UTM zone CRS containing ``(lon, lat)`` (EPSG:326xx north, 327xx south)."""
    zone = min(math.floor((lon + 180.0) / 6.0) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def cell_ids_for(abs_rows: np.ndarray, abs_cols: np.ndarray) -> np.ndarray:
    """Pack absolute rows and columns into stable int64 cell ids."""
    rows = np.asarray(abs_rows, dtype=np.int64) + ID_OFFSET
    cols = np.asarray(abs_cols, dtype=np.int64) + ID_OFFSET
    return rows * ID_SPAN + cols


def abs_rowcol_of(cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack cell ids into absolute rows and columns (inverse of :func:`cell_ids_for`)."""
    ids = np.asarray(cell_ids, dtype=np.int64)
    return ids // ID_SPAN - ID_OFFSET, ids % ID_SPAN - ID_OFFSET


@dataclass(frozen=True)
class CityGrid:
    """A block of snapped cells in a projected CRS, with its nested pixel grid.

    Attributes:
        crs: projected CRS in metres.
        cell_size: cell side in CRS units (metres).
        chip_px: pixels per cell side.
        row0: absolute row of the top row (``y_top = -row0 * cell_size``).
        col0: absolute column of the left column (``x_left = col0 * cell_size``).
        nrows: number of cell rows.
        ncols: number of cell columns.
    """

    crs: CRS
    cell_size: float
    chip_px: int
    row0: int
    col0: int
    nrows: int
    ncols: int

    @classmethod
    def from_extent(
        cls,
        extent: tuple[float, float, float, float],
        cell_size: float = 250.0,
        chip_px: int = 32,
        crs: CRS | str | None = None,
    ) -> CityGrid:
        """Snap a WGS84 extent ``(min_lon, min_lat, max_lon, max_lat)`` outwards onto cells.

        The CRS defaults to the UTM zone of the extent's centre. The extent's edges are densified
        before projecting, so the grid covers the whole lon/lat box.

        Raises:
            ConfigError: the CRS is not projected or the grid would be absurdly large.
        """
        min_lon, min_lat, max_lon, max_lat = extent
        target = (
            utm_crs_for((min_lon + max_lon) / 2, (min_lat + max_lat) / 2)
            if crs is None
            else CRS.from_user_input(crs)
        )
        if not target.is_projected:
            raise ConfigError(f"grid CRS {target.to_string()} is not projected; use metres")
        to_grid = Transformer.from_crs("EPSG:4326", target, always_xy=True)
        xmin, ymin, xmax, ymax = to_grid.transform_bounds(
            min_lon, min_lat, max_lon, max_lat, densify_pts=21
        )
        return cls.from_bounds((xmin, ymin, xmax, ymax), cell_size, chip_px, target)

    @classmethod
    def from_bounds(
        cls,
        bounds: tuple[float, float, float, float],
        cell_size: float,
        chip_px: int,
        crs: CRS | str,
    ) -> CityGrid:
        """Snap projected bounds ``(xmin, ymin, xmax, ymax)`` outwards onto cells."""
        xmin, ymin, xmax, ymax = bounds
        col0 = math.floor(xmin / cell_size + _SNAP_EPS)
        col1 = math.ceil(xmax / cell_size - _SNAP_EPS)
        top = math.ceil(ymax / cell_size - _SNAP_EPS)
        bottom = math.floor(ymin / cell_size + _SNAP_EPS)
        nrows, ncols = max(top - bottom, 1), max(col1 - col0, 1)
        if nrows * ncols > MAX_CELLS:
            raise ConfigError(
                f"the extent makes {nrows} x {ncols} cells of {cell_size} m, more than "
                f"{MAX_CELLS:,}; check the extent (lon/lat order) or raise grid.cell_size_m"
            )
        return cls(
            CRS.from_user_input(crs), float(cell_size), int(chip_px), -top, col0, nrows, ncols
        )

    # ---- geometry --------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return self.nrows * self.ncols

    @property
    def pixel_size(self) -> float:
        """Pixel side in metres (``cell_size / chip_px``)."""
        return self.cell_size / self.chip_px

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Projected bounds ``(xmin, ymin, xmax, ymax)`` of the whole grid."""
        x0 = self.col0 * self.cell_size
        y1 = -self.row0 * self.cell_size
        return (x0, y1 - self.nrows * self.cell_size, x0 + self.ncols * self.cell_size, y1)

    @property
    def transform(self) -> Affine:
        """Affine transform of the cell raster (one pixel per cell)."""
        x0, _, _, y1 = self.bounds
        return Affine(self.cell_size, 0.0, x0, 0.0, -self.cell_size, y1)

    @property
    def pixel_transform(self) -> Affine:
        """Affine transform of the pixel grid (``chip_px`` pixels per cell side)."""
        x0, _, _, y1 = self.bounds
        return Affine(self.pixel_size, 0.0, x0, 0.0, -self.pixel_size, y1)

    @property
    def pixel_shape(self) -> tuple[int, int]:
        """Shape ``(height, width)`` of the pixel grid."""
        return self.nrows * self.chip_px, self.ncols * self.chip_px

    def chunks(self, target_px: int) -> ChunkGrid:
        """Chunks of the pixel grid about ``target_px`` a side, each a whole number of cells.

        Whole cells per chunk means no cell straddles two chunks, so chips are a reshape.
        """
        size = self.chip_px * max(1, target_px // self.chip_px)
        return ChunkGrid(*self.pixel_shape, size)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of the pixel grid."""
        x0, _, _, y1 = self.bounds
        px = self.pixel_size
        return Affine(px, 0.0, x0 + window.col * px, 0.0, -px, y1 - window.row * px)

    def chunks_touching(self, chunks: ChunkGrid, bounds: tuple[float, ...]) -> tuple[range, range]:
        """Rows and columns of the chunks that projected ``bounds`` overlap (maybe none)."""
        px = self.pixel_size
        gx0, _, _, gy1 = self.bounds
        fx0, fy0, fx1, fy1 = bounds
        rows, cols = chunks.shape
        step = px * chunks.size
        c_first = max(0, int((fx0 - gx0) // step))
        c_last = min(cols - 1, int((fx1 - gx0) // step))
        r_first = max(0, int((gy1 - fy1) // step))
        r_last = min(rows - 1, int((gy1 - fy0) // step))
        return range(r_first, r_last + 1), range(c_first, c_last + 1)

    def pixel_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre coordinates ``(y, x)`` of the pixel rows and columns."""
        x0, _, _, y1 = self.bounds
        h, w = self.pixel_shape
        half = self.pixel_size / 2
        return (
            y1 - half - self.pixel_size * np.arange(h),
            x0 + half + self.pixel_size * np.arange(w),
        )

    # ---- cells -----------------------------------------------------------------------------
    def rowcol(self, rows: range | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Local row and column of every cell (of ``rows`` only), row-major.

        Row-major is the order of all per-cell arrays.
        """
        first, last = (0, self.nrows) if rows is None else (rows.start, rows.stop)
        flat = np.arange(first * self.ncols, last * self.ncols, dtype=np.int64)
        return np.divmod(flat, self.ncols)

    def cell_ids(self, rows: range | None = None) -> np.ndarray:
        """Stable int64 ids of every cell (of ``rows`` only), row-major."""
        r, c = self.rowcol(rows)
        return cell_ids_for(r + self.row0, c + self.col0)

    def cell_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Row-major index of the cell containing each point, or -1 outside the grid.

        Points on a cell's left or top edge belong to that cell.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x0, _, _, y1 = self.bounds
        with np.errstate(invalid="ignore"):
            col = np.floor((x - x0) / self.cell_size)
            row = np.floor((y1 - y) / self.cell_size)
            inside = (col >= 0) & (col < self.ncols) & (row >= 0) & (row < self.nrows)
        idx = np.full(x.shape, -1, dtype=np.int64)
        idx[inside] = row[inside].astype(np.int64) * self.ncols + col[inside].astype(np.int64)
        return idx

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """The centre of every cell (x, y), row-major, in the grid's CRS."""
        rows, cols = self.rowcol()
        x0, _, _, y1 = self.bounds
        return x0 + (cols + 0.5) * self.cell_size, y1 - (rows + 0.5) * self.cell_size

    def cell_polygons(self, rows: range | None = None) -> np.ndarray:
        """Shapely polygons of every cell (of ``rows`` only), row-major."""
        rows_, cols = self.rowcol(rows)
        x0, _, _, y1 = self.bounds
        left = x0 + cols * self.cell_size
        top = y1 - rows_ * self.cell_size
        return shapely.box(left, top - self.cell_size, left + self.cell_size, top)

    def cells(self, rows: range | None = None) -> gpd.GeoDataFrame:
        """Every cell (of ``rows`` only): ``cell_id``, ``row``, ``col`` and polygon, row-major."""
        r, c = self.rowcol(rows)
        import geopandas as gpd  # only tables need it: the dehaze command does not

        return gpd.GeoDataFrame(
            {"cell_id": self.cell_ids(rows), "row": r, "col": c},
            geometry=self.cell_polygons(rows),
            crs=self.crs,
        )

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for the manifest."""
        return {
            "crs": self.crs.to_string(),
            "cell_size_m": self.cell_size,
            "chip_px": self.chip_px,
            "pixel_size_m": self.pixel_size,
            "rows": self.nrows,
            "cols": self.ncols,
            "bounds": list(self.bounds),
            "abs_row0": self.row0,
            "abs_col0": self.col0,
        }
