"""Dehaze a raster file into another, keeping its georeferencing, dtype, nodata and profile.

Any raster GDAL reads: GeoTIFF (any size: read and dehazed in overlapping dask chunks, written
window by window), PNG, JPEG (through a memory copy, since those drivers only copy). Values are
scaled to [0, 1] by the data's white level (:mod:`urbanfusion.preprocess.scaling`), so haze keeps
its floor whatever the storage type, and scaled back the same way, so untouched values come back
exactly. Bands outside ``bands`` (an alpha band, near infrared) are copied unchanged. The output
is written to a temporary name and renamed, so a failed run leaves nothing behind.

The airlight is a run's (:mod:`.scene_preview`): from one decimated read of the scene at a grid
pixel's size (``pixel_size_m``, the default grid's 7.8 m unless told), and the chunks overlap by
the same halo as a run's, so the output is what a run feeds the model, at the file's resolution.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # what a failed GDAL copy raises (no RasterioError)
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.shutil import copy as raster_copy

from urbanfusion.pipeline.atomic import ensure_room, replacing
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError, write_failure
from urbanfusion.pipeline.windows import ChunkGrid, Window
from urbanfusion.preprocess.dehaze import DehazeParams, dehaze_in_strips, haze_strength
from urbanfusion.preprocess.scaling import white_level
from urbanfusion.preprocess.scene_preview import DEFAULT_PIXEL_M, preview_light, read_preview

if TYPE_CHECKING:
    import dask.array as da

CHUNK = 2048
_WRITABLE = {"GTiff"}  # drivers that write window by window; others go through a memory copy


@dataclass(frozen=True)
class DehazeResult:
    """What was done to a file."""

    airlight: list[float]
    strength: float
    haze_score: float


def working_dtype(dtype: str) -> type[np.floating]:
    """The float a raster of ``dtype`` is scaled and scaled back in.

    float32 for integers of up to 16 bits: 24 bits of mantissa bring every such value back
    exactly, at half the memory traffic of float64 (a 2,048 px scene's arrays are 50 MB, not
    100). float64 for wider integers and floats, whose values float32 would round.
    """
    kind = np.dtype(dtype)
    small = np.issubdtype(kind, np.integer) and kind.itemsize <= 2
    return np.float32 if small else np.float64


def _read_block(path: Path, band: tuple[int, ...], chunk: Window) -> np.ndarray:
    # The dataset mask, not per-band masks: a 0 in one band of a valid pixel is data.
    window = chunk.to_rasterio()
    with rasterio.open(path) as src:
        data = src.read(list(band), window=window).astype(working_dtype(src.dtypes[0]))
        data[:, src.dataset_mask(window=window) == 0] = np.nan
    return data


def _scene_range(src: rasterio.DatasetReader, bands: list[int]) -> tuple[float, float]:
    """The raw values mapped to 0 and 1: 0 (or a negative minimum) and the white level."""
    if src.dtypes[0] == "uint8":
        return 0.0, 255.0
    lo, hi = np.inf, -np.inf
    for _, window in src.block_windows(1):
        block = src.read(bands, window=window)[:, src.dataset_mask(window=window) > 0]
        block = block[np.isfinite(block)]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return _range_from(src, bands[0], lo, hi)


def _range_of(src: rasterio.DatasetReader, data: np.ndarray, band: int) -> tuple[float, float]:
    """:func:`_scene_range` of pixels already read (NaN where not valid)."""
    if src.dtypes[0] == "uint8":
        return 0.0, 255.0
    valid = data[np.isfinite(data)]
    if not valid.size:
        return 0.0, 1.0
    return _range_from(src, band, float(valid.min()), float(valid.max()))


def _range_from(
    src: rasterio.DatasetReader, band: int, lo: float, hi: float
) -> tuple[float, float]:
    if not np.isfinite(lo):
        return 0.0, 1.0
    nbits = src.tags(band, ns="IMAGE_STRUCTURE").get("NBITS")
    # The maximum, not a percentile: every value must come back, none clipped.
    level = white_level(src.dtypes[0], hi, nbits)
    return min(0.0, lo), max(level, hi)


def dehaze_raster(
    src_path: Path,
    dst_path: Path,
    bands: list[int] | None = None,
    params: DehazeParams = DehazeParams(),
    pixel_size_m: float | None = None,
) -> DehazeResult:
    """Dehaze ``src_path`` into ``dst_path`` (same driver, profile, georeferencing, nodata).

    ``pixel_size_m``: the grid pixel a run would preview the scene at for its airlight (None:
    the default grid's, :data:`~.scene_preview.DEFAULT_PIXEL_M`; a raster without a CRS is
    previewed at up to 1,024 px a side).

    Raises:
        InputNotFoundError: the input does not exist.
        InputFormatError: GDAL cannot read it, or a requested band is missing.
    """
    if not src_path.is_file():
        raise InputNotFoundError(f"{src_path} does not exist; check the path")
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise InputFormatError(
            f"{dst_path} is the input itself; write the dehazed raster to another file"
        )
    with warnings.catch_warnings():
        # PNG and JPEG have no georeferencing to keep; that is not worth a warning here.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return _dehaze_raster(src_path, dst_path, bands, params, pixel_size_m or DEFAULT_PIXEL_M)


def _dehaze_raster(
    src_path: Path,
    dst_path: Path,
    bands: list[int] | None,
    params: DehazeParams,
    pixel_size_m: float,
) -> DehazeResult:
    try:
        src = rasterio.open(src_path)
    except RasterioError as err:
        raise InputFormatError(f"{src_path}: GDAL cannot read it ({err}); give a raster") from None
    try:
        with src:
            return _dehaze_open(src, src_path, dst_path, bands, params, pixel_size_m)
    except RasterioError as err:
        # A truncated file opens fine and fails on the first block past its end.
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputFormatError(
            f"{src_path}: cannot be read to the end ({first}); is the file truncated?"
        ) from None


def _dehaze_open(
    src: rasterio.DatasetReader,
    src_path: Path,
    dst_path: Path,
    bands: list[int] | None,
    params: DehazeParams,
    pixel_size_m: float,
) -> DehazeResult:
    bands = bands or list(range(1, min(3, src.count) + 1))
    if max(bands) > src.count or min(bands) < 1:
        raise InputFormatError(
            f"{src_path}: bands {bands} asked for, the file has {src.count}; use --bands"
        )
    preview = read_preview(src, tuple(bands), pixel_size_m)
    if src.height <= CHUNK and src.width <= CHUNK:
        # One chunk: read it whole once (beside the preview) and dehaze it in numpy; no dask.
        data = src.read(bands).astype(working_dtype(src.dtypes[0]))  # as the chunked path
        np.copyto(data, np.nan, where=src.dataset_mask()[None] == 0)
        lo, hi = _range_of(src, data, bands[0])
        score, light = preview_light(preview.scaled(lo, hi), params)
        data -= lo
        data /= hi - lo
        out = dehaze_in_strips(data.astype(np.float32, copy=False), light, params)
        blocks: Iterator[tuple[Window, np.ndarray]] = iter([(Window(0, 0, *out.shape[1:]), out)])
        whole: Callable[[], np.ndarray] = lambda: out  # noqa: E731
    else:
        lo, hi = _scene_range(src, bands)
        score, light = preview_light(preview.scaled(lo, hi), params)
        out_dask = _dehaze_chunked(src_path, bands, lo, hi, light, params, src)
        blocks, whole = _blocks(out_dask), out_dask.compute
    profile = src.profile
    # The user's usual mode, as a raster written in place would have.
    with replacing(dst_path, mode=None) as tmp:
        # An uncompressed GeoTIFF's size is known: a full disk is then found before GDAL writes
        # (it prints libtiff's complaints on the way, then fails). PNG and JPEG compress.
        known = src.driver == "GTiff" and not profile.get("compress")
        raw = src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
        ensure_room(dst_path, raw if known else 0)
        try:
            _write(src, tmp, blocks, whole, bands, lo, hi, profile)
        except (RasterioError, CPLE_BaseError) as err:
            # GDAL says "Write failed" on a full disk, which would pass for a truncated input.
            failure = write_failure(err, dst_path)
            if failure.errno == errno.ENOSPC:
                raise failure from None
            raise
    return DehazeResult([float(v) for v in light], haze_strength(light, params), score)


def _dehaze_chunked(
    src_path: Path,
    bands: list[int],
    lo: float,
    hi: float,
    light: np.ndarray,
    params: DehazeParams,
    src: rasterio.DatasetReader,
) -> da.Array:
    """The lazily dehazed raster, in chunks of :data:`CHUNK` overlapping by a run's halo."""
    import dask.array as da
    from dask.delayed import delayed

    from urbanfusion.preprocess.dehaze_dask import dehaze_dask

    chunks = ChunkGrid(src.height, src.width, CHUNK)
    rows, cols = chunks.shape
    blocks = [
        [
            da.from_delayed(
                delayed(_read_block)(src_path, tuple(bands), chunks.window(r, c)),
                (len(bands), *chunks.window(r, c).shape),
                dtype=working_dtype(src.dtypes[0]),
            )
            for c in range(cols)
        ]
        for r in range(rows)
    ]
    scaled = ((da.block(blocks) - lo) / (hi - lo)).astype(np.float32)
    return dehaze_dask(scaled, light, params)


