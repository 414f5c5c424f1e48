"""Raw pixel values to [0, 1]: by the sensor's white level, never by a scene's own range.

The dark-channel prior reads haze as a lifted floor of dark pixels. Stretching a scene between
its own low and high percentiles moves that floor to 0 and the haze with it, so a hazy tile
stored as uint16 or float32 would score as clear while its uint8 twin scores hazy. Dividing by
a white level (the full scale of the data's bit depth) keeps the floor where it is, so the same
picture gives the same values whatever type it is stored in.
"""

from __future__ import annotations

import numpy as np

# Full-scale values of the bit depths sensors store in integers: 8-bit up to 16-bit.
_INTEGER_LEVELS = tuple(float(2**bits - 1) for bits in range(8, 17))


def white_level(dtype: str, high: float, nbits: str | None = None) -> float:
    """The raw value that means full brightness.

    Args:
        dtype: the stored type ("uint8", "uint16", "int16", "float32", ...).
        high: the data's high end (its maximum or a high percentile), to find the bit depth
            actually used: 12-bit data in 16-bit words is common.
        nbits: the band's GDAL ``NBITS`` tag (``IMAGE_STRUCTURE`` domain), if the file has one.

    uint8 is always 255. Floats up to 1 are reflectance, so 1. Otherwise the smallest
    ``2**n - 1`` (8 <= n <= 16) at or above ``high``, and ``high`` itself beyond 16 bits.
    """
    if dtype == "uint8":
        return 255.0
    if nbits and nbits.isdigit() and 1 <= int(nbits) <= 32:
        return float(2 ** int(nbits) - 1)
    if not np.isfinite(high) or high <= 0:
        return 1.0 if np.issubdtype(np.dtype(dtype), np.floating) else 255.0
    if np.issubdtype(np.dtype(dtype), np.floating) and high <= 1.0:
        return 1.0
    return next((level for level in _INTEGER_LEVELS if high <= level), float(high))
