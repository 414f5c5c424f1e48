"""Dark-channel-prior dehazing (He, Sun & Tang 2009) on numpy arrays.

Images are float32 ``(band, y, x)`` in [0, 1] with NaN for nodata. NaN pixels never take part:
the dark channel treats them as bright (they cannot win a minimum), the guided filter uses
mask-normalised box means, and they stay NaN in the result.

The atmospheric light is a *scene* property: :func:`atmospheric_light` is computed once per
scene, and :func:`dehaze_with_light` only uses local filters, so a chunked caller gets the same
result as a whole-array call when its chunks overlap by :func:`halo` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class DehazeParams:
    """Parameters of the dark channel prior.

    Attributes:
        patch: side of the minimum filter of the dark channel, in pixels (odd).
        omega: fraction of haze removed (1 = all); < 1 keeps depth cues and avoids over-correction.
        t0: lower bound of the transmission, against noise blow-up in dense haze.
        radius: radius of the guided filter's box, in pixels.
        eps: regularisation of the guided filter (smaller follows edges more closely).
        top_fraction: share of the brightest dark-channel pixels that define the airlight.
    """

    patch: int = 15
    omega: float = 0.95
    t0: float = 0.1
    radius: int = 20
    eps: float = 1e-3
    top_fraction: float = 0.001


def halo(params: DehazeParams) -> int:
    """Pixels of overlap a chunk needs so that chunked dehazing equals the whole-array result.

    The dark channel's minimum filter reaches ``patch // 2``; the guided filter applies two box
    filters of ``radius`` in sequence.
    """
    return params.patch // 2 + 2 * params.radius


def _min_filter(a: np.ndarray, size: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    # Replicated borders make the minimum at an image edge use only real pixels.
    return cv2.erode(a, kernel, borderType=cv2.BORDER_REPLICATE)


def _box(a: np.ndarray, radius: int) -> np.ndarray:
    # Unnormalised sums with zero padding: divided by a box of the mask, they give the mean of the
    # valid pixels inside the image, identical for any chunking with enough halo.
    k = 2 * radius + 1
    return cv2.boxFilter(
        a, ddepth=-1, ksize=(k, k), normalize=False, borderType=cv2.BORDER_CONSTANT
    )


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Per-pixel minimum over bands, then a ``patch``-wide minimum filter; NaN counts as 1."""
    low = np.nanmin(np.where(np.isnan(image), np.float32(1.0), image), axis=0)
    return _min_filter(low.astype(np.float32, copy=False), patch)


def atmospheric_light(image: np.ndarray, params: DehazeParams = DehazeParams()) -> np.ndarray:
    """Airlight: mean colour of the brightest ``top_fraction`` of the dark channel, per scene."""
    valid = ~np.isnan(image).any(axis=0)
    if not valid.any():
        return np.ones(image.shape[0], dtype=np.float32)
    dark = dark_channel(image, params.patch)[valid]
    threshold = light_threshold(dark, params.top_fraction)
    return image[:, valid][:, dark >= threshold].mean(axis=1, dtype=np.float64).astype(np.float32)


def light_threshold(dark_valid: np.ndarray, top_fraction: float) -> float:
    """Dark-channel value above which pixels define the airlight.

    A threshold, not an index set, so that ties are resolved the same way whether the scene is
    held whole or reduced chunk by chunk.
    """
    n = max(1, round(dark_valid.size * top_fraction))
    return float(np.partition(dark_valid, dark_valid.size - n)[dark_valid.size - n])


def haze_score(image: np.ndarray, patch: int = 15) -> float:
    """Median of the dark channel over valid pixels: near 0 for clear scenes, high for hazy ones.

    Clear land surfaces have a dark pixel (shadow, vegetation, water) in almost every patch; haze
    adds airlight everywhere and lifts that minimum.
    """
    valid = ~np.isnan(image).any(axis=0)
    if not valid.any():
        return 0.0
    return float(np.median(dark_channel(image, patch)[valid]))


def guided_filter(
    guide: np.ndarray, src: np.ndarray, valid: np.ndarray, radius: int, eps: float
) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` along ``guide`` (He et al. 2010), valid pixels only."""
    w = valid.astype(np.float32)
    g = np.where(valid, guide, 0).astype(np.float32)
    p = np.where(valid, src, 0).astype(np.float32)
    n = np.maximum(_box(w, radius), 1e-6)
    mean_g = _box(g, radius) / n
    mean_p = _box(p, radius) / n
    cov_gp = _box(g * p, radius) / n - mean_g * mean_p
    var_g = _box(g * g, radius) / n - mean_g * mean_g
    a = cov_gp / (var_g + eps)
    b = mean_p - a * mean_g
    return (_box(a * w, radius) / n) * guide + _box(b * w, radius) / n


def dehaze_with_light(
    image: np.ndarray, light: np.ndarray, params: DehazeParams = DehazeParams()
) -> np.ndarray:
    """Dehaze ``image`` (band, y, x) given the scene's airlight; local filters only.

    Returns float32 in [0, 1] with NaN where the input was NaN.
    """
    image = image.astype(np.float32, copy=False)
    light = np.maximum(np.asarray(light, dtype=np.float32), 1e-3)[:, None, None]
    valid = ~np.isnan(image).any(axis=0)
    t_raw = 1.0 - params.omega * dark_channel(image / light, params.patch)
    guide = np.where(valid, image.mean(axis=0), 0).astype(np.float32)
    t = guided_filter(guide, t_raw, valid, params.radius, params.eps)
    t = np.clip(t, params.t0, 1.0)
    out = (image - light) / t + light
    out = np.clip(out, 0.0, 1.0)
    out[:, ~valid] = np.nan
    return out


def dehaze(image: np.ndarray, params: DehazeParams = DehazeParams()) -> np.ndarray:
    """Dehaze a whole scene: estimate its airlight, then :func:`dehaze_with_light`."""
    return dehaze_with_light(image, atmospheric_light(image, params), params)
