"""One tile's pixels onto a target window: warped, masked, scaled to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.remote_files import InputPath
from urbanfusion.preprocess.scene_preview import own_alpha


@dataclass(frozen=True)
class TileSource:
    """What reading a tile's pixels needs: its bands, their scaling and its alpha's opaque level."""

    path: InputPath
    bands: tuple[int, ...]
    scale: tuple[tuple[float, float], ...]
    # Alpha at or above this is opaque. For a tile's own alpha band: half its top value, which
    # is 255 for 8-bit data and 65535 for 16-bit, and 1 for a 0/1 mask written as alpha.
    opaque: float = 128.0


def read_window(
    tile: TileSource, crs: object, transform: Affine, shape: tuple[int, int]
) -> np.ndarray:
    """Warp a tile's bands onto a target window: float32 (band, y, x) in [0, 1], NaN nodata.

    The VRT's alpha band carries the source's nodata value, internal mask and footprint, so all
    three become NaN, never black pixels taken as data.
    """
    try:
        with rasterio.open(tile.path) as src:
            # A tile's own alpha band is its mask; otherwise the VRT adds one for the footprint.
            alpha_band = own_alpha(src)
            with WarpedVRT(
                src,
                crs=crs,
                transform=transform,
                width=shape[1],
                height=shape[0],
                resampling=Resampling.bilinear,
                add_alpha=alpha_band is None,
            ) as vrt:
                data = vrt.read(list(tile.bands), out_dtype="float32")
                alpha = vrt.read(alpha_band or vrt.count)
    except RasterioError as err:
        raise unreadable(tile.path, err) from None
    # Bilinear alpha is partial along the footprint's edge: half-covered pixels are nodata.
    return scaled(data, alpha >= (tile.opaque if alpha_band else 128), tile)


def unreadable(path: InputPath, err: RasterioError) -> InputFormatError:
    """The one-line error of a tile whose pixels cannot be read."""
    return InputFormatError(
        f"{path}: cannot read its pixels ({str(err).splitlines()[0]}); the file may be "
        "truncated: re-download it or remove it from imagery.paths"
    )


def scaled(data: np.ndarray, valid: np.ndarray, tile: TileSource) -> np.ndarray:
    """Raw values to [0, 1] by the tile's scaling; NaN where not ``valid`` or not finite.

    A float tile's +-inf or NaN pixel (a failed division in the tool that made it) is nodata in
    every band: clipped, it would pass for white or black ground.
    """
    valid = valid & np.isfinite(data).all(axis=0)
    lo = np.array([s[0] for s in tile.scale], dtype=np.float32)[:, None, None]
    hi = np.array([s[1] for s in tile.scale], dtype=np.float32)[:, None, None]
    # In place (a chunk is tens of MB): NaN stays NaN through each step, as it did in copies.
    out = np.asarray(data, dtype=np.float32)
    np.subtract(out, lo, out=out)
    np.divide(out, hi - lo, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    np.copyto(out, np.float32(np.nan), where=~valid[None])
    return out
