"""The stages of a run, in the order data flows: plan (:mod:`.layout`), ingest, prepare, predict.

Each stage takes and returns the contracts of ``design.md``. Training data is made by plan,
ingest and prepare unchanged (:mod:`.labelled`), so what a model sees in training is what it sees
in production. The last stage, write, is :mod:`.write`; :mod:`.run` runs them all together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import compute
from dask.delayed import delayed

from urbanfusion.ingest.activity_parts import Activity
from urbanfusion.ingest.imagery import ChunkSources, TileReport, load_imagery
from urbanfusion.ingest.signalling import SignallingReport, load_activity
from urbanfusion.ingest.store_keys import all_chips_key, inputs_key, predictions_key
from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.inference import Predictor, load_predictor
from urbanfusion.models.shipped import model_file
from urbanfusion.pipeline.config import (
    RunConfig,
)
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import Partition
from urbanfusion.pipeline.release import release_memory
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.preprocess.activity import WEEKDAYS, activity_inputs
from urbanfusion.preprocess.chips import thumbnail_px
from urbanfusion.preprocess.chips_dask import chips_dask, thumbnails_dask
from urbanfusion.workflows.layout import Plan
from urbanfusion.workflows.scheduler import model_threads
from urbanfusion.workflows.stored import stored_activity, stored_chips


@dataclass
class Ingested:
    """Imagery on the pixel grid (lazy) and activity per (cell, day, hour), with their reports."""

    imagery: xr.DataArray
    tiles: list[TileReport]
    activity: Activity  # per partition
    rejects: pd.DataFrame
    signalling: SignallingReport
    activity_key: str = ""  # the stored activity's fingerprint (with a store)
    sources: ChunkSources = field(default_factory=dict)  # per chunk, the tiles it is made of


@dataclass
class Prepared:
    """Per-cell model inputs, lazily: raw chips (row x col blocks) and activity features.

    Made by dask tasks when they are computed (on a cluster's workers when there is one).
    """

    chips: da.Array  # (row, col, band, chip, chip) float32 in [0, 1], NaN nodata
    activity: da.Array  # (cell, 7, 24) float32, one block
    has_activity: da.Array  # (cell,) float32 0/1, one block
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


def open_model(config: RunConfig) -> Predictor:
    """The run's model (``model``, else the shipped one), checked to read the config's chips.

    Raises:
        InputNotFoundError: the model file does not exist.
        ModelError: it is not an urbanfusion model, it reads other chips than the config makes,
            or its in-domain score cannot be read.
    """
    predictor = load_predictor(str(model_file(config)))
    predictor.domain_models  # noqa: B018 -- read now, so a bad score fails before the inputs
    c = predictor.contract
    predictor.check_chips(
        config.grid.chip_px,
        len(config.imagery.bands),
        f"set grid.chip_px: {c.chip_px} and list {len(c.bands)} bands in imagery.bands, or give "
        "a model trained on chips like these",
    )
    return predictor


def ingest(
    p: Plan, store: ResultStore | None = None, partitions: list[Partition] | None = None
) -> Ingested:
    """Align imagery to the grid (lazily) and aggregate signalling, in ``partitions``.

    With a ``store``, scene statistics and the aggregated activity are reused when their inputs
    and settings are unchanged, and the activity is kept a partition at a time (default: one,
    the whole grid); without, it is one partition in memory.
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
        activity, rejects, report = load_activity(
            p.signalling_files, p.grid, cfg.resolved_signalling
        )
        return Ingested(imagery, tiles, activity, rejects, report, sources=sources)
    parts = partitions or [whole(p.grid)]
    activity, rejects, report, key = stored_activity(p.grid, cfg, p.signalling_files, store, parts)
    return Ingested(imagery, tiles, activity, rejects, report, key, sources)


@dataclass(frozen=True)
class GridChips:
    """The chips of the whole grid, made lazily chunk by chunk (or read from the store)."""

    data: da.Array  # (row, col, band, chip, chip) float32 in [0, 1], NaN nodata
    keys: dict[tuple[int, int], str] = field(default_factory=dict)  # per chunk (with a store)

    def key_of(self, part: Partition) -> str:
        """The fingerprint of the chips of ``part``: its chunks' keys (with a store)."""
        rows, cols = (np.cumsum((0, *c)) for c in self.data.chunks[:2])
        touched = [
            self.keys[(i, j)]
            for i in range(len(rows) - 1)
            if rows[i] < part.row + part.nrows and rows[i + 1] > part.row
            for j in range(len(cols) - 1)
            if cols[j] < part.col + part.ncols and cols[j + 1] > part.col
        ]
        return all_chips_key(touched)


def grid_chips(p: Plan, ingested: Ingested, store: ResultStore | None = None) -> GridChips:
    """Chips of every cell, lazily: built once for a run, so no partition clips the dehazing.

    Each partition's chunks keep their neighbours' pixels for the dehazing halo.

    With a ``store``, each chunk of chips is reused when the tiles it is made of (and the
    settings) are unchanged, and computed and kept otherwise. Chunks with no cell of an
    extent's area are NaN: neither computed nor stored.
    """
    chips = chips_dask(ingested.imagery.data, p.grid.chip_px)
    outside = _outside_chunks(chips, p)
    if store is None:
        return GridChips(_without(chips, outside))
    data, keys = stored_chips(p.grid, p.config.imagery, chips, ingested.sources, store, outside)
    return GridChips(data, keys)


def whole(grid: CityGrid) -> Partition:
    """The partition that is the whole grid."""
    return Partition(0, 0, grid.nrows, grid.ncols)


def prepare(
    p: Plan,
    ingested: Ingested,
    store: ResultStore | None = None,
    part: Partition | None = None,
    chips: GridChips | None = None,
) -> Prepared:
    """Cut chips per cell and compute the activity features, of ``part``'s cells (default: all).

    ``chips``: the run's :func:`grid_chips` (made here when not given).
    """
    part = part or whole(p.grid)
    chips = chips or grid_chips(p, ingested, store)
    inside = None if p.inside is None else p.inside[_cells(p.grid, part)]
    made = delayed(_features, nout=2)(ingested.activity, part, inside)
    features = da.from_delayed(made[0], (part.n_cells, WEEKDAYS, 24), dtype=np.float32)
    has_activity = da.from_delayed(made[1], (part.n_cells,), dtype=np.float32)
    data = chips.data[part.rows, part.cols]
    if not chips.keys:
        return Prepared(data, features, has_activity)
    key = inputs_key(chips.key_of(part), ingested.activity_key, inside, part)
    return Prepared(data, features, has_activity, key)


# Cells whose features are made at once: their float intermediates stay small beside the
# partition's activity (a cell's features depend on its own activity alone).
FEATURE_CELLS = 16_384


def _features(
    activity: Activity, part: Partition, inside: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`activity_inputs` of ``part``'s cells, :data:`FEATURE_CELLS` at a time (a task).

    ``inside``: the partition's cells of an extent's area (None: all); the others have no input
    the model is given.
    """
    values = activity.values(part)
    weekdays = pd.DatetimeIndex(activity.day_dates).day_of_week.to_numpy()
    features = np.empty((len(values), WEEKDAYS, 24), np.float32)
    has_activity = np.empty(len(values), np.float32)
    for start in range(0, len(values), FEATURE_CELLS):
        cells = slice(start, start + FEATURE_CELLS)
        chunk = values[cells]
        features[cells], has_activity[cells] = activity_inputs(chunk, ~np.isnan(chunk), weekdays)
    if inside is not None:
        has_activity *= inside
    return features, has_activity


def _cells(grid: CityGrid, part: Partition) -> slice | np.ndarray:
    """``part``'s cells in per-cell arrays: a slice (no copy) when it spans whole rows."""
    if part.ncols == grid.ncols:
        return slice(part.row * grid.ncols, (part.row + part.nrows) * grid.ncols)
    return part.cells(grid.ncols)


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
    part: Partition | None = None,
) -> Predicted:
    """Run the model over every cell of ``part`` (default: all), chunk by chunk.

    One session per worker process. A cell with neither imagery nor signalling gets no class
    (``NO_CLASS``). With a ``store``, the predictions are reused when the chips, the activity
    and the model are unchanged. The preview has the whole grid's pixels per cell.
    """
    grid = p.grid
    part = part or whole(grid)
    thumbs = thumbnails_dask(prepared.chips, thumbnail_px(grid.nrows, grid.ncols, grid.chip_px))
    if store is None:
        out, preview, has_activity = _predicted_values(p, prepared, model, providers, thumbs, part)
    else:
        key = predictions_key(prepared.inputs_key, model)
        path = store.path("predictions", key, "npy")
        if store.use("predictions", key, "npy"):
            # The chips are in the store too: the preview reads them, it computes nothing.
            out = store.load_array(path)
            preview, has_activity = compute(thumbs, prepared.has_activity)
        else:
            out, preview, has_activity = _predicted_values(
                p, prepared, model, providers, thumbs, part
            )
            store.save_array(path, out)
    n_classes = out.shape[1] - 2
    prob, has_image = out[:, :n_classes], out[:, n_classes] > 0.5
    with_activity = has_activity > 0.5
    class_id = np.where(has_image | with_activity, prob.argmax(axis=1), NO_CLASS)
    return Predicted(prob, class_id.astype(np.uint8), has_image, with_activity, out[:, -1], preview)


def predict_partitions(
    p: Plan,
    ingested: Ingested,
    chips: GridChips,
    model: Path,
    store: ResultStore | None = None,
) -> Predicted:
    """:func:`prepare` and :func:`predict` each partition in turn, then :func:`combine` them.

    The partitions are the activity's (:func:`ingest`).
    Memory holds one partition's features and model inputs at a time. Partitions aligned to
    the chunks of ``chips`` predict each chunk as one block, as a single partition does, so
    the predictions are the same whatever the partitions.
    """
    pieces = []
    for part in ingested.activity.partitions:
        prepared = prepare(p, ingested, store, part, chips)
        pieces.append((part, predict(p, prepared, model, store=store, part=part)))
        del prepared
        release_memory()
    return combine(p.grid, pieces)


def combine(grid: CityGrid, pieces: list[tuple[Partition, Predicted]]) -> Predicted:
    """The predictions of the whole grid from those of partitions that cover it."""
    first = pieces[0][1]
    n, px = grid.n_cells, thumbnail_px(grid.nrows, grid.ncols, grid.chip_px)
    whole_grid = Predicted(
        np.empty((n, first.prob.shape[1]), np.float32),
        np.empty(n, np.uint8),
        np.empty(n, bool),
        np.empty(n, bool),
        np.empty(n, first.domain.dtype),
        np.zeros((grid.nrows * px, grid.ncols * px, 4), np.uint8),
    )
    for part, piece in pieces:
        cells = _cells(grid, part)
        for name in ("prob", "class_id", "has_image", "has_activity", "domain"):
            getattr(whole_grid, name)[cells] = getattr(piece, name)
        rows = slice(part.row * px, (part.row + part.nrows) * px)
        whole_grid.preview[rows, part.col * px : (part.col + part.ncols) * px] = piece.preview
    return whole_grid


def _predicted_values(
    p: Plan,
    prepared: Prepared,
    model: Path,
    providers: tuple[str, ...] | None,
    thumbs: da.Array,
    part: Partition,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's outputs, the preview and ``has_activity`` of ``part``'s cells.

    The outputs ``(cell, class + 2)`` float32: probabilities, has_image 0/1, domain score. All
    in one compute, so every chunk of chips and the features are made once for them.
    """
    n_classes = len(load_predictor(str(model), providers).contract.classes)
    chips = prepared.chips
    rows, cols = chips.chunks[:2]
    days, hours = prepared.activity.shape[1:]
    activity = prepared.activity.reshape(part.nrows, part.ncols, days, hours).rechunk(
        (rows, cols, days, hours)
    )
    has_activity = prepared.has_activity.reshape(part.nrows, part.ncols).rechunk((rows, cols))
    all_cells = np.ones(part.n_cells, dtype=bool)
    cells = all_cells if p.inside is None else p.inside[_cells(p.grid, part)]
    inside = da.from_array(cells.reshape(part.nrows, part.ncols), chunks=(rows, cols))
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
    values, preview, has = compute(out, thumbs, prepared.has_activity)
    return values.reshape(part.n_cells, n_classes + 2), preview, has
