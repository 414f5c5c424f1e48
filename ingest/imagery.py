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
from typing import Any, Literal, NamedTuple

import dask.array as da
import numpy as np
import xarray as xr
from affine import Affine
from dask.delayed import delayed
from pyproj import CRS
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from urbanfusion.ingest.scene_stats import EmptyTileError, SceneStats, preview_bounds, scene_stats
from urbanfusion.ingest.tile_index import tile_index
from urbanfusion.ingest.tile_read import TileSource, read_window
from urbanfusion.pipeline.errors import InputFormatError, NoCoverageError
from urbanfusion.pipeline.fingerprint import file_identity
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.remote_files import InputPath, input_path
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.pipeline.windows import Window
from urbanfusion.preprocess.dehaze import (
    DehazeParams,
    dehaze_with_light,
    halo,
)

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
# A tile whose pixels are more than this many times the grid's is used only to fill gaps.
COARSE_FACTOR = 4.0


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
        missing = np.isnan(out).any(axis=0, keepdims=True)
        if not missing.any():
            break
        np.copyto(out, function(*args), where=missing)  # masked copy, no gather
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
        block = delayed(read_first_valid)([layer.reads[(r, c)] for layer in inside])
        blocks[r].append(da.from_delayed(block, shape, dtype=np.float32))
    return da.block(blocks), sources


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


class _Touching(NamedTuple):
    """A readable tile whose footprint touches the extent, with what reading it needs."""

    report: TileReport
    footprint: tuple[float, ...]  # in the grid's CRS
    bands: tuple[int, ...]
    crop: tuple[float, float, float, float] | None  # what its preview reads (preview_bounds)


def _index_tiles(
    paths: list[InputPath], grid: CityGrid, bands: list[int | str]
) -> tuple[list[TileReport], list[_Touching]]:
    """A report per tile from the tile index, and the tiles that touch the extent.

    Tiles that touch it stay "failed" without a reason until they are read.
    """
    reports: list[TileReport] = []
    touching: list[_Touching] = []
    for record in tile_index(paths).to_dict("records"):
        # The index's columns: text, numbers, or None where a tile has none (a failed one).
        row: dict[str, Any] = {str(k): None if _missing(v) else v for k, v in record.items()}
        report = TileReport(
            path=str(row["path"]),
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
        crs = CRS.from_wkt(str(row["crs"]))
        report.crs = crs.to_string()
        chosen = band_indexes(bands, str(row["band_names"]).split("|"), report.path)
        left, bottom, right, top = (float(row[k]) for k in ("left", "bottom", "right", "top"))
        bounds = (left, bottom, right, top)
        footprint = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
        if not _touches(footprint, grid):
            report.status, report.reason = "skipped", "does not touch the extent"
            continue
        crop = preview_bounds(bounds, report.resolution, crs, grid)
        touching.append(_Touching(report, footprint, chosen, crop))
    return reports, touching


def _mosaic_order(touching: list[_Touching], grid: CityGrid) -> list[int]:
    """The tiles' mosaic order, as indexes into ``touching``.

    Tiles much coarser than the grid's pixels only fill gaps; then newest acquisition first,
    then undated tiles; path order within each group.
    """
    coarse = [_coarse(t.report, grid) for t in touching]
    return sorted(
        range(len(touching)),
        key=lambda k: (
            coarse[k],
            touching[k].report.acquired is None,
            _neg_date(touching[k].report.acquired),
            k,
        ),
    )


def _all_scene_stats(
    tiles: list[_Touching],
    grid: CityGrid,
    params: DehazeParams,
    dehaze: str,
    store: ResultStore | None,
) -> list[SceneStats | Exception]:
    """Every tile's scene statistics at once (GDAL reads and decodes outside the GIL)."""

    def stats(tile: _Touching) -> SceneStats | Exception:
        try:
            return scene_stats(
                input_path(tile.report.path), tile.bands, grid, params, dehaze, store, tile.crop
            )
        except (RasterioError, OSError, InputFormatError) as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, min(len(tiles), os.cpu_count() or 1))) as pool:
        return list(pool.map(stats, tiles))


def _layer(
    tile: _Touching,
    scene: SceneStats,
    grid: CityGrid,
    params: DehazeParams,
) -> _Layer:
    """A used tile's lazy reads on the grid; its report says how it was read."""
    report, path = tile.report, input_path(tile.report.path)
    if scene.nonfinite > 0:
        said = (
            f"{path.name}: {scene.nonfinite:.2%} of its pixels are not finite (+-inf or NaN) "
            "and are read as nodata; set a nodata value when exporting it"
        )
        report.note = f"{report.note}; {said}" if report.note else said
    report.scale = list(scene.tile.scale)
    report.haze_score = round(scene.score, 4)
    report.dehazed = scene.light is not None
    if scene.light is not None:
        report.airlight = [round(float(v), 4) for v in scene.light]
    source = LayerSource(
        file_identity(path),
        tuple(tile.bands),
        scene.tile.scale,
        scene.tile.opaque,
        None if scene.light is None else tuple(float(v) for v in scene.light),
    )
    report.status = "used"
    return _tile_on_grid(scene.tile, grid, tile.footprint, scene.light, params, source)


def _no_coverage(reports: list[TileReport], n_paths: int, grid: CityGrid) -> NoCoverageError:
    """Why no tile could be used: the failed ones named, or none touching the extent."""
    failed = [r for r in reports if r.status == "failed"]
    where = f"{[round(v) for v in grid.bounds]} ({grid.crs.to_string()})"
    if failed:
        detail = "; ".join(f"{Path(r.path).name}: {r.reason}" for r in failed[:3])
        return NoCoverageError(
            f"imagery: no usable tile for the extent {where}: {len(failed)} of "
            f"{n_paths} failed ({detail}); fix or replace those files"
        )
    return NoCoverageError(
        f"imagery: none of the {n_paths} tile(s) in imagery.paths touches the extent "
        f"{where}; check imagery.paths and extent"
    )


def load_imagery(
    paths: list[InputPath],
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
    reports, touching = _index_tiles(paths, grid, bands)
    unreadable = [r for r in reports if r.status == "failed" and r.reason]
    if strict and unreadable:
        bad = [f"{Path(r.path).name}: {r.reason}" for r in unreadable]
        raise InputFormatError(
            f"imagery: {len(bad)} tile(s) failed and --strict is on ({'; '.join(bad[:3])}); "
            "fix them, remove them from imagery.paths, or run without --strict"
        )
    ordered = [touching[k] for k in _mosaic_order(touching, grid)]
    layers: list[_Layer] = []
    for tile, scene in zip(
        ordered, _all_scene_stats(ordered, grid, params, dehaze, store), strict=True
    ):
        if isinstance(scene, Exception):
            # Truncated files often open fine and fail on the first pixels read.
            reason = str(scene).splitlines()[0]
            tile.report.reason = (
                reason if isinstance(scene, EmptyTileError) else f"unreadable: {reason}"
            )
            if strict:
                raise InputFormatError(
                    f"{tile.report.path}: {tile.report.reason}; --strict is on: fix or remove "
                    "the file"
                ) from None
            continue
        layers.append(_layer(tile, scene, grid, params))
    if not layers:
        raise _no_coverage(reports, len(paths), grid)
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
