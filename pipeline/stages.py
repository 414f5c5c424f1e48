"""The stages of a run, in the order data flows: plan, ingest, prepare, predict.

Each stage takes and returns the contracts of ``design.md``. ``train`` uses plan, ingest and
prepare unchanged, so what a model sees in training is what it sees in production. Writing the
outputs is :mod:`pipeline.write`; running the stages together is :mod:`pipeline.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ingest.imagery import TileReport, load_imagery
from ingest.platform_grid import PlatformGridSpec
from ingest.signalling import SignallingReport, load_signalling
from models.inference import load_predictor
from pipeline.config import RunConfig, expand_paths
from pipeline.grid import CityGrid
from preprocess.activity import activity_inputs
from preprocess.chips import chips_dask, image_inputs


@dataclass(frozen=True)
class Plan:
    """The grid and the input files of a run, checked to exist."""

    config: RunConfig
    grid: CityGrid
    tiles: list[Path]
    signalling_files: list[Path]


@dataclass
class Ingested:
    """Imagery on the pixel grid (lazy) and activity per (cell, day, hour), with their reports."""

    imagery: xr.DataArray
    tiles: list[TileReport]
    activity: xr.Dataset
    rejects: pd.DataFrame
    signalling: SignallingReport


@dataclass
class Prepared:
    """Per-cell model inputs: raw chips (lazy, row x col blocks) and activity features."""

    chips: da.Array  # (row, col, band, chip, chip) float32 in [0, 1], NaN nodata
    activity: np.ndarray  # (cell, 7, 24) float32
    has_activity: np.ndarray  # (cell,) float32 0/1


def platform_grid_spec(config: RunConfig) -> PlatformGridSpec | None:
    """The platform grid of ``signalling.grid`` with its path resolved, if there is one."""
    g = config.signalling.grid
    if g is None:
        return None
    return PlatformGridSpec(
        path=config.resolve(g.path),
        id_column=g.id_column,
        layer=g.layer,
        crs=g.crs,
        bounds=g.bounds,
        centre=g.centre,
        cell_size=g.cell_size,
    )


def plan(config: RunConfig) -> Plan:
    """Build the grid and expand the input globs.

    Raises:
        ConfigError: the grid cannot be built for the extent.
        InputNotFoundError: a path or glob of the config matches nothing.
    """
    grid = CityGrid.from_extent(
        config.extent, config.grid.cell_size_m, config.grid.chip_px, config.crs
    )
    tiles = expand_paths(config, config.imagery.paths, "imagery.paths")
    signalling = expand_paths(config, config.signalling.paths, "signalling.paths")
    return Plan(config, grid, tiles, signalling)


def ingest(p: Plan) -> Ingested:
    """Align imagery to the grid (lazily) and aggregate signalling (computed, it is small)."""
    cfg = p.config
    imagery, tiles = load_imagery(
        p.tiles, p.grid, cfg.imagery.bands, cfg.imagery.dehaze, strict=cfg.imagery.strict
    )
    activity, rejects, report = load_signalling(
        p.signalling_files, p.grid, cfg.signalling, platform_grid_spec(cfg)
    )
    return Ingested(imagery, tiles, activity, rejects, report)


def prepare(p: Plan, ingested: Ingested) -> Prepared:
    """Cut chips per cell and compute the activity features."""
    chips = chips_dask(ingested.imagery.data, p.grid.chip_px)
    ds = ingested.activity
    weekdays = pd.DatetimeIndex(ds["day"].values).day_of_week.to_numpy()
    features, has_activity = activity_inputs(ds["activity"].values, ds["observed"].values, weekdays)
    return Prepared(chips, features, has_activity)


def _predict_block(
    chips: np.ndarray,
    activity: np.ndarray,
    has_activity: np.ndarray,
    model: str,
    providers: tuple[str, ...] | None,
) -> np.ndarray:
    predictor = load_predictor(model, providers)
    c = predictor.contract
    r, k = chips.shape[:2]
    n = r * k
    image, has_image = image_inputs(
        chips.reshape(n, *chips.shape[2:]), np.array(c.image_mean), np.array(c.image_std)
    )
    prob = predictor.predict(
        image, activity.reshape(n, c.days, c.hours), has_image, has_activity.reshape(n)
    )
    return np.concatenate([prob, has_image[:, None]], axis=1).reshape(r, k, -1)


def predict(
    p: Plan, prepared: Prepared, model: Path, providers: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every cell, chunk by chunk (one session per worker process).

    Returns:
        Probabilities ``(cell, class)`` float32 and ``has_image`` ``(cell,)`` bool.
    """
    grid = p.grid
    n_classes = len(load_predictor(str(model), providers).contract.classes)
    chips = prepared.chips
    rows, cols = chips.chunks[:2]
    days, hours = prepared.activity.shape[1:]
    activity = da.from_array(
        prepared.activity.reshape(grid.nrows, grid.ncols, days, hours),
        chunks=(rows, cols, days, hours),
    )
    has_activity = da.from_array(
        prepared.has_activity.reshape(grid.nrows, grid.ncols), chunks=(rows, cols)
    )
    out = da.blockwise(
        _predict_block,
        "rck",
        chips,
        "rcbpq",
        activity,
        "rcdh",
        has_activity,
        "rc",
        new_axes={"k": n_classes + 1},
        concatenate=True,
        dtype=np.float32,
        model=str(model),
        providers=providers,
    ).compute()
    out = out.reshape(grid.n_cells, n_classes + 1)
    return out[:, :n_classes], out[:, n_classes] > 0.5
