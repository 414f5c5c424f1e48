"""The stages of a run, in the order data flows: plan, ingest, prepare, predict.

Each stage takes and returns the contracts of ``design.md``. Training data is made by plan,
ingest and prepare unchanged (:mod:`.labelled`), so what a model sees in training is what it sees
in production. The last stage, write, is :mod:`.write`; :mod:`.run` runs them all together.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import compute

from urbanfusion.ingest.area import cells_inside, read_area
from urbanfusion.ingest.imagery import ChunkSources, TileReport, load_imagery
from urbanfusion.ingest.signalling import SignallingReport, load_signalling
from urbanfusion.ingest.store_keys import inputs_key, predictions_key
from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.inference import SHIPPED_MODEL, Predictor, load_predictor
from urbanfusion.pipeline.config import ExtentArea, RunConfig, expand_paths, glob_matches
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.preprocess.activity import activity_inputs
from urbanfusion.preprocess.chips import thumbnail_px
from urbanfusion.preprocess.chips_dask import chips_dask, thumbnails_dask
from urbanfusion.workflows.memory import available_bytes, check_memory
from urbanfusion.workflows.publish import written_paths
from urbanfusion.workflows.scheduler import model_threads
from urbanfusion.workflows.stored import stored_activity, stored_chips


@dataclass(frozen=True)
class Plan:
    """The grid and the input files of a run, checked to exist."""

    config: RunConfig
    grid: CityGrid
    tiles: list[Path]
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


@dataclass
class Ingested:
    """Imagery on the pixel grid (lazy) and activity per (cell, day, hour), with their reports."""

    imagery: xr.DataArray
    tiles: list[TileReport]
    activity: xr.Dataset
    rejects: pd.DataFrame
    signalling: SignallingReport
    activity_key: str = ""  # the stored activity's fingerprint (with a store)
    sources: ChunkSources = field(default_factory=dict)  # per chunk, the tiles it is made of


@dataclass
class Prepared:
    """Per-cell model inputs: raw chips (lazy, row x col blocks) and activity features."""

    chips: da.Array  # (row, col, band, chip, chip) float32 in [0, 1], NaN nodata
    activity: np.ndarray  # (cell, 7, 24) float32
    has_activity: np.ndarray  # (cell,) float32 0/1
    inputs_key: str = ""  # fingerprint of the chips and activity (with a store)


@dataclass
class Predicted:
    """The model's output per cell, and which cells it could predict."""

    prob: np.ndarray  # (cell, class) float32
    class_id: np.ndarray  # (cell,) uint8, NO_CLASS (255) where the cell has no input at all
    has_image: np.ndarray  # (cell,) bool
    has_activity: np.ndarray  # (cell,) bool
    # How far each cell's inputs are from the model's training data: <= 1 in domain, NaN where
    # the model has no score (an uncalibrated model) or the cell no prediction.
    domain: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # The imagery the model saw, averaged to a few pixels per cell: (y, x, RGBA) uint8 of at
    # most 1,024 px a side, for the quicklook and the web map (empty when not made).
    preview: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 4), np.uint8))

    @property
    def predicted(self) -> np.ndarray:
        """Cells with at least one input, so with a prediction."""
        return self.class_id != NO_CLASS

    @property
    def out_of_domain(self) -> np.ndarray:
        """Predicted cells whose inputs are unlike the model's training data (score over 1)."""
        scored = self.predicted & ~np.isnan(self.domain)
        return scored & (np.nan_to_num(self.domain) > 1.0)

    def in_domain_share(self) -> float | None:
        """Share of scored, predicted cells in the model's domain (None: no score)."""
        scored = self.predicted & ~np.isnan(self.domain)
        if not scored.any():
            return None
        return float(1 - self.out_of_domain.sum() / scored.sum())


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
    tiles = expand_paths(config, config.imagery.paths, "imagery.paths")
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
    config: RunConfig, patterns: list[str], files: list[Path], out: Path
) -> Path | None:
    """A path by which the input ``patterns`` reach into ``out``, or None.

    Files already there, and what a run would write there (the next run would read it), by
    their real paths: a link inside an input folder that leads to ``out`` counts too.
    """
    real = out.resolve()
    inside = [f for f in files if f.is_relative_to(out) or f.resolve().is_relative_to(real)]
    if inside:
        return inside[0]
    written = written_paths(out)
    for pattern in patterns:
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


