"""Per-cell image chips: the pixel grid reshaped, no windows, plus the model's image inputs.

The pixel grid nests ``chip_px`` pixels per cell side and imagery chunks hold whole cells, so
chips are a reshape of each chunk: ``(band, r*chip, c*chip) -> (r, c, band, chip, chip)``.
"""

from __future__ import annotations

import warnings

import numpy as np

# A cell whose chip has less valid (non-NaN in every band) area than this has no image.
MIN_IMAGE_COVERAGE = 0.5


def to_chips(block: np.ndarray, chip: int) -> np.ndarray:
    """Reshape ``(band, r*chip, c*chip)`` to ``(r, c, band, chip, chip)``."""
    bands, h, w = block.shape
    r, c = h // chip, w // chip
    return block.reshape(bands, r, chip, c, chip).transpose(1, 3, 0, 2, 4)


def has_image(chips: np.ndarray) -> np.ndarray:
    """Whether each chip ``(n, band, chip, chip)`` has enough valid pixels to count as imagery."""
    valid = ~np.isnan(chips).any(axis=1)
    return valid.mean(axis=(1, 2)) >= MIN_IMAGE_COVERAGE


def image_inputs(
    chips: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise chips ``(n, band, chip, chip)`` in [0, 1] with NaN for nodata.

    Returns:
        The normalised chips (nodata pixels at the band mean, i.e. 0; chips of cells without an
        image all 0) and ``has_image`` (n,) as float32 0/1.
    """
    chips = np.asarray(chips, dtype=np.float32)
    with_image = has_image(chips)
    mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(std, dtype=np.float32)[None, :, None, None]
    out = np.nan_to_num((chips - mean) / std, nan=0.0)
    out[~with_image] = 0.0
    return out.astype(np.float32, copy=False), with_image.astype(np.float32)


def thumbnails(chips: np.ndarray, px: int) -> np.ndarray:
    """Chips ``(r, c, band, chip, chip)`` in [0, 1] as one RGBA image ``(r*px, c*px, 4)`` uint8.

    Each chip is averaged down to ``px`` x ``px`` (``px`` divides the chip size); the first three
    bands are red, green and blue; alpha is 0 where a pixel has no valid value.
    """
    r, c, bands, size, _ = chips.shape
    k = size // px
    rgb = chips[:, :, :3].reshape(r, c, min(bands, 3), px, k, px, k)
    with warnings.catch_warnings():
        # The mean of the valid pixels; none valid gives NaN ("empty slice"): transparent.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(rgb, axis=(4, 6)) if np.isnan(rgb).any() else rgb.mean(axis=(4, 6))
    if mean.shape[2] < 3:  # one band: grey
        mean = np.repeat(mean[:, :, :1], 3, axis=2)
    image = mean.transpose(0, 3, 1, 4, 2).reshape(r * px, c * px, 3)
    alpha = np.where(np.isnan(image).any(axis=2), 0, 255).astype(np.uint8)
    rgb8 = np.clip(np.nan_to_num(image) * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.concatenate([rgb8, alpha[:, :, None]], axis=2)


def thumbnail_px(n_rows: int, n_cols: int, chip: int, side: int = 1024) -> int:
    """Pixels per cell for a thumbnail of at most ``side`` pixels a side (a divisor of ``chip``)."""
    fits = [p for p in range(1, chip + 1) if chip % p == 0 and max(n_rows, n_cols) * p <= side]
    return max(fits, default=1)
