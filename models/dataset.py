"""Labelled cells for training and evaluation, built by the run's own stages (no torch here).

A :class:`CellData` holds, per labelled cell, the raw chip, the activity features, the presence
flags, the label, and a spatial block key for blocked splits. It is built from a run config and
a zones file through ``plan``, ``ingest`` and ``prepare``: the exact inputs inference sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.classes import CLASS_NAMES
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.labels import NO_LABEL, cell_labels, read_zones
from pipeline.stages import ingest, plan, prepare

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
    bands: list[int]
    chip_px: int
    cell_size_m: float

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
        )

    @staticmethod
    def concat(parts: list[CellData]) -> CellData:
        """Rows of several cities (same bands and chip size) together."""
        first = parts[0]
        if any(p.bands != first.bands or p.chip_px != first.chip_px for p in parts):
            raise ConfigError(
                "cities differ in imagery.bands or grid.chip_px; train them separately"
            )
        return CellData(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("chips", "activity", "has_activity", "labels", "blocks", "city")
            ),
            first.bands,
            first.chip_px,
            first.cell_size_m,
        )


def load_labelled_city(config_path: Path, zones_path: Path, city_index: int = 0) -> CellData:
    """Ingest and prepare one city and keep its labelled cells.

    Raises:
        UrbanFusionError: bad config, inputs or zones (the same errors as a run).
    """
    config = load_config(config_path)
    p = plan(config)
    zones = read_zones(zones_path, CLASS_NAMES)
    labels, _ = cell_labels(p.grid, zones, len(CLASS_NAMES))
    prepared = prepare(p, ingest(p))
    chips = prepared.chips.compute()
    chips = chips.reshape(p.grid.n_cells, *chips.shape[2:])
    rows, cols = p.grid.rowcol()
    blocks = ((rows + p.grid.row0) // BLOCK_CELLS) * 1_000_003 + (cols + p.grid.col0) // BLOCK_CELLS
    keep = labels != NO_LABEL
    return CellData(
        chips=chips[keep],
        activity=prepared.activity[keep],
        has_activity=prepared.has_activity[keep],
        labels=labels[keep].astype(np.int64),
        blocks=blocks[keep].astype(np.int64) + city_index * 10**13,
        city=np.full(int(keep.sum()), city_index, dtype=np.int64),
        bands=list(config.imagery.bands),
        chip_px=config.grid.chip_px,
        cell_size_m=config.grid.cell_size_m,
    )


def load_labelled_cities(configs: list[Path], zones: list[Path]) -> CellData:
    """Several cities, config i labelled by zones i."""
    if len(configs) != len(zones):
        raise ConfigError(
            f"got {len(configs)} configs but {len(zones)} --labels files; give one per config"
        )
    return CellData.concat(
        [load_labelled_city(c, z, i) for i, (c, z) in enumerate(zip(configs, zones, strict=True))]
    )