def open_model(config: RunConfig) -> Predictor:
    """The run's model (``model``, else the shipped one), checked to read the config's chips.

    Raises:
        InputNotFoundError: the model file does not exist.
        ModelError: it is not an urbanfusion model, it reads other chips than the config makes,
            or its in-domain score cannot be read.
    """
    predictor = load_predictor(str(config.model_path or SHIPPED_MODEL))
    predictor.domain_models  # noqa: B018 -- read now, so a bad score fails before the inputs
    c = predictor.contract
    predictor.check_chips(
        config.grid.chip_px,
        len(config.imagery.bands),
        f"set grid.chip_px: {c.chip_px} and list {len(c.bands)} bands in imagery.bands, or give "
        "a model trained on chips like these",
    )
    return predictor


def ingest(p: Plan, store: ResultStore | None = None) -> Ingested:
    """Align imagery to the grid (lazily) and aggregate signalling (computed, it is small).

    With a ``store``, scene statistics and the aggregated activity are reused when their inputs
    and settings are unchanged.
    """
    cfg = p.config
    imagery, tiles, sources = load_imagery(
        p.tiles,
        p.grid,
        cfg.imagery.bands,
        cfg.imagery.dehaze,
        strict=cfg.imagery.strict,
        store=store,
    )
    if store is None:
        activity, rejects, report = load_signalling(
            p.signalling_files, p.grid, cfg.resolved_signalling
        )
        return Ingested(imagery, tiles, activity, rejects, report, sources=sources)
    activity, rejects, report, key = stored_activity(p.grid, cfg, p.signalling_files, store)
    return Ingested(imagery, tiles, activity, rejects, report, key, sources)


def prepare(p: Plan, ingested: Ingested, store: ResultStore | None = None) -> Prepared:
    """Cut chips per cell and compute the activity features.

    With a ``store``, each chunk of chips is reused when the tiles it is made of (and the
    settings) are unchanged, and computed and kept otherwise.
    """
    chips = chips_dask(ingested.imagery.data, p.grid.chip_px)
    ds = ingested.activity
    weekdays = pd.DatetimeIndex(ds["day"].values).day_of_week.to_numpy()
    features, has_activity = activity_inputs(ds["activity"].values, ds["observed"].values, weekdays)
    if p.inside is not None:  # an area: its other cells have no input the model is given
        has_activity = has_activity * p.inside
    outside = _outside_chunks(chips, p)
    if store is None:
        return Prepared(_without(chips, outside), features, has_activity)
    chips, chips_key = stored_chips(
        p.grid, p.config.imagery, chips, ingested.sources, store, outside
    )
    key = inputs_key(chips_key, ingested.activity_key, p.inside)
    return Prepared(chips, features, has_activity, key)


def _outside_chunks(chips: da.Array, p: Plan) -> frozenset[tuple[int, int]]:
    """The chunks of chips that hold no cell of an extent's area (none without an area)."""
    if p.inside is None:
        return frozenset()
    inside = p.inside.reshape(p.grid.nrows, p.grid.ncols)
    rows, cols = (np.cumsum((0, *c)) for c in chips.chunks[:2])
    return frozenset(
        (i, j)
        for i in range(len(rows) - 1)
        for j in range(len(cols) - 1)
        if not inside[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].any()
    )


def _without(chips: da.Array, outside: frozenset[tuple[int, int]]) -> da.Array:
    """``chips`` with the chunks in ``outside`` NaN: not computed."""
    if not outside:
        return chips
    grid_rows = []
    for i in range(len(chips.chunks[0])):
        blocks = []
        for j in range(len(chips.chunks[1])):
            block = chips.blocks[i, j]
            if (i, j) in outside:
                block = da.full(block.shape, np.nan, dtype=chips.dtype, chunks=block.shape)
            blocks.append(block)
        grid_rows.append(da.concatenate(blocks, axis=1))
    return da.concatenate(grid_rows, axis=0)


