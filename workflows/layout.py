"""A run's layout: its grid and input files, checked before anything is read.

The plan of a run (:func:`layout`, :func:`plan`): the grid of the extent (or of an area's
box), the tiles (local files or URLs) and signalling files the config's patterns match, and the
refusal of inputs that reach into the output folder.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from urbanfusion.ingest.area import cells_inside, read_area
from urbanfusion.pipeline.config import (
    ExtentArea,
    RunConfig,
    expand_inputs,
    expand_paths,
    glob_matches,
)
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.remote_files import InputPath, is_remote
from urbanfusion.workflows.memory import available_bytes, check_memory
from urbanfusion.workflows.publish import written_paths


@dataclass(frozen=True)
class Plan:
    """The grid and the input files of a run, checked to exist."""

    config: RunConfig
    grid: CityGrid
    tiles: list[InputPath]  # local paths, or URLs read where they lie
    signalling_files: list[Path]
    # An extent given as an area: its file, its bounding box (WGS84) and which cells it holds.
    area_file: Path | None = None
    area_box: tuple[float, float, float, float] | None = None
    inside: np.ndarray | None = None  # (cell,) bool; None: every cell of the box

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """The extent's box in WGS84 degrees (an area's bounding box)."""
        extent = self.config.extent
        box = extent if isinstance(extent, tuple) else self.area_box
        return cast(tuple[float, float, float, float], box)


def layout(config: RunConfig) -> Plan:
    """The grid and the input files of a run, without asking whether it fits in memory.

    Raises:
        ConfigError: the grid cannot be built for the extent, or an input lies in output.dir.
        InputNotFoundError: a path or glob of the config matches nothing.
    """
    area_file, area = None, None
    extent = config.extent
    if isinstance(extent, ExtentArea):
        area_file = config.resolve(extent.path)
        area = read_area(area_file, extent)
        extent = area.bbox
    grid = CityGrid.from_extent(extent, config.grid.cell_size_m, config.grid.chip_px, config.crs)
    tiles = expand_inputs(config, config.imagery.paths, "imagery.paths")
    signalling = expand_paths(config, config.signalling.paths, "signalling.paths")
    out = config.output_dir
    for key, patterns, files in (
        ("imagery.paths", config.imagery.paths, tiles),
        ("signalling.paths", config.signalling.paths, signalling),
    ):
        example = _reaches_output(config, patterns, files, out)
        if example is not None:
            raise ConfigError(
                f"{key} reaches inside output.dir {out} (e.g. {example}): a run would read its "
                "own outputs; move output.dir out of the input folders or narrow the pattern"
            )
    inside = None if area is None else cells_inside(area, grid)
    if inside is not None and not inside.any():
        raise ConfigError(
            f"extent {config.extent.describe() if isinstance(config.extent, ExtentArea) else ''}: "
            f"no cell of {config.grid.cell_size_m:g} m has its centre inside the feature; "
            "lower grid.cell_size_m or check the feature"
        )
    box = None if area is None else area.bbox
    return Plan(config, grid, tiles, signalling, area_file, box, inside)


def plan(config: RunConfig) -> Plan:
    """Build the grid and expand the input globs; refuse a run that cannot fit in memory.

    Raises:
        ConfigError: the grid cannot be built for the extent, an input lies in output.dir, or
            the run would need more memory than there is (:mod:`.memory`).
        InputNotFoundError: a path or glob of the config matches nothing.
    """
    p = layout(config)
    check_memory(config, p.grid, len(p.signalling_files), available_bytes())
    return p


def _reaches_output(
    config: RunConfig, patterns: list[str], files: Sequence[InputPath], out: Path
) -> Path | None:
    """A path by which the input ``patterns`` reach into ``out``, or None.

    Files already there, and what a run would write there (the next run would read it), by
    their real paths: a link inside an input folder that leads to ``out`` counts too.
    """
    real = out.resolve()
    local = [f for f in files if isinstance(f, Path)]  # a URL is never inside a folder
    inside = [f for f in local if f.is_relative_to(out) or f.resolve().is_relative_to(real)]
    if inside:
        return inside[0]
    written = written_paths(out)
    for pattern in patterns:
        if is_remote(pattern):
            continue
        full = config.resolve(pattern)
        would = [w for w in written if glob_matches(full, w)]
        if would:
            return would[0]
        if not any(fnmatch.fnmatchcase(w.name, full.name) for w in written):
            continue  # it cannot match an output's name, wherever it walks
        # The folders the pattern walks, through links: one may be the output folder, or a
        # link to where the output folder will be (before the first run makes it).
        for folder in map(Path, glob.glob(str(full.parent) + os.sep, recursive=True)):
            if folder.resolve().is_relative_to(real):
                return folder
            with os.scandir(folder) as entries:
                for entry in entries:
                    link = Path(entry.path)
                    if (
                        entry.is_symlink()
                        and link.resolve().is_relative_to(real)
                        and glob_matches(full.parent, link)
                    ):
                        return link
    return None
