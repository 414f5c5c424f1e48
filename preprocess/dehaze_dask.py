"""Chunked dehazing on dask arrays, equal to the whole-array result of :mod:`.dehaze`.

The airlight is one per scene, given (per-chunk airlight makes seams; a run and ``urbanfusion
dehaze`` take it from the scene's preview, :mod:`.scene_preview`); the dark channel and guided
filter run per chunk with an overlap of :func:`.dehaze.halo`.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from urbanfusion.preprocess.dehaze import DehazeParams, dehaze_with_light, halo


def _spatial_depth(pixels: int) -> dict[int, int]:
    return {0: 0, 1: pixels, 2: pixels}


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
