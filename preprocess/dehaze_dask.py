"""Chunked dehazing on dask arrays, equal to the whole-array result of :mod:`.dehaze`.

The airlight is a global reduction over the scene (per-chunk airlight makes seams); the dark
channel and guided filter run per chunk with an overlap of :func:`.dehaze.halo`.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from urbanfusion.preprocess.dehaze import DehazeParams, dark_channel, dehaze_with_light, halo


def _spatial_depth(pixels: int) -> dict[int, int]:
    return {0: 0, 1: pixels, 2: pixels}


def _min_filter_block(block: np.ndarray, patch: int) -> np.ndarray:
    return dark_channel(block[None], patch)


def _count_and_top(dark: np.ndarray, valid: np.ndarray, cap: int) -> tuple[int, np.ndarray]:
    values = dark[valid]
    if values.size > cap:
        values = np.partition(values, values.size - cap)[values.size - cap :]
    return int(valid.sum()), values


def dark_channel_dask(image: da.Array, patch: int) -> da.Array:
    """Dark channel ``(y, x)`` of a ``(band, y, x)`` dask array (NaN counts as 1, as in numpy)."""
    low = da.where(da.isnan(image), np.float32(1.0), image).min(axis=0).astype(np.float32)
    return da.map_overlap(
        _min_filter_block, low, depth=patch // 2, boundary="none", dtype=np.float32, patch=patch
    )


def scene_light(image: da.Array, params: DehazeParams = DehazeParams()) -> np.ndarray:
    """Airlight of a whole scene from a dask array, equal to ``dehaze.atmospheric_light``.

    Two passes over the data. The first counts valid pixels and keeps each chunk's brightest
    dark-channel values, at most as many as the airlight can use (``top_fraction`` of the whole
    array), so their union holds the scene's brightest; the second averages the chosen pixels.
    """
    valid = ~da.isnan(image).any(axis=0)
    dark = dark_channel_dask(image, params.patch)
    valid = valid.rechunk(dark.chunks)
    cap = max(1, round(valid.size * params.top_fraction))
    parts = dask.compute(
        *[
            dask.delayed(_count_and_top)(d, v, cap)
            for d, v in zip(dark.to_delayed().ravel(), valid.to_delayed().ravel(), strict=True)
        ]
    )
    n_valid = sum(n for n, _ in parts)
    if n_valid == 0:
        return np.ones(image.shape[0], dtype=np.float32)
    n = max(1, round(n_valid * params.top_fraction))
    tops = np.concatenate([t for _, t in parts])
    threshold = float(np.partition(tops, tops.size - n)[tops.size - n])
    selected = valid & (dark >= threshold)
    sums = da.where(selected[None], image, 0).sum(axis=(1, 2), dtype=np.float64)
    total, k = dask.compute(sums, selected.sum())
    return (np.asarray(total, dtype=np.float64) / max(int(k), 1)).astype(np.float32)


def dehaze_dask(
    image: da.Array, light: np.ndarray, params: DehazeParams = DehazeParams()
) -> da.Array:
    """Lazily dehaze a ``(band, y, x)`` dask array with a given scene airlight."""
    if image.chunks[0] != (image.shape[0],):
        image = image.rechunk({0: -1})
    return da.map_overlap(
        dehaze_with_light,
        image,
        depth=_spatial_depth(halo(params)),
        boundary="none",
        dtype=np.float32,
        light=np.asarray(light, dtype=np.float32),
        params=params,
    )