def _predict_block(
    chips: np.ndarray,
    activity: np.ndarray,
    has_activity: np.ndarray,
    inside: np.ndarray,
    model: str,
    providers: tuple[str, ...] | None,
    threads: int = 0,
) -> np.ndarray:
    predictor = load_predictor(model, providers, threads)
    r, k = chips.shape[:2]
    n = r * k
    chips = chips.reshape(n, *chips.shape[2:])
    activity, has_activity = activity.reshape(n, -1), has_activity.reshape(n)
    # Cells with no pixel and no signalling get no class: the model need not see them (most of
    # a region with imagery over the city only); nor do cells outside an extent's area.
    seen = ((has_activity > 0.5) | ~np.isnan(chips).all(axis=(1, 2, 3))) & inside.reshape(n)
    # Per cell: the probabilities, has_image (0/1), then the in-domain score.
    out = np.full((n, len(predictor.contract.classes) + 2), np.nan, np.float32)
    out[:, -2] = 0.0
    if seen.any():
        cells = predictor.predict_cells(chips[seen], activity[seen], has_activity[seen])
        out[seen, :-2], out[seen, -2], out[seen, -1] = cells.prob, cells.has_image, cells.domain
    return out.reshape(r, k, -1)


def predict(
    p: Plan,
    prepared: Prepared,
    model: Path,
    providers: tuple[str, ...] | None = None,
    store: ResultStore | None = None,
) -> Predicted:
    """Run the model over every cell, chunk by chunk (one session per worker process).

    A cell with neither imagery nor signalling gets no class (``NO_CLASS``). With a ``store``,
    the predictions are reused when the chips, the activity and the model are unchanged.
    """
    grid = p.grid
    thumbs = thumbnails_dask(prepared.chips, thumbnail_px(grid.nrows, grid.ncols, grid.chip_px))
    if store is None:
        out, preview = _predicted_values(p, prepared, model, providers, thumbs)
    else:
        key = predictions_key(prepared.inputs_key, model)
        path = store.path("predictions", key, "npy")
        if store.use("predictions", key, "npy"):
            # The chips are in the store too: the preview reads them, it computes nothing.
            out, preview = store.load_array(path), thumbs.compute()
        else:
            out, preview = _predicted_values(p, prepared, model, providers, thumbs)
            store.save_array(path, out)
    n_classes = out.shape[1] - 2
    prob, has_image = out[:, :n_classes], out[:, n_classes] > 0.5
    with_activity = prepared.has_activity > 0.5
    class_id = np.where(has_image | with_activity, prob.argmax(axis=1), NO_CLASS)
    return Predicted(prob, class_id.astype(np.uint8), has_image, with_activity, out[:, -1], preview)


def _predicted_values(
    p: Plan,
    prepared: Prepared,
    model: Path,
    providers: tuple[str, ...] | None,
    thumbs: da.Array,
) -> tuple[np.ndarray, np.ndarray]:
    """``(cell, class + 2)`` float32 (probabilities, has_image 0/1, domain score) and the preview.

    Both in one compute, so every chunk of chips is made once for the two.
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
    cells = np.ones(grid.n_cells, dtype=bool) if p.inside is None else p.inside
    inside = da.from_array(cells.reshape(grid.nrows, grid.ncols), chunks=(rows, cols))
    out = da.blockwise(
        _predict_block,
        "rck",
        chips,
        "rcbpq",
        activity,
        "rcdh",
        has_activity,
        "rc",
        inside,
        "rc",
        new_axes={"k": n_classes + 2},
        concatenate=True,
        dtype=np.float32,
        model=str(model),
        providers=providers,
        threads=model_threads(p.config.dask),
    )
    values, preview = compute(out, thumbs)
    return values.reshape(grid.n_cells, n_classes + 2), preview
