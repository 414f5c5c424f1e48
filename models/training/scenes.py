"""Folders of labelled scenes (one sub-folder per class), for image-encoder pre-training.

No weights can be downloaded, so the image encoder learns what ground looks like from labelled
scenes instead (e.g. RSSCN7). Images are read with OpenCV, resized to a square side and kept as
uint8; pre-training scales them to [0, 1] like a run's uint8 tiles. No torch here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from urbanfusion.ingest.rgb_images import EXTENSIONS, read_rgb_uint8
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError


@dataclass(frozen=True)
class LabelSpace:
    """One data set's classes: its name (the folder's), class names, and where they start.

    Several folders pre-train one encoder with a head each: a scene is only ever scored among
    the classes of its own data set (AID's 30 and RSSCN7's 7 do not share a label space).
    """

    name: str
    classes: tuple[str, ...]
    offset: int

    @property
    def columns(self) -> slice:
        """The columns of this space in the concatenated class list."""
        return slice(self.offset, self.offset + len(self.classes))


@dataclass
class Scenes:
    """Images ``(n, 3, side, side)`` uint8, their labels, the class names and the files.

    ``labels`` index ``classes``, the class names of every label space one after another;
    ``space`` is each scene's :class:`LabelSpace` index. Kept as bytes: RSSCN7 at 128 px takes
    103 MB this way, 413 MB as float32.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    spaces: list[LabelSpace] = field(default_factory=list)
    space: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if not self.spaces:  # one folder: one label space
            self.spaces = [LabelSpace("scenes", tuple(self.classes), 0)]
            self.space = np.zeros(len(self.labels), np.int64)

    def qualified_classes(self) -> list[str]:
        """Class names, prefixed with their data set's name where there are several."""
        if len(self.spaces) == 1:
            return list(self.classes)
        return [f"{s.name}/{c}" for s in self.spaces for c in s.classes]


def scene_classes(folder: Path) -> list[str]:
    """The sorted class sub-folders of ``folder`` that hold at least one image.

    Raises:
        InputNotFoundError: the folder does not exist.
    """
    if not folder.is_dir():
        raise InputNotFoundError(f"scene folder {folder} does not exist; check the path")
    return sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and any(f.suffix.lower() in EXTENSIONS for f in d.iterdir())
    )


def load_scene_sets(folders: list[Path], side: int) -> Scenes:
    """Several labelled folders, each its own data set (label space), as one set of scenes.

    A data set is named after its folder (``aid``, ``rsscn7``); two folders of the same name
    get ``-2``, ``-3``... so each head keeps a name.

    Raises:
        InputNotFoundError, InputFormatError: as :func:`load_scenes`.
    """
    parts, spaces, offset, names = [], [], 0, set()
    for folder in folders:
        part = load_scenes(folder, side)
        name, n = folder.resolve().name or "scenes", 2
        while name in names:
            name, n = f"{folder.resolve().name}-{n}", n + 1
        names.add(name)
        spaces.append(LabelSpace(name, tuple(part.classes), offset))
        parts.append(part)
        offset += len(part.classes)
    return Scenes(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels + s.offset for p, s in zip(parts, spaces, strict=True)]),
        classes=[c for s in spaces for c in s.classes],
        paths=[path for p in parts for path in p.paths],
        spaces=spaces,
        space=np.concatenate([np.full(len(p.labels), i) for i, p in enumerate(parts)]),
    )


def scene_listing(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image files under ``folder/<class>/``, their labels and the class names, in order.

    ``classes`` fixes the order (else sorted); files are sorted within a class. This order is
    what held-out splits are drawn over, so it must not depend on anything but the names.

    Raises:
        InputNotFoundError: the folder does not exist or holds no class sub-folder with images.
        InputFormatError: the class sub-folders differ from ``classes``.
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
    return paths, np.asarray(labels, np.int64), list(classes)


def load_scenes(folder: Path, side: int, classes: list[str] | None = None) -> Scenes:
    """Read every image under ``folder/<class>/`` (see :func:`scene_listing`) at ``side`` px.

    Raises:
        InputNotFoundError: the folder does not exist or holds no class sub-folder with images.
        InputFormatError: an image cannot be read, or the class sub-folders differ from ``classes``.
    """
    paths, labels, classes = scene_listing(folder, classes)
    images = np.empty((len(paths), 3, side, side), np.uint8)

    def read(i: int) -> None:
        images[i] = read_rgb_uint8(paths[i], side)

    # OpenCV decodes and resizes without holding the GIL: one thread per core reads them in
    # parallel, each into its own slot (the first unreadable file's error is raised).
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for _ in pool.map(read, range(len(paths))):
            pass
    return Scenes(images, labels, classes, [str(p) for p in paths])


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: ``fraction`` of each class, chosen with ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        val[idx[: max(1, round(len(idx) * fraction))]] = True
    return val
