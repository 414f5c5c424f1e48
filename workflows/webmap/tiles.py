"""``map.pmtiles``: a region's classes as map tiles and its cells' details as data tiles.

A region's page cannot inline every cell (a province is millions), so past
:data:`INLINE_MAX_CELLS` ``map.html`` reads one PMTiles archive beside it (protomaps' single-file
tile format: a directory at the front, then tiles, read by byte ranges):

- **class tiles**, PNG, 256 px, in the grid's own tiling: at zoom ``top`` one pixel is one cell,
  each zoom below halves that (nearest: a pixel is one cell's class, never a blend of two);
  fully transparent tiles are left out;
- **data tiles** at zoom ``top + 1``, one per 256 x 256 cells, gzip: the cells' class, flags,
  previous class and probabilities (bytes, as the inline page has them), fetched when a user
  opens a cell there.

Over HTTP(S) (a web server, an S3 bucket) the page reads the archive by range requests; from a
disk the browser forbids that, so the page asks for the file once and reads it in place.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import write

# Past this many cells a page reads its classes and cells from the archive, not from itself
# (the inline bytes, about 12 a cell, pass 3 MB there).
INLINE_MAX_CELLS = 250_000
TILE = 256
_UNSET = 255  # no class, no previous class


def top_zoom(rows: int, cols: int) -> int:
    """The zoom at which one tile pixel is one cell (the whole grid fits one tile at zoom 0)."""
    return max(0, math.ceil(math.log2(max(rows, cols) / TILE)))


def _padded(block: np.ndarray, fill: int) -> np.ndarray:
    out = np.full((TILE, TILE, *block.shape[2:]), fill, block.dtype)
    out[: block.shape[0], : block.shape[1]] = block
    return out


def _blocks(shape: tuple[int, int]) -> Iterator[tuple[int, int, slice, slice]]:
    for ty in range(math.ceil(shape[0] / TILE)):
        for tx in range(math.ceil(shape[1] / TILE)):
            yield tx, ty, slice(ty * TILE, (ty + 1) * TILE), slice(tx * TILE, (tx + 1) * TILE)


def class_tiles(rgba: np.ndarray, top: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(z, x, y, PNG) of the class layer ``rgba`` (rows, cols, 4), one cell a pixel at ``top``."""
    for z in range(top + 1):
        step = 2 ** (top - z)
        level = rgba[::step, ::step]
        for tx, ty, rows, cols in _blocks(level.shape[:2]):
            block = level[rows, cols]
            if not block[..., 3].any():
                continue
            ok, png = cv2.imencode(".png", cv2.cvtColor(_padded(block, 0), cv2.COLOR_RGBA2BGRA))
            if not ok:
                raise OSError("could not encode a PNG tile for map.pmtiles")
            yield z, tx, ty, png.tobytes()


def cell_tiles(
    shape: tuple[int, int],
    class_id: np.ndarray,
    flags: np.ndarray,
    previous: np.ndarray,
    prob: np.ndarray,
    zoom: int,
) -> Iterator[tuple[int, int, int, bytes]]:
    """(zoom, x, y, gzip) data tiles of 256 x 256 cells: class, flags, previous, probabilities.

    Each is ``TILE * TILE`` bytes of class ids, then of flags, then of previous classes, then
    ``TILE * TILE * K`` of probabilities (x 255, a cell's K together), row-major in the block.
    """
    k = prob.shape[1]
    grids = (
        (class_id.reshape(shape), _UNSET),
        (flags.reshape(shape), 0),
        (previous.reshape(shape), _UNSET),
        (prob.reshape(*shape, k), 0),
    )
    for tx, ty, rows, cols in _blocks(shape):
        payload = b"".join(_padded(values[rows, cols], fill).tobytes() for values, fill in grids)
        yield zoom, tx, ty, gzip.compress(payload, compresslevel=6, mtime=0)


def write_map_tiles(
    path: Path,
    class_rgba: np.ndarray,
    cells: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    corners_lonlat: list[tuple[float, float]],
    metadata: dict[str, object],
) -> int:
    """Write the archive; returns its top zoom (the data tiles are one above it).

    ``cells``: class ids, flags, previous classes (uint8, one a cell) and probabilities
    (cells, K) uint8 x 255.
    """
    shape = class_rgba.shape[:2]
    top = top_zoom(*shape)
    tiles = [
        (zxy_to_tileid(z, x, y), data)
        for z, x, y, data in (*class_tiles(class_rgba, top), *cell_tiles(shape, *cells, top + 1))
    ]
    tiles.sort(key=lambda t: t[0])  # in tile id order: a clustered archive, read in order
    lons = [c[0] for c in corners_lonlat]
    lats = [c[1] for c in corners_lonlat]
    header = {
        "tile_type": TileType.PNG,
        "tile_compression": Compression.NONE,
        "min_lon_e7": int(min(lons) * 1e7),
        "min_lat_e7": int(min(lats) * 1e7),
        "max_lon_e7": int(max(lons) * 1e7),
        "max_lat_e7": int(max(lats) * 1e7),
        "center_zoom": 0,
        "center_lon_e7": int((min(lons) + max(lons)) / 2 * 1e7),
        "center_lat_e7": int((min(lats) + max(lats)) / 2 * 1e7),
    }
    with write(path) as writer:
        for tile_id, data in tiles:
            writer.write_tile(tile_id, data)
        writer.finalize(header, {**metadata, "top_zoom": top, "data_zoom": top + 1})
    return top
