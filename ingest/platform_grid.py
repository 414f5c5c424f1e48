"""A telecom platform's own grid, and how its cells spread onto the analysis grid by area.

Platforms publish counts per cell of their grid (often a lon/lat lattice, so not square in
metres). Each platform cell's count is shared among the analysis cells it overlaps, in
proportion to the overlapping area, which conserves the total; the share of a platform cell
that falls outside the extent is counted as outside. When the two grids coincide the weights
are exactly 1 and nothing is smeared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from urbanfusion.ingest.coords import to_wgs84
from urbanfusion.pipeline.config import PlatformGridConfig
from urbanfusion.pipeline.errors import CRSError, InputFormatError, InputNotFoundError
from urbanfusion.pipeline.grid import CityGrid


@dataclass(frozen=True)
class PlatformGrid:
    """Platform cell ids and the area weights that spread them onto analysis cells."""

    ids: pd.Index  # platform cell ids as strings, in file order
    src: np.ndarray  # platform cell (index into ids) of each overlap
    dst: np.ndarray  # analysis cell (row-major index) of each overlap
    weight: np.ndarray  # share of the platform cell's area in that analysis cell
    n_cells: int

    @property
    def inside_share(self) -> np.ndarray:
        """Share of each platform cell's area inside the analysis grid (rounding clipped)."""
        share = np.bincount(self.src, weights=self.weight, minlength=len(self.ids))
        return np.clip(share, 0.0, 1.0)

    def spread(self, values: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Platform ``(id, 24)`` values to analysis ``(cell, 24)``; observed where any source is."""
        out = np.zeros((self.n_cells, values.shape[1]))
        seen = np.zeros((self.n_cells, values.shape[1]), dtype=bool)
        v = np.where(observed, values, 0.0)
        for h in range(values.shape[1]):
            out[:, h] = np.bincount(
                self.dst, weights=self.weight * v[self.src, h], minlength=self.n_cells
            )
            seen[:, h] = (
                np.bincount(
                    self.dst,
                    weights=observed[self.src, h].astype(np.float64),
                    minlength=self.n_cells,
                )
                > 0
            )
        return out, seen


def _read_polygons(spec: PlatformGridConfig, datum: str) -> gpd.GeoSeries:
    path = Path(spec.path)
    if not path.is_file():
        raise InputNotFoundError(f"signalling.grid.path {path} does not exist; check the path")
    if path.suffix.lower() != ".csv":
        try:
            frame = gpd.read_file(path, layer=spec.layer, engine="pyogrio")
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
            raise InputFormatError(f"{path}: cannot read the grid ({err})") from None
        if spec.id_column not in frame.columns:
            raise InputFormatError(
                f"{path}: no id column '{spec.id_column}' (signalling.grid.id_column); "
                f"found {[c for c in frame.columns if c != 'geometry']}"
            )
        if frame.crs is None:
            raise CRSError(f"{path}: the grid has no CRS; set one (e.g. ogr2ogr -a_srs)")
        return gpd.GeoSeries(
            frame.geometry.values, index=frame[spec.id_column].astype(str), crs=frame.crs
        )

    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        detail = str(err).splitlines()[0]
        raise InputFormatError(f"{path}: cannot read the grid CSV ({detail})") from None
    if spec.bounds is not None:
        needed = [spec.id_column, *spec.bounds]
    elif spec.centre is not None and spec.cell_size:
        needed = [spec.id_column, *spec.centre]
    else:
        raise InputFormatError(
            f"{path}: a CSV grid needs signalling.grid.bounds (4 columns) or signalling.grid."
            "centre (2 columns) with signalling.grid.cell_size"
        )
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputFormatError(
            f"{path}: missing grid column(s) {missing}; expected {needed}, "
            f"found {list(frame.columns)}"
        )
    if spec.bounds is not None:
        x0, y0, x1, y1 = (frame[c].to_numpy(np.float64) for c in spec.bounds)
    else:
        cx, cy = (frame[c].to_numpy(np.float64) for c in spec.centre)  # type: ignore[union-attr]
        half = spec.cell_size / 2  # type: ignore[operator]
        x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
    crs = CRS.from_user_input(spec.crs)
    polygons = shapely.box(x0, y0, x1, y1)
    if crs.is_geographic and datum != "wgs84":
        # The lattice itself is in the shifted datum: move every vertex back to WGS84.
        polygons = shapely.transform(
            shapely.segmentize(polygons, (x1 - x0).max() / 4),
            lambda xy: np.column_stack(to_wgs84(xy[:, 0], xy[:, 1], datum)),
        )
    return gpd.GeoSeries(polygons, index=frame[spec.id_column].astype(str), crs=crs)


def read_platform_grid(spec: PlatformGridConfig, grid: CityGrid, datum: str) -> PlatformGrid:
    """Read a platform grid and compute its area weights onto ``grid``.

    Raises:
        InputNotFoundError, InputFormatError, CRSError: the grid file is missing or unusable.
    """
    polygons = _read_polygons(spec, datum)
    if polygons.index.duplicated().any():
        dup = polygons.index[polygons.index.duplicated()][:3].tolist()
        raise InputFormatError(f"{spec.path}: duplicate grid ids {dup}; ids must be unique")
    # Densify before reprojecting so that lattice edges stay where they are on the ground.
    sizes = np.sqrt(np.maximum(shapely.area(polygons.values), 0))
    dense = shapely.segmentize(polygons.values, np.maximum(sizes / 8, 1e-9))
    projected = gpd.GeoSeries(dense, crs=polygons.crs).to_crs(grid.crs).values
    area = shapely.area(projected)
    cells = grid.cell_polygons()
    src, dst = shapely.STRtree(cells).query(projected, predicate="intersects")
    overlap = shapely.area(shapely.intersection(projected[src], cells[dst]))
    keep = overlap > 0
    weight = np.where(area[src] > 0, overlap / np.maximum(area[src], 1e-12), 0.0)
    return PlatformGrid(
        pd.Index(polygons.index),
        src[keep].astype(np.int64),
        dst[keep].astype(np.int64),
        weight[keep],
        grid.n_cells,
    )
