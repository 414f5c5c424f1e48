"""Plain RGB pictures (JPEG, PNG, ...) as arrays, read with OpenCV.

Labelled scenes and URFC area images carry no georeferencing, so they need no rasterio.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from urbanfusion.pipeline.errors import InputFormatError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def read_rgb_uint8(path: Path, side: int | None = None) -> np.ndarray:
    """``(3, height, width)`` uint8, RGB order; resized to ``side`` x ``side`` if given.

    A quarter of :func:`read_rgb`'s memory, for callers that hold thousands of images.

    Raises:
        InputFormatError: the file cannot be decoded as an image.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputFormatError(f"{path}: cannot read this image; remove or replace it")
    if side is not None:
        # Area averaging: the right filter for shrinking, and exact for the same size.
        bgr = cv2.resize(bgr, (side, side), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.moveaxis(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), -1, 0))


def read_rgb(path: Path, side: int | None = None) -> np.ndarray:
    """``(3, height, width)`` float32 in [0, 1], RGB order; resized to ``side`` x ``side`` if given.

    Raises:
        InputFormatError: the file cannot be decoded as an image.
    """
    return read_rgb_uint8(path, side).astype(np.float32) / 255.0
