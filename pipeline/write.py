"""Writers of the run outputs: one function per file, each writing exactly one path.

The caller (:mod:`pipeline.run`) writes into a staging directory and moves finished files into
place, so no reader ever sees half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.shutil import copy as raster_copy

from models.classes import NO_CLASS
from models.contract import ModelContract
from pipeline.grid import CityGrid


def _cog_blocksize(grid: CityGrid) -> int:
    """Largest power of two in [16, 512] at most half the longer side."""
    half = max(grid.nrows, grid.ncols) // 2
    size = 16
    while size * 2 <= min(half, 512):
        size *= 2
    return size


def _overview_factors(grid: CityGrid) -> list[int]:
    """Halvings down to a 2-pixel side: a map of a small city gets overviews too.

    GDAL's COG driver stops adding overviews once one fits in a block, which leaves a map smaller
    than a block (16 px) without any; we build them ourselves and have the driver keep them.
    """
    factors, f = [], 2
    while max(grid.nrows, grid.ncols) / f >= 2:
        factors.append(f)
        f *= 2
    return factors


def _write_cog(
    path: Path,
    grid: CityGrid,
    bands: np.ndarray,
    nodata: float,
    resampling: str,
    colours: list[list[int]] | None = None,
    tags: dict[str, str] | None = None,
    band_names: list[str] | None = None,
) -> None:
    """Write ``bands`` (band, rows, cols) on the cell grid as a Cloud Optimized GeoTIFF."""
    profile = {
        "driver": "GTiff",
        "width": grid.ncols,
        "height": grid.nrows,
        "count": bands.shape[0],
        "dtype": bands.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
    }
    with MemoryFile() as memory, memory.open(**profile) as staged:
        staged.write(bands)
        if colours is not None:
            staged.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
        if tags:
            staged.update_tags(**tags)
        for i, name in enumerate(band_names or [], start=1):
            staged.set_band_description(i, name)
        staged.build_overviews(_overview_factors(grid), Resampling[resampling.lower()])
        raster_copy(
            staged,
            path,
            driver="COG",
            BLOCKSIZE=_cog_blocksize(grid),
            COMPRESS="DEFLATE",
            OVERVIEWS="FORCE_USE_EXISTING",
        )


def write_class_map(
    path: Path, grid: CityGrid, class_id: np.ndarray, contract: ModelContract
) -> None:
    """``class_map.tif``: uint8 class per cell, 255 = no prediction, colour table, names in tags."""
    _write_cog(
        path,
        grid,
        class_id.reshape(1, grid.nrows, grid.ncols).astype(np.uint8),
        nodata=NO_CLASS,
        resampling="NEAREST",
        colours=contract.colours,
        tags={
            "CLASS_NAMES": ",".join(contract.classes),
            **{f"CLASS_{i}": label for i, label in enumerate(contract.labels)},
            "NODATA_MEANING": "no prediction (see cells.gpkg no_data_reason)",
        },
    )


def write_probabilities(
    path: Path, grid: CityGrid, prob: np.ndarray, predicted: np.ndarray, contract: ModelContract
) -> None:
    """``probabilities.tif``: float32, one band per class (described by name), NaN = none."""
    data = np.where(predicted[:, None], prob, np.nan).astype(np.float32)
    _write_cog(
        path,
        grid,
        data.T.reshape(len(contract.classes), grid.nrows, grid.ncols),
        nodata=float("nan"),
        resampling="AVERAGE",
        tags={"CLASS_NAMES": ",".join(contract.classes)},
        band_names=list(contract.classes),
    )


def cells_table(
    grid: CityGrid,
    prob: np.ndarray,
    class_id: np.ndarray,
    has_imagery: np.ndarray,
    has_signalling: np.ndarray,
    reason: np.ndarray,
    contract: ModelContract,
) -> gpd.GeoDataFrame:
    """The per-cell table of ``cells.gpkg`` (every cell of the grid, predicted or not)."""
    cells = grid.cells()
    predicted = class_id != NO_CLASS
    names = np.array([*contract.classes, ""], dtype=object)
    cells["class_id"] = class_id.astype(np.int16)
    cells["class_name"] = names[np.where(predicted, class_id, len(contract.classes))]
    cells["confidence"] = np.where(predicted, prob.max(axis=1), np.nan).astype(np.float32)
    for i, name in enumerate(contract.classes):
        cells[f"p_{name}"] = np.where(predicted, prob[:, i], np.nan).astype(np.float32)
    cells["has_imagery"] = has_imagery.astype(bool)
    cells["has_signalling"] = has_signalling.astype(bool)
    cells["no_data_reason"] = reason.astype(str)
    return cells[[c for c in cells.columns if c != "geometry"] + ["geometry"]]


def write_cells(path: Path, cells: gpd.GeoDataFrame) -> None:
    """``cells.gpkg``, layer ``cells``."""
    cells.to_file(path, layer="cells", driver="GPKG", engine="pyogrio")


def write_quicklook(
    path: Path, grid: CityGrid, class_id: np.ndarray, contract: ModelContract, title: str
) -> None:
    """``quicklook.png``: the class map with a legend and a title."""
    scale = max(1, 640 // max(grid.nrows, grid.ncols))
    lut = np.full((256, 3), 230, dtype=np.uint8)  # no prediction: light grey
    lut[: len(contract.colours)] = np.array(contract.colours, dtype=np.uint8)
    rgb = lut[class_id.reshape(grid.nrows, grid.ncols)]
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    h, w, _ = rgb.shape
    legend_w, line = 260, 26
    canvas_h = max(h, line * (len(contract.labels) + 3)) + 70
    canvas = np.full((canvas_h, w + legend_w + 30, 3), 255, dtype=np.uint8)
    canvas[40 : 40 + h, 10 : 10 + w] = rgb
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, title[:70], (10, 28), font, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    x0 = w + 30
    entries = [*zip(contract.labels, contract.colours, strict=True), ("No prediction", [230] * 3)]
    for i, (label, colour) in enumerate(entries):
        y = 50 + i * line
        cv2.rectangle(canvas, (x0, y), (x0 + 20, y + 18), tuple(int(c) for c in colour), -1)
        cv2.rectangle(canvas, (x0, y), (x0 + 20, y + 18), (80, 80, 80), 1)
        cv2.putText(canvas, label, (x0 + 30, y + 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    scale_m = grid.cell_size * 4
    y = 40 + h + 5
    cv2.line(canvas, (10, y), (10 + 4 * scale, y), (0, 0, 0), 2)
    cv2.putText(canvas, f"{scale_m:g} m", (10, y + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Pretty JSON (``manifest.json``)."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def write_rejects(path: Path, rejects: pd.DataFrame) -> None:
    """``rejects.parquet``: every rejected signalling row with its reason, file and line."""
    rejects.to_parquet(path, index=False)
