"""Real aerial scenes as a demo city's blocks: folders of labelled scenes mapped to our classes.

A block whose class has scenes is tiled with them (each resampled to the city's pixel size at
``SCENE_M`` metres a side, the ground pre-training assumes; turned and mirrored at random); a
class without scenes keeps its drawn texture. Scenes are drawn without replacement, so a city
repeats one only when its blocks need more scenes than the folder holds, and cities built from
disjoint folders share none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from urbanfusion.ingest.rgb_images import EXTENSIONS, read_rgb_uint8
from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.models.training.configs import SCENE_M
from urbanfusion.pipeline.errors import InputNotFoundError

# Folder names of labelled scene sets (AID, RSSCN7) that are urban functions of ours; a folder
# named after one of our classes counts as that class.
FOLDER_CLASSES: dict[str, str] = {
    "DenseResidential": "residential",
    "MediumResidential": "residential",
    "SparseResidential": "residential",
    "School": "school",
    "Industrial": "industrial",
    "RailwayStation": "railway_station",
    "Airport": "airport",
    "Park": "park",
    "Commercial": "shopping",
    "Center": "administrative",
    "fResident": "residential",
    "cIndustry": "industrial",
} | {name: name for name in CLASS_NAMES}


@dataclass
class SceneBank:
    """Scene files per class id, drawn in a seeded order without replacement.

    Attributes:
        folder: where the scenes come from.
        files: class id to its scene files (shuffled).
        used: every file drawn, in order (a file appears again only after all its class's).
        unused_folders: class folders that are none of our classes.
    """

    folder: Path
    files: dict[int, list[Path]]
    rng: np.random.Generator
    used: list[str] = field(default_factory=list)
    unused_folders: list[str] = field(default_factory=list)
    _next: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, folder: Path, rng: np.random.Generator) -> SceneBank:
        """The scenes of ``folder/<class>/`` whose class folder maps to one of ours.

        Raises:
            InputNotFoundError: the folder does not exist or no class folder maps to ours.
        """
        if not folder.is_dir():
            raise InputNotFoundError(f"scene folder {folder} does not exist; check the path")
        files: dict[int, list[Path]] = {}
        unused = []
        for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
            name = FOLDER_CLASSES.get(sub.name)
            if name is None:
                unused.append(sub.name)
                continue
            images = sorted(p for p in sub.iterdir() if p.suffix.lower() in EXTENSIONS)
            files.setdefault(CLASS_NAMES.index(name), []).extend(images)
        files = {k: v for k, v in files.items() if v}
        if not files:
            known = ", ".join(sorted(FOLDER_CLASSES))
            raise InputNotFoundError(
                f"{folder}: no class folder with images is one of ours; name them {known}"
            )
        for k in sorted(files):
            files[k] = [files[k][i] for i in rng.permutation(len(files[k]))]
        return cls(folder, files, rng, unused_folders=unused)

    def classes(self) -> list[str]:
        """Our classes that have real scenes."""
        return [CLASS_NAMES[k] for k in sorted(self.files)]

    def draw(self, k: int, px: int) -> np.ndarray:
        """The next scene of class ``k`` as ``(px, px, 3)`` RGB uint8, turned and mirrored."""
        files = self.files[k]
        i = self._next.get(k, 0)
        self._next[k] = i + 1
        path = files[i % len(files)]
        self.used.append(str(path))
        scene = np.moveaxis(read_rgb_uint8(path, px), 0, -1)
        scene = np.rot90(scene, int(self.rng.integers(4)))
        if self.rng.random() < 0.5:
            scene = scene[:, ::-1]
        return np.ascontiguousarray(scene)

    def fill(self, canvas: np.ndarray, k: int, pixel_m: float) -> None:
        """Tile ``canvas`` (a block's box, ``(h, w, 3)``) with scenes of class ``k``.

        Scenes are ``SCENE_M`` a side at ``pixel_m``, laid on a grid shifted at random so
        that seams fall anywhere; each is area-resampled from the file's pixels.
        """
        px = max(8, round(SCENE_M / pixel_m))
        h, w, _ = canvas.shape
        dy, dx = (int(v) for v in self.rng.integers(0, px, 2))
        for y in range(-dy, h, px):
            for x in range(-dx, w, px):
                scene = self.draw(k, px)
                y0, x0 = max(y, 0), max(x, 0)
                y1, x1 = min(y + px, h), min(x + px, w)
                canvas[y0:y1, x0:x1] = scene[y0 - y : y1 - y, x0 - x : x1 - x]

    def describe(self) -> dict[str, object]:
        """What a city's ``scenes.json`` records: the folder, real and drawn classes, files."""
        real = self.classes()
        return {
            "scenes_from": str(self.folder),
            "scene_m": SCENE_M,
            "real_classes": real,
            "drawn_classes": [c for c in CLASS_NAMES if c not in real],
            "unused_folders": self.unused_folders,
            "scenes_per_class": {
                CLASS_NAMES[k]: len(files) for k, files in sorted(self.files.items())
            },
            "scenes_used": len(self.used),
            "distinct_scenes_used": len(set(self.used)),
            "files": sorted(set(self.used)),
        }
