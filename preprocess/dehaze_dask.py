"""Chunked dehazing on dask arrays, equal to the whole-array result of :mod:`preprocess.dehaze`.

The airlight is a global reduction over the scene (per-chunk airlight makes seams); the dark
channel and guided filter run per chunk with an overlap of :func:`preprocess.dehaze.halo`.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from preprocess.dehaze import DehazeParams, dark_channel, dehaze_with_light, halo


def _spatial_depth(pixels: int) -> dict[int, int]:
    return {0: 0, 1: pixels, 2: pixels}


def _min_filter_block(block: np.ndarray, patch: int) -> np.ndarray:
    return dark_channel(block[None], patch)


def _top_values(dark: np.ndarray, valid: np.ndarray, n: int) -> np.ndarray:
    values = dark[valid]
    if values.size <= n:
        return values
    return np.partition(values, values.size - n)[values.size - n :]


def dark_channel_dask(image: da.Array, patch: int) -> da.Array:
    """Dark channel ``(y, x)`` of a ``(band, y, x)`` dask array (NaN counts as 1, as in numpy)."""
    low = da.where(da.isnan(image), np.float32(1.0), image).min(axis=0).astype(np.float32)
    return da.map_overlap(
        _min_filter_block, low, depth=patch // 2, boundary="none", dtype=np.float32, patch=patch
    )


def scene_light(image: da.Array, params: DehazeParams = DehazeParams()) -> np.ndarray:
    """Airlight of a whole scene from a dask array, equal to ``dehaze.atmospheric_light``.

    Two passes: the count of valid pixels fixes how many brightest dark-channel pixels to take;
    the second pass keeps each chunk's top values (at most that many) to find the exact threshold.
    """
    valid = ~da.isnan(image).any(axis=0)
    n_valid = int(valid.sum().compute())
    if n_valid == 0:
        return np.ones(image.shape[0], dtype=np.float32)
    n = max(1, round(n_valid * params.top_fraction))
    dark = dark_channel_dask(image, params.patch)
    blocks = [
        dask.delayed(_top_values)(d, v, n)
        for d, v in zip(
            dark.to_delayed().ravel(), valid.rechunk(dark.chunks).to_delayed().ravel(), strict=True
        )
    ]
    tops = np.concatenate(dask.compute(*blocks))
    # Every chunk kept its own top n, so the union holds the scene's top n.
    threshold = float(np.partition(tops, tops.size - n)[tops.size - n])
    selected = valid & (dark >= threshold)
    sums = da.where(selected[None], image, 0).sum(axis=(1, 2))
    count = selected.sum()
    total, k = dask.compute(sums, count)
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
