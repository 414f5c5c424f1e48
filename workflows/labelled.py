"""Labelled cells of cities through the run's own stages: what training and evaluation read.

A city is a run config and a zones file: ``plan``, ``ingest`` and ``prepare`` make exactly the
inputs a run would give the model, and the zones label the cells they cover. URFC-layout folders
are read by :func:`urbanfusion.models.dataset.load_urfc_folder`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dask.base import compute

from urbanfusion.ingest.labels import NO_LABEL, cell_labels, read_zones
from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.models.dataset import BLOCK_CELLS, CellData, load_urfc_folder
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.workflows.layout import plan
from urbanfusion.workflows.stages import ingest, prepare


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
    chips, activity, has_activity = compute(
        prepared.chips, prepared.activity, prepared.has_activity
    )
    chips = chips.reshape(p.grid.n_cells, *chips.shape[2:])
    rows, cols = p.grid.rowcol()
    blocks = ((rows + p.grid.row0) // BLOCK_CELLS) * 1_000_003 + (cols + p.grid.col0) // BLOCK_CELLS
    keep = labels != NO_LABEL
    return CellData(
        chips=chips[keep],
        activity=activity[keep],
        has_activity=has_activity[keep],
        labels=labels[keep].astype(np.int64),
        blocks=blocks[keep].astype(np.int64) + city_index * 10**13,
        city=np.full(int(keep.sum()), city_index, dtype=np.int64),
        bands=list(config.imagery.bands),
        chip_px=config.grid.chip_px,
        cell_size_m=config.grid.cell_size_m,
    )


def load_labelled_cities(sources: list[Path], zones: list[Path]) -> CellData:
    """Labelled cells of several sources, in order.

    A source is a run config, labelled by the next zones file, or a URFC-layout folder, which
    is labelled by its file names.

    Raises:
        ConfigError: the number of zones files is not the number of configs.
    """
    configs = [s for s in sources if not s.is_dir()]
    if len(configs) != len(zones):
        raise ConfigError(
            f"got {len(configs)} run configs but {len(zones)} --labels files; give one zones "
            "file per config (URFC folders need none)"
        )
    remaining = iter(zones)
    parts = [
        load_urfc_folder(src, i) if src.is_dir() else load_labelled_city(src, next(remaining), i)
        for i, src in enumerate(sources)
    ]
    return CellData.concat(parts)


def coverage_note(data: CellData, fine_tuning: bool) -> str | None:
    """What a user should know when the labels leave classes out (None: they hold every one).

    A model never predicts a class it saw no cell of; a model fine-tuned on labels without a
    class unlearns it: on a real-pixel city, fine-tuning on one residential zone took overall
    accuracy from 0.87 to 0.62, while three zones of three classes kept it at 0.89.
    """
    present = set(np.unique(data.labels).tolist())
    missing = [name for k, name in enumerate(CLASS_NAMES) if k not in present]
    if not missing:
        return None
    names = ", ".join(missing)
    if fine_tuning:
        return (
            f"the labels hold no cell of {names}: fine-tuning on them unlearns those classes; "
            "label a zone or two of each class the city has (the zones you leave out are "
            "predicted as the classes you labelled)"
        )
    return f"the labels hold no cell of {names}: the model will never predict them"
