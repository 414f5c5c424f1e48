"""Cells whose class changed since the previous published run (``changes.gpkg``).

Cells are matched by ``cell_id``, so a run over a moved or grown extent compares the cells the
two runs share. Runs on another CRS or cell size share no cells and are not compared.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.workflows.output_names import CLASS_MAP, MANIFEST, PROBABILITIES
from urbanfusion.workflows.publish import OutputFolder
from urbanfusion.workflows.stages import Predicted

COLUMNS = ["cell_id", "previous_class", "class", "previous_confidence", "confidence"]
_NONE = "(none)"  # a class name for "no prediction" in the summary line
_SHOWN = 3  # transitions named in the summary line


@dataclass
class Changes:
    """What changed since the previous run, for ``changes.gpkg`` and the manifest."""

    table: gpd.GeoDataFrame
    previous_run: str | None
    summary: str
    transitions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The manifest's ``changes`` entry."""
        return {
            "previous_run": self.previous_run,
            "cells_changed": len(self.table),
            "summary": self.summary,
            "transitions": self.transitions,
        }


def empty_changes(grid: CityGrid) -> gpd.GeoDataFrame:
    """A changes table with no row (the columns and CRS are there)."""
    frame = {c: np.array([], dtype=np.float32 if "confidence" in c else object) for c in COLUMNS}
    frame["cell_id"] = np.array([], dtype=np.int64)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs=grid.crs), crs=grid.crs)


def _previous_maps(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The class map and the confidence (highest probability; NaN without one) of a run."""
    with rasterio.open(run / CLASS_MAP) as src:
        classes = src.read(1)
    confidence = np.full(classes.shape, np.nan, dtype=np.float32)
    if (run / PROBABILITIES).is_file():
        with rasterio.open(run / PROBABILITIES) as src:
            prob = src.read()
        has = ~np.isnan(prob).all(axis=0)
        confidence[has] = np.nanmax(prob[:, has], axis=0)
    return classes, confidence


def changes_since(
    previous: Path | None, grid: CityGrid, predicted: Predicted, contract: ModelContract
) -> Changes:
    """Compare a run's classes with those of the ``previous`` run's folder (None: first run)."""
    if previous is None or not (previous / MANIFEST).is_file():
        return Changes(empty_changes(grid), None, "first run: nothing to compare")
    manifest = json.loads((previous / MANIFEST).read_text(encoding="utf-8"))
    # The maps compared with must be those published (the folder's record, not a rehash).
    changed = OutputFolder(previous.parent.parent).changed_outputs(previous)
    written_over = [n for n in (CLASS_MAP, PROBABILITIES) if n in changed]
    if written_over:
        return Changes(
            empty_changes(grid),
            previous.name,
            f"not compared: {' and '.join(written_over)} of the previous run were written over "
            "after it was published",
        )
    before = manifest["grid"]
    same_cells = (before["crs"], before["cell_size_m"]) == (grid.crs.to_string(), grid.cell_size)
    if not same_cells:
        return Changes(
            empty_changes(grid),
            previous.name,
            f"not compared: the previous run used {before['crs']} cells of "
            f"{before['cell_size_m']} m",
        )
    classes, confidence = _previous_maps(previous)
    # Absolute rows and columns shared by both grids (both are snapped to the same lattice).
    r0, c0 = max(grid.row0, before["abs_row0"]), max(grid.col0, before["abs_col0"])
    r1 = min(grid.row0 + grid.nrows, before["abs_row0"] + before["rows"])
    c1 = min(grid.col0 + grid.ncols, before["abs_col0"] + before["cols"])
    if r0 >= r1 or c0 >= c1:
        return Changes(empty_changes(grid), previous.name, "not compared: no cell in common")
    rows, cols = np.mgrid[r0:r1, c0:c1]
    old = classes[rows - before["abs_row0"], cols - before["abs_col0"]].ravel()
    old_conf = confidence[rows - before["abs_row0"], cols - before["abs_col0"]].ravel()
    index = ((rows - grid.row0) * grid.ncols + (cols - grid.col0)).ravel()
    new = predicted.class_id[index]
    changed = old != new
    index, old, new, old_conf = index[changed], old[changed], new[changed], old_conf[changed]
    names = np.array([*contract.classes, ""], dtype=object)
    n = len(contract.classes)
    new_conf = np.where(new != NO_CLASS, predicted.prob[index].max(axis=1, initial=0), np.nan)
    table = gpd.GeoDataFrame(
        {
            "cell_id": grid.cell_ids()[index],
            "previous_class": names[np.where(old == NO_CLASS, n, old)],
            "class": names[np.where(new == NO_CLASS, n, new)],
            "previous_confidence": old_conf.astype(np.float32),
            "confidence": new_conf.astype(np.float32),
        },
        geometry=grid.cell_polygons()[index],
        crs=grid.crs,
    )
    counts = Counter(
        f"{a or _NONE} -> {b or _NONE}"
        for a, b in zip(table["previous_class"], table["class"], strict=True)
    )
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        summary = "no cell changed class"
    else:
        shown = ", ".join(f"{k} {t}" for t, k in ranked[:_SHOWN])
        more = ", ..." if len(ranked) > _SHOWN else ""
        summary = f"{len(table)} cells changed: {shown}{more}"
    return Changes(table, previous.name, summary, dict(ranked))


def write_changes(path: Path, changes: Changes) -> None:
    """``changes.gpkg``, layer ``changes`` (empty on a first run: the schema is still there)."""
    changes.table.to_file(path, layer="changes", driver="GPKG", engine="pyogrio")
