"""A scene's preview: one decimated read at about a grid's pixel size, and its airlight.

A run takes each tile's white level, haze score and airlight from it (:mod:`urbanfusion.ingest.
scene_stats`), and so does ``urbanfusion dehaze`` (:mod:`.dehaze_raster`): the command dehazes
a raster with the airlight a run would use, so its output shows what the model sees.

The read is in the scene's own CRS (GDAL takes it from the overviews when the file has them),
averaging the pixels it skips: no warp, so it costs a fraction of a read of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window as RasterioWindow

from urbanfusion.pipeline.config import GridConfig
from urbanfusion.preprocess.dehaze import DehazeParams, atmospheric_light, haze_score

# Longest side of the preview.
PREVIEW_PX = 1024
# ...and the shortest longest side a grid pixel's size may decimate it to: the airlight's dark
# channel (15 px patches) needs room. A 256 px tile of 1 m pixels previewed at the grid's 7.8 m
# was 32 px a side, and its airlight cost RICE1's pairs 1.4 dB (23.16 -> 21.77 dB).
MIN_PREVIEW_PX = 256
# A grid pixel of the default grid (a 250 m cell over 32 px chips): what `urbanfusion dehaze`
# previews at unless told the grid's pixel size.
DEFAULT_PIXEL_M = GridConfig().cell_size_m / GridConfig().chip_px
# Metres in a degree at the equator: a grid pixel in the units of a tile in degrees.
_M_PER_DEGREE = 111_320.0


def own_alpha(src: rasterio.DatasetReader) -> int | None:
    """The index of the band GDAL marks alpha, if the scene has one."""
    return next((i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha), None)


@dataclass(frozen=True)
class Preview:
    """A scene's bands at about a grid's pixel size, as stored (not scaled), and which count."""

    data: np.ndarray  # (band, y, x) float32, averaged over the pixels skipped
    valid: np.ndarray  # (y, x) bool: inside the mask, nodata or alpha, finite in every band
    opaque: float  # alpha at or above this is opaque (128 without an alpha band)
    nonfinite: float  # the share of masked-in pixels that are not finite (+-inf, NaN)

    def scaled(self, lo: float, hi: float) -> np.ndarray:
        """The preview mapped from [lo, hi] to [0, 1], NaN where not valid."""
        out = ((self.data - lo) / (hi - lo)).astype(np.float32)
        out[:, ~self.valid] = np.nan
        return out


def read_preview(
    src: rasterio.DatasetReader,
    bands: tuple[int, ...],
    pixel_size_m: float | None = DEFAULT_PIXEL_M,
    window: RasterioWindow | None = None,
) -> Preview:
    """One decimated read of ``window`` (all of it when None) at about ``pixel_size_m``.

    At most :data:`PREVIEW_PX` a side, and at least :data:`MIN_PREVIEW_PX` (or the scene's own
    size); never finer than the scene. A scene without a CRS (a PNG) is previewed at up to
    :data:`PREVIEW_PX`. Raises what rasterio raises for a bad file.
    """
    height, width = (src.height, src.width) if window is None else (window.height, window.width)
    longest = max(width, height)
    factor = max(1.0, longest / PREVIEW_PX)
    if pixel_size_m is not None and src.crs is not None:
        res = max(abs(src.res[0]), abs(src.res[1]))
        target = pixel_size_m if src.crs.is_projected else pixel_size_m / _M_PER_DEGREE
        factor = max(factor, min(target / res, longest / MIN_PREVIEW_PX))
    shape = (max(1, int(height / factor)), max(1, int(width / factor)))
    data = src.read(
        list(bands),
        out_shape=(len(bands), *shape),
        window=window,
        resampling=Resampling.average,
        out_dtype="float32",
    )
    alpha = own_alpha(src)
    if alpha is None:
        opaque = 128.0
        mask = src.dataset_mask(window=window, out_shape=shape, resampling=Resampling.nearest)
        valid = mask > 0
    else:
        level = src.read(alpha, out_shape=shape, window=window, resampling=Resampling.average)
        # A 0/1 mask written as alpha is opaque at 1, where GDAL would read 1/255.
        opaque = max(float(level.max()), 1.0) / 2
        valid = level >= opaque
    nonfinite = valid & ~np.isfinite(data).all(axis=0)
    share = float(nonfinite.sum() / max(1, valid.sum()))
    return Preview(data, valid & ~nonfinite, opaque, share)


def preview_light(
    preview: np.ndarray, params: DehazeParams = DehazeParams()
) -> tuple[float, np.ndarray]:
    """A scaled preview's haze score and airlight: the one estimate a run and the command use.

    One airlight per scene, from its preview: a full-resolution reduction would read every
    tile twice more, and would differ from what a run uses.
    """
    return haze_score(preview, params.patch), atmospheric_light(preview, params)