def _to_dtype(
    values: np.ndarray,
    lo: float,
    hi: float,
    dtype: str,
    nodata: float | None,
    kept: np.ndarray | None = None,
) -> np.ndarray:
    """Scale back to ``dtype``; ``kept`` are the untouched bands of the same pixels."""
    # In place: a raster is hundreds of MB here.
    back = values.astype(working_dtype(dtype))
    back *= hi - lo
    back += lo
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        np.rint(back, out=back)
        np.minimum(back, info.max, out=back)  # NaN stays NaN, as with np.clip
        np.maximum(back, info.min, out=back)
        if nodata is not None:
            # A valid pixel darkened to nodata in every band would vanish: keep it a step off.
            vanishing = (back == nodata).all(axis=0)
            if kept is not None:
                vanishing &= (kept == nodata).all(axis=0)
            back[0][vanishing] = nodata + (1 if nodata < info.max else -1)
    np.copyto(back, nodata if nodata is not None else 0, where=np.isnan(back))
    return back.astype(dtype)


def _write(
    src: rasterio.DatasetReader,
    path: Path,
    blocks: Iterator[tuple[Window, np.ndarray]],
    whole: Callable[[], np.ndarray],
    bands: list[int],
    lo: float,
    hi: float,
    profile: dict[str, object],
) -> None:
    dtype, nodata = src.dtypes[0], src.nodata
    others = [b for b in range(1, src.count + 1) if b not in bands]
    if src.driver in _WRITABLE:
        with rasterio.open(path, "w", **profile) as dst:
            _copy_meta(src, dst)
            for chunk, block in blocks:
                window = chunk.to_rasterio()
                kept = src.read(others, window=window) if others else None
                dst.write(_to_dtype(block, lo, hi, dtype, nodata, kept), bands, window=window)
                if kept is not None:
                    dst.write(kept, others, window=window)
            if MaskFlags.per_dataset in src.mask_flag_enums[0]:
                dst.write_mask(src.dataset_mask())  # an internal mask stays a mask
        return
    # PNG and JPEG only copy: build the result in memory, then let GDAL copy it out.
    data = src.read()
    kept = data[[b - 1 for b in others]] if others else None
    data[[b - 1 for b in bands]] = _to_dtype(whole(), lo, hi, dtype, nodata, kept)
    mem_profile = {**profile, "driver": "GTiff"}
    for key in ("quality", "zlevel", "worldfile"):
        mem_profile.pop(key, None)
    with MemoryFile() as memory, memory.open(**mem_profile) as staged:
        staged.write(data)
        _copy_meta(src, staged)
        raster_copy(staged, path, driver=src.driver)


def _copy_meta(src: rasterio.DatasetReader, dst: rasterio.io.DatasetWriter) -> None:
    dst.update_tags(**src.tags())
    for i in range(1, src.count + 1):
        if src.descriptions[i - 1]:
            dst.set_band_description(i, src.descriptions[i - 1])
    dst.colorinterp = src.colorinterp


def _blocks(arr: da.Array) -> Iterator[tuple[Window, np.ndarray]]:
    """Computed chunks of ``arr`` with their windows, a row of chunks at a time.

    The windows come from ``arr``'s own chunks: ``map_overlap`` may rechunk when the halo is
    wider than a chunk, so they need not be the chunks the raster was read in.
    """
    tops = np.cumsum((0, *arr.chunks[1]))[:-1]
    from dask.base import compute

    lefts = np.cumsum((0, *arr.chunks[2]))[:-1]
    delayed = arr.to_delayed()
    for i, top in enumerate(tops):
        row = compute(*[delayed[0, i, j] for j in range(len(lefts))])
        for left, block in zip(lefts, row, strict=True):
            yield Window(int(top), int(left), *block.shape[1:]), block
