"""Per tile, once: how to read it (band scaling, alpha), its haze score and airlight.

All from one preview (:mod:`urbanfusion.preprocess.scene_preview`) at about the grid's pixel
size, kept in the run store under the file's identity, so an unchanged tile is not opened again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from urbanfusion.ingest.store_keys import scene_key
from urbanfusion.ingest.tile_read import TileSource, scaled, unreadable
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.remote_files import InputPath
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.preprocess.dehaze import DehazeParams
from urbanfusion.preprocess.scaling import white_level
from urbanfusion.preprocess.scene_preview import preview_light, read_preview

# Above this haze score a scene is dehazed under ``dehaze: auto``. Measured: the demo's clear
# tiles score 0.21-0.23 and its hazy one 0.51; on RICE1 the clear median is 0.17, the hazy 0.36,
# with overlap from bright ground (a haze gate that separates those is future work).
HAZE_THRESHOLD = 0.35
# A tile declaring more pixels than this, and over PREVIEW_CROP times those over the extent, is
# previewed over the extent only (grown by a quarter each side): a decimated read of a sparse
# BigTIFF's declared millions of blocks would stall the night. Smaller tiles keep whole-scene
# statistics (one airlight per scene, the same for every city that uses the tile).
PREVIEW_WHOLE_MAX_PX = 64 * 2**20
PREVIEW_CROP = 4.0


class EmptyTileError(InputFormatError):
    """A readable tile whose every pixel is masked: nothing of it can reach the map."""


class SceneStats(NamedTuple):
    """A scene's reading, haze score, airlight (None: not dehazed), share of non-finite pixels."""

    tile: TileSource
    score: float
    light: np.ndarray | None
    nonfinite: float


def preview_bounds(
    bounds: tuple[float, float, float, float],
    res: tuple[float, float],
    crs: CRS,
    grid: CityGrid,
) -> tuple[float, float, float, float] | None:
    """The part of a tile (``bounds`` in its ``crs``) its preview reads; None: all of it.

    All of it unless the tile declares more than :data:`PREVIEW_WHOLE_MAX_PX` pixels and over
    :data:`PREVIEW_CROP` times those over the extent; then the extent grown by a quarter each
    side, in the tile's CRS, clipped to the tile.
    """
    left, bottom, right, top = bounds
    declared = (right - left) / res[0] * (top - bottom) / res[1]
    if declared <= PREVIEW_WHOLE_MAX_PX:
        return None
    x0, y0, x1, y1 = grid.bounds
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    gx0, gy0, gx1, gy1 = transform_bounds(grid.crs, crs, x0 - dx, y0 - dy, x1 + dx, y1 + dy)
    crop = (max(left, gx0), max(bottom, gy0), min(right, gx1), min(top, gy1))
    if crop[0] >= crop[2] or crop[1] >= crop[3]:
        return None
    cropped = (crop[2] - crop[0]) / res[0] * (crop[3] - crop[1]) / res[1]
    return crop if declared > PREVIEW_CROP * cropped else None


def scene_preview(
    src: rasterio.DatasetReader,
    path: InputPath,
    bands: tuple[int, ...],
    grid: CityGrid,
    bounds: tuple[float, float, float, float] | None = None,
) -> tuple[TileSource, np.ndarray, float]:
    """How to read a scene, and the scene at about the grid's pixel size, scaled: one read.

    Also the share of its valid pixels that are not finite (+-inf, NaN): read as nodata. The
    white level (:func:`~urbanfusion.preprocess.scaling.white_level`) is one for all bands, so
    the haze floor and the colour balance survive any storage type.
    """
    window = None
    if bounds is not None:
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
    try:
        preview = read_preview(src, bands, grid.pixel_size, window)
    except RasterioError as err:
        raise unreadable(path, err) from None
    if src.dtypes[0] == "uint8":
        white = 255.0
    else:
        values = preview.data[:, preview.valid]
        # A high percentile, not the maximum: one hot pixel must not darken the whole scene.
        high = float(np.percentile(values, 99.9)) if values.size else 0.0
        nbits = src.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")
        white = white_level(src.dtypes[0], high, nbits)
    tile = TileSource(path, bands, ((0.0, white),) * len(bands), preview.opaque)
    return tile, scaled(preview.data, preview.valid, tile), preview.nonfinite


def scene_stats(
    path: InputPath,
    chosen: tuple[int, ...],
    grid: CityGrid,
    params: DehazeParams,
    dehaze: str,
    store: ResultStore | None,
    bounds: tuple[float, float, float, float] | None = None,
) -> SceneStats:
    """A scene's reading (band scaling, alpha level), haze score, airlight if it is dehazed.

    From its preview; kept in ``store`` under the file's identity, so an unchanged tile is not
    opened again. Raises what rasterio raises for an unreadable file, and
    :class:`EmptyTileError` for a tile with no valid pixel.
    """
    key = scene_key(path, chosen, grid, params, dehaze, bounds)
    if store is not None and store.use("scenes", key, "json"):
        saved = store.load_json(store.path("scenes", key, "json"))
        if isinstance(saved, dict):
            light = saved["light"]
            return SceneStats(
                TileSource(path, chosen, tuple(tuple(v) for v in saved["scale"]), saved["opaque"]),
                float(saved["score"]),
                None if light is None else np.asarray(light, dtype=np.float32),
                float(saved["nonfinite"]),
            )
    with rasterio.open(path) as src:
        tile, preview, nonfinite = scene_preview(src, path, chosen, grid, bounds)
    if np.isnan(preview).all():
        raise EmptyTileError(
            "every pixel is masked by its nodata value or alpha band; check how it was exported"
        )
    score, light = preview_light(preview, params)
    if not (dehaze == "always" or (dehaze == "auto" and score > HAZE_THRESHOLD)):
        light = None
    if store is not None:
        record = {
            "scale": tile.scale,
            "opaque": tile.opaque,
            "score": score,
            "light": None if light is None else [float(v) for v in light],
            "nonfinite": nonfinite,
        }
        store.save_json(store.path("scenes", key, "json"), record)
    return SceneStats(tile, score, light, nonfinite)
