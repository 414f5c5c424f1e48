"""An extent given as an area: one feature of a vector file, in WGS84 and on a grid.

A city's administrative boundary arrives as a GeoPackage or GeoJSON layer; the run's grid
covers the feature's bounding box, and the cells whose centre lies inside the feature are the
ones a run computes and predicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyogrio
import shapely
import shapely.ops
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from urbanfusion.pipeline.config import ExtentArea
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError
from urbanfusion.pipeline.grid import CityGrid

_POLYGONS = ("Polygon", "MultiPolygon")


class Area(NamedTuple):
    """The feature's geometry in WGS84 and its bounding box (min lon, min lat, max lon, max lat)."""

    geometry: BaseGeometry
    bbox: tuple[float, float, float, float]


def read_area(path: Path, area: ExtentArea) -> Area:
    """The feature of ``area`` in ``path`` (the config's ``extent.path``, resolved).

    Raises:
        InputNotFoundError: the file does not exist.
        InputFormatError: it is not a vector file, lacks the layer or field, has no feature
            (or several) with the value, or the feature is not a polygon or has no CRS.
    """
    where = f"extent {area.describe()}"
    if not path.is_file():
        raise InputNotFoundError(f"{where}: {path} does not exist; check extent.path")
    try:
        table = pyogrio.read_dataframe(path, layer=area.layer, columns=[area.field])
    except (DataSourceError, DataLayerError) as err:
        first = str(err).splitlines()[0]
        raise InputFormatError(
            f"{where}: cannot read it ({first}); give a GeoPackage or GeoJSON and its layer"
        ) from None
    if area.field not in table.columns:  # pyogrio leaves out a column the layer lacks
        names = [c for c in table.columns if c != "geometry"]
        raise InputFormatError(f"{where}: no field {area.field!r} (fields: {names})")
    found = table[table[area.field].astype(str) == str(area.value)]
    if len(found) != 1:
        some = sorted(map(str, table[area.field].dropna().unique()))[:5]
        how = "no feature" if found.empty else f"{len(found)} features"
        raise InputFormatError(
            f"{where}: {how} with that value (values like {some}); give a value one feature has"
        )
    if table.crs is None:
        raise InputFormatError(f"{where}: the layer has no CRS; save it with one (e.g. EPSG:4326)")
    geometry = found.to_crs("EPSG:4326").geometry.iloc[0]
    if geometry is None or geometry.is_empty or geometry.geom_type not in _POLYGONS:
        kind = "no geometry" if geometry is None else geometry.geom_type
        raise InputFormatError(f"{where}: the feature is {kind}, not a polygon")
    min_lon, min_lat, max_lon, max_lat = (float(v) for v in geometry.bounds)
    return Area(geometry, (min_lon, min_lat, max_lon, max_lat))


def cells_inside(area: Area, grid: CityGrid) -> np.ndarray:
    """Which cells of ``grid`` have their centre inside the area (row-major bool)."""
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    shape = shapely.ops.transform(to_grid.transform, area.geometry)
    x, y = grid.cell_centres()
    return np.asarray(shapely.contains_xy(shape, x, y), dtype=bool)
