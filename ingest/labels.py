"""Labels per cell from zone polygons: the majority class, kept when it is pure enough."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError
from urbanfusion.pipeline.grid import CityGrid

# A cell is labelled only when one class covers at least this share of it.
MIN_PURITY = 0.6
NO_LABEL = -1


def read_zones(path: Path, class_names: tuple[str, ...] | list[str]) -> gpd.GeoDataFrame:
    """Read labelled zones with a ``class_name`` (or ``class_id``) column; adds ``class_id``.

    Raises:
        InputNotFoundError: the file does not exist.
        InputFormatError: no CRS, no class column, or class names the model does not know.
    """
    if not path.is_file():
        raise InputNotFoundError(f"labels file {path} does not exist; check --labels")
    try:
        zones = gpd.read_file(path, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        raise InputFormatError(f"{path}: cannot read zones ({err}); give a GeoPackage") from None
    if zones.crs is None:
        raise InputFormatError(f"{path}: the zones have no CRS; set one (e.g. with ogr2ogr -a_srs)")
    if "class_name" in zones.columns:
        known = {n: i for i, n in enumerate(class_names)}
        unknown = sorted(set(zones["class_name"].astype(str)) - set(known))
        if unknown:
            raise InputFormatError(
                f"{path}: unknown class_name value(s) {unknown[:5]}; use one of {list(class_names)}"
            )
        zones["class_id"] = zones["class_name"].astype(str).map(known).astype(np.int64)
    elif "class_id" not in zones.columns:
        raise InputFormatError(
            f"{path}: no 'class_name' or 'class_id' column; found {list(zones.columns)}"
        )
    return zones


def cell_labels(
    grid: CityGrid, zones: gpd.GeoDataFrame, n_classes: int, min_purity: float = MIN_PURITY
) -> tuple[np.ndarray, np.ndarray]:
    """Majority class per cell (row-major) and its share of the cell's area.

    Cells whose majority class covers less than ``min_purity`` get :data:`NO_LABEL`.
    """
    zones = zones.to_crs(grid.crs)
    polygons = grid.cell_polygons()
    area = np.zeros((grid.n_cells, n_classes))
    tree = shapely.STRtree(polygons)
    for geom, k in zip(zones.geometry.values, zones["class_id"].to_numpy(), strict=True):
        if geom is None or not 0 <= k < n_classes:
            continue
        hits = tree.query(geom, predicate="intersects")
        area[hits, k] += shapely.area(shapely.intersection(polygons[hits], geom))
    cell_area = grid.cell_size**2
    label = area.argmax(axis=1)
    purity = area.max(axis=1) / cell_area
    return np.where(purity >= min_purity, label, NO_LABEL), purity
