"""Labelled cells for training and evaluation (no torch here).

A :class:`CellData` holds, per labelled cell, the raw chip, the activity features, the presence
flags, the label, and a spatial block key for blocked splits. This module builds it from a
URFC-layout folder (one area image and visit file per labelled area); labelled cities go through
the run's own stages (:mod:`urbanfusion.workflows.labelled`), the exact inputs inference sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from urbanfusion.ingest.rgb_images import read_rgb
from urbanfusion.ingest.urfc import FIRST_DAY, N_DAYS, read_visit_counts, scan_urfc_folder
from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.pipeline.errors import ConfigError, InputFormatError
from urbanfusion.preprocess.activity import activity_inputs

# Side of the square blocks of cells that splits keep together (neighbouring cells leak).
BLOCK_CELLS = 4


@dataclass
class CellData:
    """Labelled cells, one row each."""

    chips: np.ndarray  # (n, band, chip, chip) float32 in [0, 1], NaN nodata
    activity: np.ndarray  # (n, 7, 24) float32 features
    has_activity: np.ndarray  # (n,) float32
    labels: np.ndarray  # (n,) int64
    blocks: np.ndarray  # (n,) int64 spatial block key, unique across cities
    city: np.ndarray  # (n,) int64 index of the source city
    bands: list[int | str]
    chip_px: int
    cell_size_m: float
    notes: list[str] = field(default_factory=list)  # what a user should know about the data

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> CellData:
        """The rows at ``index``."""
        return CellData(
            self.chips[index],
            self.activity[index],
            self.has_activity[index],
            self.labels[index],
            self.blocks[index],
            self.city[index],
            self.bands,
            self.chip_px,
            self.cell_size_m,
            self.notes,
        )

    @staticmethod
    def concat(parts: list[CellData]) -> CellData:
        """Rows of several cities (same bands and chip size) together."""
        first = parts[0]
        if any(p.bands != first.bands or p.chip_px != first.chip_px for p in parts):
            raise ConfigError(
                "training sources differ in bands or chip size (grid.chip_px, or the URFC image "
                "size); train them separately"
            )
        return CellData(
            np.concatenate([p.chips for p in parts]),
            np.concatenate([p.activity for p in parts]),
            np.concatenate([p.has_activity for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.blocks for p in parts]),
            np.concatenate([p.city for p in parts]),
            first.bands,
            first.chip_px,
            first.cell_size_m,
            [note for p in parts for note in p.notes],
        )


# URFC images are 1 m a pixel.
URFC_PIXEL_M = 1.0
# Areas whose activity features are computed at once (bounds memory on the 40,000-area set).
_ACTIVITY_BATCH = 4096


def load_urfc_folder(folder: Path, city_index: int = 0) -> CellData:
    """The labelled areas of a URFC-layout folder as cells.

    Each area is a cell: its image is the chip (all images must share one square size) and its
    visits become the weekly activity profile inference uses for signalling, Monday first like
    the data set's 2018-10-01. An area without an image or visit file has that input missing,
    flagged as such. Each area is its own spatial block (the data set has no locations).

    Raises:
        InputNotFoundError: the folder does not exist or holds no URFC files.
        InputFormatError: a badly named file, an unreadable image, or images of different sizes.
    """
    areas = scan_urfc_folder(folder, len(CLASS_NAMES))
    first = next((a.image for a in areas if a.image is not None), None)
    side = read_rgb(first).shape[1] if first is not None else 100
    chips = np.full((len(areas), 3, side, side), np.nan, dtype=np.float32)
    for i, area in enumerate(areas):
        if area.image is None:
            continue
        image = read_rgb(area.image)
        if image.shape[1:] != (side, side):
            raise InputFormatError(
                f"{area.image}: image is {image.shape[2]}x{image.shape[1]} px but the folder's "
                f"are {side}x{side} ({first}); resize all to one square size"
            )
        chips[i] = image
    with_visits = np.array([a.visits is not None for a in areas])
    visits = [a.visits for a in areas if a.visits is not None]
    counts, bad = read_visit_counts(visits)
    notes = []
    if bad:
        notes.append(
            f"{folder}: {bad} visit entries were malformed or outside the 182 days from "
            f"{FIRST_DAY} and were not counted"
        )
    no_image, no_visits = sum(a.image is None for a in areas), sum(a.visits is None for a in areas)
    if no_image or no_visits:
        notes.append(
            f"{folder}: {no_image} areas have no image and {no_visits} no visit file; "
            "that input is flagged missing for them"
        )
    activity = np.zeros((len(areas), 7, 24), dtype=np.float32)
    has_activity = np.zeros(len(areas), dtype=np.float32)
    rows = np.flatnonzero(with_visits)
    weekdays = np.arange(N_DAYS) % 7  # the data set starts on a Monday
    for s in range(0, len(rows), _ACTIVITY_BATCH):
        batch = counts[s : s + _ACTIVITY_BATCH]
        # Every hour of the 182 days was observed: an hour without visits is a true zero.
        features, _ = activity_inputs(batch, np.ones(batch.shape, bool), weekdays)
        activity[rows[s : s + _ACTIVITY_BATCH]] = features
        has_activity[rows[s : s + _ACTIVITY_BATCH]] = 1.0
    ids = np.array([a.area_id for a in areas], dtype=np.int64)
    return CellData(
        chips=chips,
        activity=activity,
        has_activity=has_activity,
        labels=np.array([a.category - 1 for a in areas], dtype=np.int64),
        blocks=ids + city_index * 10**13,
        city=np.full(len(areas), city_index, dtype=np.int64),
        bands=[1, 2, 3],
        chip_px=side,
        cell_size_m=side * URFC_PIXEL_M,
        notes=notes,
    )
