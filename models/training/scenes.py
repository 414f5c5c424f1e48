"""Folders of labelled scenes (one sub-folder per class), for image-encoder pre-training.

No weights can be downloaded, so the image encoder learns what ground looks like from labelled
scenes instead (e.g. RSSCN7). Images are read with OpenCV, resized to a square side and kept as
uint8; pre-training scales them to [0, 1] like a run's uint8 tiles. No torch here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanfusion.ingest.rgb_images import EXTENSIONS, read_rgb_uint8
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError


@dataclass
class Scenes:
    """Images ``(n, 3, side, side)`` uint8, their labels, the class names and the files.

    Kept as bytes: RSSCN7 at 128 px takes 103 MB this way, 413 MB as float32.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]


def load_scenes(folder: Path, side: int, classes: list[str] | None = None) -> Scenes:
    """Read every image under ``folder/<class>/``; ``classes`` fixes the order (else sorted).

    Raises:
        InputNotFoundError: the folder does not exist or holds no class sub-folder with images.
        InputFormatError: an image cannot be read, or the class sub-folders differ from ``classes``.
    """
    if not folder.is_dir():
        raise InputNotFoundError(f"scene folder {folder} does not exist; check the path")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if classes is None:
        classes = found
    elif set(found) != set(classes):
        raise InputFormatError(
            f"{folder}: class sub-folders {found} differ from the encoder's classes {classes}"
        )
    labels, paths = [], []
    for k, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() in EXTENSIONS:
                labels.append(k)
                paths.append(path)
    if not paths:
        raise InputNotFoundError(
            f"{folder}: no images in class sub-folders; expect {folder}/<class>/<image>.jpg"
        )
    images = np.empty((len(paths), 3, side, side), np.uint8)

    def read(i: int) -> None:
        images[i] = read_rgb_uint8(paths[i], side)

    # OpenCV decodes and resizes without holding the GIL: one thread per core reads them in
    # parallel, each into its own slot (the first unreadable file's error is raised).
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for _ in pool.map(read, range(len(paths))):
            pass
    return Scenes(images, np.asarray(labels, np.int64), list(classes), [str(p) for p in paths])


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: ``fraction`` of each class, chosen with ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        val[idx[: max(1, round(len(idx) * fraction))]] = True
    return val
