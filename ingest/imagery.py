"""Satellite tiles onto the city's pixel grid: footprints, lazy warped reads, dehazing, mosaic.

Each tile becomes a lazy ``(band, y, x)`` float32 dask array over the grid chunks its footprint
touches (NaN outside the footprint and where it has nodata, a mask or alpha); each chunk reads
only the source window it needs through a WarpedVRT (bilinear). A hazy tile is dehazed with one
airlight for the whole scene (from its preview), each chunk read with its halo and dehazed on
the spot, so chunks never wait for each other and memory stays flat however large the extent.

Mosaic rule: for every pixel, the first tile with a valid value wins, tiles taken newest
acquisition first (date from the file's tags or name), then those without a date, each group in
the order of ``imagery.paths`` (each glob's matches sorted by name).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import dask
import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from pyproj import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from urbanfusion.ingest.store_keys import scene_key
from urbanfusion.ingest.tile_index import tile_index
from urbanfusion.pipeline.errors import InputFormatError, NoCoverageError
from urbanfusion.pipeline.fingerprint import file_identity
from urbanfusion.pipeline.grid import CityGrid, Window
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.preprocess.dehaze import (
    DehazeParams,
    atmospheric_light,
    dehaze_with_light,
    halo,
    haze_score,
)
from urbanfusion.preprocess.scaling import white_level

# GDAL's block cache defaults to 5 % of RAM and keeps blocks of every tile read; bounded
# memory needs a bounded cache. A value the user set wins.
os.environ.setdefault("GDAL_CACHEMAX", "256")
# The GDAL settings reads depend on, as the manifest records them (None: GDAL's default).
GDAL_SETTINGS = ("GDAL_CACHEMAX", "GDAL_NUM_THREADS", "GDAL_DISABLE_READDIR_ON_OPEN", "VSI_CACHE")


def gdal_settings() -> dict[str, str | None]:
    """The GDAL configuration options in force for reads (environment)."""
    return {key: os.environ.get(key) for key in GDAL_SETTINGS}


# Pixels per chunk side, rounded to whole cells so that no cell straddles two chunks.
CHUNK_TARGET_PX = 1024
# Above this haze score a scene is dehazed under ``dehaze: auto``. Measured: the demo's clear
# tiles score 0.21-0.23 and its hazy one 0.51; on RICE1 the clear median is 0.17, the hazy 0.36,
# with overlap from bright ground (a haze gate that separates those is future work).
HAZE_THRESHOLD = 0.35
# A tile whose pixels are more than this many times the grid's is used only to fill gaps.
COARSE_FACTOR = 4.0
# Longest side of the decimated read used for per-scene statistics and the haze score.
_PREVIEW_PX = 1024
# A tile declaring more pixels than this, and over PREVIEW_CROP times those over the extent, is
# previewed over the extent only (grown by a quarter each side): a decimated read of a sparse
# BigTIFF's declared millions of blocks would stall the night. Smaller tiles keep whole-scene
# statistics (one airlight per scene, the same for every city that uses the tile).
PREVIEW_WHOLE_MAX_PX = 64 * 2**20
PREVIEW_CROP = 4.0


@dataclass
class TileReport:
    """What happened to one tile; goes to the manifest."""

    path: str
    status: Literal["used", "skipped", "failed"]
    reason: str = ""
    crs: str = ""
    dtype: str = ""
    bands: int = 0
    resolution: tuple[float, float] = (0.0, 0.0)
    scale: list[tuple[float, float]] = field(default_factory=list)
    haze_score: float | None = None
    dehazed: bool = False
    acquired: str | None = None
    airlight: list[float] = field(default_factory=list)
    note: str = ""  # for a used tile: something the user should know (a coarse tile)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _neg_date(date: str | None) -> int:
    return -dt.date.fromisoformat(date).toordinal() if date else 0


@dataclass(frozen=True)
class TileSource:
    """What reading a tile's pixels needs: its bands, their scaling and its alpha's opaque level."""

    path: Path
    bands: tuple[int, ...]
    scale: tuple[tuple[float, float], ...]
    # Alpha at or above this is opaque. For a tile's own alpha band: half its top value, which
    # is 255 for 8-bit data and 65535 for 16-bit, and 1 for a 0/1 mask written as alpha.
    opaque: float = 128.0


@dataclass(frozen=True)
class LayerSource:
    """What a tile's pixels on the grid depend on: a stored chunk of chips must match them.

    The file's identity, its bands, their scaling, its alpha's opaque level, its airlight.
    """

    tile: dict[str, object]
    bands: tuple[int, ...]
    scale: tuple[tuple[float, float], ...]
    opaque: float
    light: tuple[float, ...] | None

    def to_dict(self) -> dict[str, object]:
        """As JSON-ready values (what a chips key digests)."""
        return {
            "tile": self.tile,
            "bands": list(self.bands),
            "scale": [list(v) for v in self.scale],
            "opaque": self.opaque,
            "light": None if self.light is None else list(self.light),
        }


# Per chunk of CHUNK_TARGET_PX, the layers it is made of, in mosaic order.
ChunkSources = dict[tuple[int, int], tuple[LayerSource, ...]]


class Imagery(NamedTuple):
    """What :func:`load_imagery` gives: the mosaic, the tiles' reports, each chunk's sources."""

    image: xr.DataArray
    reports: list[TileReport]
    chunk_sources: ChunkSources


def _own_alpha(src: rasterio.DatasetReader) -> int | None:
    """The index of the band GDAL marks alpha, if the tile has one."""
    return next((i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha), None)


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
            own_alpha = _own_alpha(src)
            with WarpedVRT(
                src,
                crs=crs,
                transform=transform,
                width=shape[1],
                height=shape[0],
                resampling=Resampling.bilinear,
                add_alpha=own_alpha is None,
            ) as vrt:
                data = vrt.read(list(tile.bands), out_dtype="float32")
                alpha = vrt.read(own_alpha or vrt.count)
    except RasterioError as err:
        raise _unreadable(tile.path, err) from None
    # Bilinear alpha is partial along the footprint's edge: half-covered pixels are nodata.
    return _scaled(data, alpha >= (tile.opaque if own_alpha else 128), tile)


def _unreadable(path: Path, err: RasterioError) -> InputFormatError:
    return InputFormatError(
        f"{path}: cannot read its pixels ({str(err).splitlines()[0]}); the file may be "
        "truncated: re-download it or remove it from imagery.paths"
    )


def _scaled(data: np.ndarray, valid: np.ndarray, tile: TileSource) -> np.ndarray:
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


# How to read one chunk of one tile: a function and its arguments, called by the mosaic's task.
_Read = tuple[Callable[..., np.ndarray], tuple[object, ...]]


@dataclass(frozen=True)
class _Layer:
    """One tile on the pixel grid: how to read each grid chunk its footprint touches."""

    reads: dict[tuple[int, int], _Read]  # (chunk row, chunk col) -> its read
    source: LayerSource | None = None  # what its pixels depend on


def _read_dehazed(
    tile: TileSource,
    crs: object,
    transform: Affine,
    shape: tuple[int, int],
    inner: Window,
    light: np.ndarray,
    params: DehazeParams,
) -> np.ndarray:
    """Warp a chunk with its halo, dehaze it, keep the chunk: no task depends on another.

    ``transform`` and ``shape`` place the chunk grown by the halo (clipped to the layer);
    ``inner`` is the chunk inside it. Warped pixels do not depend on the window they are read
    in, so this equals dehazing the whole layer.
    """
    data = read_window(tile, crs, transform, shape)
    r, c = inner.row, inner.col
    return dehaze_with_light(data, light, params)[:, r : r + inner.height, c : c + inner.width]


def _tile_on_grid(
    tile: TileSource,
    grid: CityGrid,
    footprint: tuple[float, ...],
    light: np.ndarray | None = None,
    params: DehazeParams = DehazeParams(),
    source: LayerSource | None = None,
) -> _Layer:
    """Lazy warped reads of one tile over the grid chunks its footprint touches.

    With ``light`` (the scene's airlight) every chunk is dehazed as it is read.
    """
    chunks = grid.chunks(CHUNK_TARGET_PX)
    rows, cols = grid.chunks_touching(chunks, footprint)
    # The layer's pixel extent: a halo never reaches past it, as with map_overlap on the layer.
    layer = chunks.span(rows, cols)
    margin = halo(params)
    reads: dict[tuple[int, int], _Read] = {}
    for r in rows:
        for c in cols:
            window = chunks.window(r, c)
            if light is None:
                reads[(r, c)] = (
                    read_window,
                    (tile, grid.crs, grid.window_transform(window), window.shape),
                )
            else:
                outer = window.grow(margin, within=layer)
                reads[(r, c)] = (
                    _read_dehazed,
                    (
                        tile,
                        grid.crs,
                        grid.window_transform(outer),
                        outer.shape,
                        window.relative_to(outer),
                        light,
                        params,
                    ),
                )
    return _Layer(reads, source)


def read_first_valid(reads: list[_Read]) -> np.ndarray:
    """A chunk of the mosaic: per pixel, the first tile whose pixel is valid in every band.

    The covering tiles are read one after another in mosaic order, until no pixel is missing:
    one tile's chunk in memory beside the result however many tiles overlap it (a chunk of
    1,024 px is 12 MB a tile; thousands of small tiles once held gigabytes), and the tiles after
    the chunk is full are not read at all.
    """
    function, args = reads[0]
    out = function(*args)
    for function, args in reads[1:]:
        missing = np.isnan(out).any(axis=0)
        if not missing.any():
            break
        np.copyto(out, function(*args), where=missing[None])  # masked copy, no gather
    return out


def _mosaic(layers: list[_Layer], grid: CityGrid, n_bands: int) -> tuple[da.Array, ChunkSources]:
    """Each output chunk from only the layers that cover it, in mosaic order: one task each.

    Returns the mosaic and, per chunk, the sources of the layers it is made of (in order).
    """
    chunks = grid.chunks(CHUNK_TARGET_PX)
    blocks: list[list[da.Array]] = [[] for _ in range(chunks.shape[0])]
    sources: ChunkSources = {}
    for (r, c), window in chunks:
        inside = [layer for layer in layers if (r, c) in layer.reads]
        sources[(r, c)] = tuple(layer.source for layer in inside if layer.source is not None)
        shape = (n_bands, *window.shape)
        if not inside:
            blocks[r].append(da.full(shape, np.nan, dtype=np.float32))
            continue
        block = dask.delayed(read_first_valid)([layer.reads[(r, c)] for layer in inside])
        blocks[r].append(da.from_delayed(block, shape, dtype=np.float32))
    return da.block(blocks), sources


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


def _scene_preview(
    src: rasterio.DatasetReader,
    path: Path,
    bands: tuple[int, ...],
    grid: CityGrid,
    bounds: tuple[float, float, float, float] | None = None,
) -> tuple[TileSource, np.ndarray, float]:
    """How to read a scene, and the scene at about the grid's pixel size, scaled: one read.

    Also the share of its valid pixels that are not finite (+-inf, NaN): read as nodata.

    A decimated read in the tile's own CRS (GDAL takes it from the overviews when the file has
    them), averaging the pixels it skips: no warp, so it costs a fraction of a read of the tile.
    From it come the white level (:func:`~urbanfusion.preprocess.scaling.white_level`, one for
    all bands, so the haze floor and the colour balance survive any storage type), the alpha
    band's opaque level, and the preview (at most :data:`_PREVIEW_PX` a side, NaN where the
    tile's mask, nodata value or alpha band leave pixels out).
    """
    res = max(abs(src.res[0]), abs(src.res[1]))
    window = None
    if bounds is not None:
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
    height, width = (src.height, src.width) if window is None else (window.height, window.width)
    # Compare resolutions in the tile's units: convert the grid pixel when the tile is in degrees.
    target = grid.pixel_size if src.crs.is_projected else grid.pixel_size / 111_320.0
    factor = max(1.0, target / res, max(width, height) / _PREVIEW_PX)
    shape = (max(1, int(height / factor)), max(1, int(width / factor)))
    try:
        data = src.read(
            list(bands),
            out_shape=(len(bands), *shape),
            window=window,
            resampling=Resampling.average,
            out_dtype="float32",
        )
        alpha = _own_alpha(src)
        if alpha is None:
            opaque = 128.0
            mask = src.dataset_mask(window=window, out_shape=shape, resampling=Resampling.nearest)
            valid = mask > 0
        else:
            level = src.read(alpha, out_shape=shape, window=window, resampling=Resampling.average)
            # A 0/1 mask written as alpha is opaque at 1, where GDAL would read 1/255.
            opaque = max(float(level.max()), 1.0) / 2
            valid = level >= opaque
    except RasterioError as err:
        raise _unreadable(path, err) from None
    nonfinite = valid & ~np.isfinite(data).all(axis=0)
    share = float(nonfinite.sum() / max(1, valid.sum()))
    valid &= ~nonfinite
    if src.dtypes[0] == "uint8":
        white = 255.0
    else:
        values = data[:, valid]
        values = values[np.isfinite(values)]
        # A high percentile, not the maximum: one hot pixel must not darken the whole scene.
        high = float(np.percentile(values, 99.9)) if values.size else 0.0
        nbits = src.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")
        white = white_level(src.dtypes[0], high, nbits)
    tile = TileSource(path, bands, ((0.0, white),) * len(bands), opaque)
    return tile, _scaled(data, valid, tile), share


class EmptyTileError(InputFormatError):
    """A readable tile whose every pixel is masked: nothing of it can reach the map."""


def _scene_stats(
    path: Path,
    chosen: tuple[int, ...],
    grid: CityGrid,
    params: DehazeParams,
    dehaze: str,
    store: ResultStore | None,
    bounds: tuple[float, float, float, float] | None = None,
) -> tuple[TileSource, float, np.ndarray | None, float]:
    """A scene's reading (band scaling, alpha level), haze score, airlight if it is dehazed.

    And the share of its pixels that are not finite (read as nodata).

    From its preview; kept in ``store`` under the file's identity, so an unchanged tile is not
    opened again. Raises what rasterio raises for an unreadable file, and
    :class:`EmptyTileError` for a tile with no valid pixel.
    """
    key = scene_key(path, chosen, grid, params, dehaze, bounds)
    if store is not None and store.use("scenes", key, "json"):
        saved = store.load_json(store.path("scenes", key, "json"))
        light = saved["light"]  # type: ignore[index]
        scale = tuple(tuple(v) for v in saved["scale"])  # type: ignore[index]
        return (
            TileSource(path, chosen, scale, float(saved["opaque"])),  # type: ignore[index]
            float(saved["score"]),  # type: ignore[index]
            None if light is None else np.asarray(light, dtype=np.float32),
            float(saved["nonfinite"]),  # type: ignore[index]
        )
    with rasterio.open(path) as src:
        tile, preview, nonfinite = _scene_preview(src, path, chosen, grid, bounds)
    if np.isnan(preview).all():
        raise EmptyTileError(
            "every pixel is masked by its nodata value or alpha band; check how it was exported"
        )
    score = haze_score(preview, params.patch)
    light = None
    if dehaze == "always" or (dehaze == "auto" and score > HAZE_THRESHOLD):
        # One airlight per scene, from its preview (about the grid's pixel size, at most
        # 1024 px a side): a full-resolution reduction would read every tile twice more.
        light = atmospheric_light(preview, params)
    if store is not None:
        record = {
            "scale": tile.scale,
            "opaque": tile.opaque,
            "score": score,
            "light": None if light is None else [float(v) for v in light],
            "nonfinite": nonfinite,
        }
        store.save_json(store.path("scenes", key, "json"), record)
    return tile, score, light, nonfinite


def band_indexes(requested: list[int | str], names: list[str], source: str) -> tuple[int, ...]:
    """1-based band indexes for bands given by index or by name (description or colour).

    Raises:
        InputFormatError: a band is missing from the file.
    """
    out = []
    for band in requested:
        if isinstance(band, int):
            if not 1 <= band <= len(names):
                raise InputFormatError(
                    f"{source}: imagery.bands asks for band {band} but the file has "
                    f"{len(names)}; set imagery.bands to bands every tile has"
                )
            out.append(band)
        elif band.lower() in names:
            out.append(names.index(band.lower()) + 1)
        else:
            raise InputFormatError(
                f"{source}: no band named {band!r} (its bands are {names}); use indexes or "
                "those names in imagery.bands"
            )
    return tuple(out)


def _coarse(report: TileReport, grid: CityGrid) -> bool:
    """Whether a tile's pixels are much coarser than the grid's; says so in its report."""
    res = max(abs(report.resolution[0]), abs(report.resolution[1]))
    # Degrees to metres at the equator: coarse enough a test for "much coarser".
    metres = res * 111_320.0 if CRS.from_user_input(report.crs).is_geographic else res
    if metres <= COARSE_FACTOR * grid.pixel_size:
        return False
    report.note = (
        f"{Path(report.path).name} has {metres:,.0f} m pixels against the grid's "
        f"{grid.pixel_size:g} m: used only where no finer tile covers the ground"
    )
    return True


def _touches(footprint: tuple[float, ...], grid: CityGrid) -> bool:
    gx0, gy0, gx1, gy1 = grid.bounds
    return footprint[0] < gx1 and footprint[2] > gx0 and footprint[1] < gy1 and footprint[3] > gy0


def load_imagery(
    paths: list[Path],
    grid: CityGrid,
    bands: list[int | str],
    dehaze: Literal["auto", "always", "never"] = "auto",
    params: DehazeParams = DehazeParams(),
    strict: bool = False,
    store: ResultStore | None = None,
) -> Imagery:
    """Align, dehaze and mosaic tiles onto the grid's pixels (lazily, with dask).

    Footprints come from the tile index (:mod:`urbanfusion.ingest.tile_index`), so tiles off
    the extent are not opened. Mosaic rule: the newest acquisition first (date from the file's
    tags or name), then tiles without a date, each group in the order of ``imagery.paths``.

    Returns:
        The imagery as float32 ``(band, y, x)`` in [0, 1] with NaN for nodata, one report per
        tile (used, skipped because it does not touch the extent, or failed with the reason),
        and per chunk the layers it is made of.

    Raises:
        InputFormatError: a tile lacks a requested band, or (``strict``) a tile failed.
        NoCoverageError: no readable tile touches the extent.
    """
    index = tile_index(paths)
    reports: list[TileReport] = []
    touching: list[tuple[TileReport, tuple[float, ...], tuple[int, ...]]] = []
    crops: dict[str, tuple[float, float, float, float] | None] = {}
    for record in index.to_dict("records"):
        row = {k: None if _missing(v) else v for k, v in record.items()}
        report = TileReport(
            path=row["path"],
            status="failed",
            reason=row["error"] or "",
            dtype=row["dtype"] or "",
            bands=int(row["bands"] or 0),
            acquired=row["acquired"],
            resolution=(float(row["res_x"] or 0), float(row["res_y"] or 0)),
        )
        reports.append(report)
        if row["error"]:
            continue
        crs = CRS.from_wkt(row["crs"])
        report.crs = crs.to_string()
        chosen = band_indexes(bands, str(row["band_names"]).split("|"), row["path"])
        bounds = (row["left"], row["bottom"], row["right"], row["top"])
        footprint = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
        if not _touches(footprint, grid):
            report.status, report.reason = "skipped", "does not touch the extent"
            continue
        touching.append((report, footprint, chosen))
        crops[report.path] = preview_bounds(bounds, report.resolution, crs, grid)
    # Tiles that touch the extent are still "failed" with no reason until they are read below.
    unreadable = [r for r in reports if r.status == "failed" and r.reason]
    if strict and unreadable:
        bad = [f"{Path(r.path).name}: {r.reason}" for r in unreadable]
        raise InputFormatError(
            f"imagery: {len(bad)} tile(s) failed and --strict is on ({'; '.join(bad[:3])}); "
            "fix them, remove them from imagery.paths, or run without --strict"
        )

    # Tiles much coarser than the grid's pixels only fill gaps; then newest acquisition first,
    # then undated tiles; path order within each group.
    coarse = [_coarse(report, grid) for report, _, _ in touching]
    order = sorted(
        range(len(touching)),
        key=lambda k: (
            coarse[k],
            touching[k][0].acquired is None,
            _neg_date(touching[k][0].acquired),
            k,
        ),
    )
    layers: list[_Layer] = []

    def stats(k: int) -> tuple[TileSource, float, np.ndarray | None, float] | Exception:
        report, _, chosen = touching[k]
        try:
            return _scene_stats(
                Path(report.path), chosen, grid, params, dehaze, store, crops[report.path]
            )
        except (RasterioError, OSError, InputFormatError) as err:
            return err

    # Every tile's preview at once: GDAL reads and decodes outside the GIL.
    with ThreadPoolExecutor(max_workers=max(1, min(len(order), os.cpu_count() or 1))) as pool:
        scenes = dict(zip(order, pool.map(stats, order), strict=True))
    for k in order:
        report, footprint, chosen = touching[k]
        path = Path(report.path)
        result = scenes[k]
        if isinstance(result, Exception):
            err = result
            # Truncated files often open fine and fail on the first pixels read.
            reason = str(err).splitlines()[0]
            report.reason = reason if isinstance(err, EmptyTileError) else f"unreadable: {reason}"
            if strict:
                raise InputFormatError(
                    f"{path}: {report.reason}; --strict is on: fix or remove the file"
                ) from None
            continue
        tile, score, light, nonfinite = result
        if nonfinite > 0:
            said = (
                f"{path.name}: {nonfinite:.2%} of its pixels are not finite (+-inf or NaN) and "
                "are read as nodata; set a nodata value when exporting it"
            )
            report.note = f"{report.note}; {said}" if report.note else said
        report.scale = list(tile.scale)
        report.haze_score = round(score, 4)
        report.dehazed = light is not None
        if light is not None:
            report.airlight = [round(float(v), 4) for v in light]
        source = LayerSource(
            file_identity(path),
            tuple(chosen),
            tile.scale,
            tile.opaque,
            None if light is None else tuple(float(v) for v in light),
        )
        layers.append(_tile_on_grid(tile, grid, footprint, light, params, source))
        report.status = "used"

    if not layers:
        failed = [r for r in reports if r.status == "failed"]
        where = f"{[round(v) for v in grid.bounds]} ({grid.crs.to_string()})"
        if failed:
            detail = "; ".join(f"{Path(r.path).name}: {r.reason}" for r in failed[:3])
            raise NoCoverageError(
                f"imagery: no usable tile for the extent {where}: {len(failed)} of "
                f"{len(paths)} failed ({detail}); fix or replace those files"
            )
        raise NoCoverageError(
            f"imagery: none of the {len(paths)} tile(s) in imagery.paths touches the extent "
            f"{where}; check imagery.paths and extent"
        )
    mosaic, sources = _mosaic(layers, grid, len(bands))
    y, x = grid.pixel_coords()
    image = xr.DataArray(
        mosaic,
        dims=("band", "y", "x"),
        coords={"band": list(bands), "y": y, "x": x},
        name="imagery",
        attrs={"crs": grid.crs.to_string()},
    )
    return Imagery(image, reports, sources)
