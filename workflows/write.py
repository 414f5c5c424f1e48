"""The write stage: every output of a run, published as one set.

One writer per file, each writing exactly one path, all into the run's staging folder; the
manifest comes last with the others' hashes, and :class:`~.publish.OutputFolder` publishes the
folder with one atomic switch. On any failure the staging folder is removed, so no reader ever
sees half a file or a folder of two runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError, FeatureError, FieldError
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetWriter
from rasterio.shutil import copy as raster_copy
from rasterio.windows import Window

from urbanfusion.ingest.activity_store import write_activity
from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract
from urbanfusion.models.inference import Predictor
from urbanfusion.pipeline import strict_json
from urbanfusion.pipeline.atomic import ensure_room
from urbanfusion.pipeline.errors import InputFormatError, write_failure
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import Partition
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.workflows.changes import Changes, changes_since, write_changes
from urbanfusion.workflows.layout import Plan
from urbanfusion.workflows.manifest import (
    NO_INPUT_REASON,
    OUTSIDE_AREA_REASON,
    build_manifest,
    finish_manifest,
    inputs_changed_during,
    output_entries,
)
from urbanfusion.workflows.output_names import (
    ACTIVITY,
    CELLS,
    CELLS_PARQUET,
    CHANGES,
    CLASS_MAP,
    ITEM,
    MANIFEST,
    PROBABILITIES,
    QUICKLOOK,
    REJECTS,
)
from urbanfusion.workflows.publish import OutputFolder
from urbanfusion.workflows.quicklook import write_quicklook
from urbanfusion.workflows.stac import run_item, write_item
from urbanfusion.workflows.stages import Ingested, Predicted
from urbanfusion.workflows.styles import write_cells_style, write_probabilities_style
from urbanfusion.workflows.webmap.page import write_map


def _scratch_bytes(grid: CityGrid, count: int, itemsize: int) -> int:
    """The uncompressed scratch GeoTIFF's size, in whole blocks at every overview level.

    Also a bound on the COG copied from it (the same blocks, compressed).
    """
    block, total = _cog_blocksize(grid), 0
    for factor in [1, *_overview_factors(grid)]:
        rows, cols = -(-grid.nrows // factor), -(-grid.ncols // factor)
        total += -(-rows // block) * -(-cols // block) * block * block * count * itemsize
    return total


def _cog_blocksize(grid: CityGrid) -> int:
    """Largest power of two in [16, 512] at most half the longer side."""
    half = max(grid.nrows, grid.ncols) // 2
    size = 16
    while size * 2 <= min(half, 512):
        size *= 2
    return size


def _overview_factors(grid: CityGrid) -> list[int]:
    """Halvings down to a 2-pixel side: a map of a small city gets overviews too.

    GDAL's COG driver stops adding overviews once one fits in a block, which leaves a map smaller
    than a block (16 px) without any; we build them ourselves and have the driver keep them.
    """
    factors, f = [], 2
    while max(grid.nrows, grid.ncols) / f >= 2:
        factors.append(f)
        f *= 2
    return factors


def _write_cog(
    path: Path,
    grid: CityGrid,
    bands: Callable[[range], np.ndarray],
    count: int,
    dtype: str,
    nodata: float,
    resampling: str,
    colours: list[list[int]] | None = None,
    tags: dict[str, str] | None = None,
    band_names: list[str] | None = None,
) -> None:
    """Write ``count`` bands on the cell grid as a Cloud Optimized GeoTIFF, window by window.

    ``bands(rows)``: the values ``(band, row, col)`` of those rows of the grid. They go to a
    tiled GeoTIFF beside ``path`` a batch of rows at a time, which GDAL then gives overviews
    and copies into the COG: a region's map is never in memory whole.
    """
    profile = {
        "driver": "GTiff",
        "width": grid.ncols,
        "height": grid.nrows,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        # The COG's blocks: a small city's map is not padded to 256 px blocks on every level.
        "blockxsize": _cog_blocksize(grid),
        "blockysize": _cog_blocksize(grid),
        "BIGTIFF": "IF_SAFER",
    }
    scratch = path.with_name(f".{path.name}.staged.tif")
    # The scratch, and the COG (compressed, at most as large) beside it before the scratch goes,
    # must fit before GDAL writes: it does not stop at a full disk, and prints libtiff's
    # complaints past rasterio.
    ensure_room(scratch, 2 * _scratch_bytes(grid, count, np.dtype(dtype).itemsize))
    try:
        with rasterio.open(scratch, "w", **profile) as staged:
            _fill(staged, grid, bands, colours, tags, band_names)
            staged.build_overviews(_overview_factors(grid), Resampling[resampling.lower()])
        with rasterio.open(scratch) as staged:
            raster_copy(
                staged,
                path,
                driver="COG",
                BLOCKSIZE=_cog_blocksize(grid),
                COMPRESS="DEFLATE",
                OVERVIEWS="FORCE_USE_EXISTING",
            )
    finally:
        scratch.unlink(missing_ok=True)


def _fill(
    staged: DatasetWriter,
    grid: CityGrid,
    bands: Callable[[range], np.ndarray],
    colours: list[list[int]] | None,
    tags: dict[str, str] | None,
    band_names: list[str] | None,
) -> None:
    for rows in cell_batches(grid):
        window = Window(0, rows.start, grid.ncols, len(rows))
        staged.write(bands(rows), window=window)
    if colours is not None:
        staged.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
    if tags:
        staged.update_tags(**tags)
    for i, name in enumerate(band_names or [], start=1):
        staged.set_band_description(i, name)


def write_class_map(
    path: Path, grid: CityGrid, class_id: np.ndarray, contract: ModelContract
) -> None:
    """``class_map.tif``: uint8 class per cell, 255 = no prediction, colour table, names in tags."""
    _write_cog(
        path,
        grid,
        lambda rows: _rows(class_id, grid, rows).reshape(1, len(rows), grid.ncols),
        1,
        "uint8",
        nodata=NO_CLASS,
        resampling="NEAREST",
        colours=contract.colours,
        tags={
            "CLASS_NAMES": ",".join(contract.classes),
            **{f"CLASS_{i}": label for i, label in enumerate(contract.labels)},
            "NODATA_MEANING": "no prediction (see cells.gpkg no_data_reason)",
        },
    )


def write_probabilities(
    path: Path, grid: CityGrid, prob: np.ndarray, predicted: np.ndarray, contract: ModelContract
) -> None:
    """``probabilities.tif``: float32, one band per class (described by name), NaN = none."""
    n = len(contract.classes)

    def bands(rows: range) -> np.ndarray:
        data = np.where(_rows(predicted, grid, rows)[:, None], _rows(prob, grid, rows), np.nan)
        return data.astype(np.float32).T.reshape(n, len(rows), grid.ncols)

    _write_cog(
        path,
        grid,
        bands,
        n,
        "float32",
        nodata=float("nan"),
        resampling="AVERAGE",
        tags={"CLASS_NAMES": ",".join(contract.classes)},
        band_names=list(contract.classes),
    )


# Cells a batch of the cells table holds at most (whole rows of the grid; one row at least).
CELLS_BATCH = 65_536


def cell_batches(grid: CityGrid) -> Iterator[range]:
    """Rows of the grid a batch at a time: the same batches whatever the run's partitions."""
    step = max(1, CELLS_BATCH // grid.ncols)
    for first in range(0, grid.nrows, step):
        yield range(first, min(grid.nrows, first + step))


def _rows(values: np.ndarray, grid: CityGrid, rows: range) -> np.ndarray:
    """The per-cell ``values`` of those rows of the grid."""
    return values[rows.start * grid.ncols : rows.stop * grid.ncols]


def cells_table(
    grid: CityGrid,
    result: Predicted,
    contract: ModelContract,
    inside: np.ndarray | None = None,
    rows: range | None = None,
) -> gpd.GeoDataFrame:
    """The per-cell table of ``cells.gpkg``: every cell of the grid (of ``rows`` only).

    Predicted or not. ``inside``: the cells of an extent's area (None: every cell); the others
    say so.
    """
    cells = grid.cells(rows)
    rows = rows or range(grid.nrows)
    result = Predicted(
        _rows(result.prob, grid, rows),
        _rows(result.class_id, grid, rows),
        _rows(result.has_image, grid, rows),
        _rows(result.has_activity, grid, rows),
        _rows(result.domain, grid, rows),
    )
    inside = None if inside is None else _rows(inside, grid, rows)
    prob, class_id, predicted = result.prob, result.class_id, result.predicted
    names = np.array([*contract.classes, ""], dtype=object)
    cells["class_id"] = class_id.astype(np.int16)
    cells["class_name"] = names[np.where(predicted, class_id, len(contract.classes))]
    cells["confidence"] = np.where(predicted, prob.max(axis=1), np.nan).astype(np.float32)
    top2 = np.sort(prob, axis=1)[:, -2:] if prob.shape[1] > 1 else np.zeros((len(prob), 2))
    # Top-1 minus top-2: near 0 where the model hesitates between two classes.
    cells["margin"] = np.where(predicted, top2[:, 1] - top2[:, 0], np.nan).astype(np.float32)
    for i, name in enumerate(contract.classes):
        cells[f"p_{name}"] = np.where(predicted, prob[:, i], np.nan).astype(np.float32)
    # How far the cell's inputs are from the training data: at most 1 in domain (NaN: no score).
    cells["domain_score"] = np.where(predicted, result.domain, np.nan).astype(np.float32)
    cells["in_domain"] = predicted & ~result.out_of_domain
    cells["has_imagery"] = result.has_image.astype(bool)
    cells["has_signalling"] = result.has_activity.astype(bool)
    reason = np.where(predicted, "", NO_INPUT_REASON).astype(object)
    if inside is not None:
        reason[~inside] = OUTSIDE_AREA_REASON
    cells["no_data_reason"] = reason.astype(str)
    return cells[[c for c in cells.columns if c != "geometry"] + ["geometry"]]


def write_cells(path: Path, batches: Iterable[gpd.GeoDataFrame], grid: CityGrid) -> None:
    """``cells.gpkg`` (layer ``cells``), or ``cells.parquet`` as GeoParquet, batch by batch.

    One batch of cells in memory at a time: a region's millions of polygons never are.
    """
    if path.suffix == ".parquet":
        _write_geoparquet(path, batches, grid)
        return
    for i, cells in enumerate(batches):
        cells.to_file(path, layer="cells", driver="GPKG", engine="pyogrio", mode="a" if i else "w")


def _write_geoparquet(path: Path, batches: Iterable[gpd.GeoDataFrame], grid: CityGrid) -> None:
    """GeoParquet 1.0 (WKB polygons, the grid's CRS and bounds), a row group per batch.

    geopandas writes a whole frame at once; its metadata is the specification's, written here
    for the whole file.
    """
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": ["Polygon"],
                "crs": grid.crs.to_json_dict(),
                "bbox": list(grid.bounds),
            }
        },
    }
    writer: pq.ParquetWriter | None = None
    try:
        for cells in batches:
            table = pa.Table.from_pandas(
                pd.DataFrame(cells.drop(columns="geometry")), preserve_index=False
            ).append_column("geometry", pa.array(shapely.to_wkb(cells.geometry.values)))
            if writer is None:
                meta = {**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()}
                writer = pq.ParquetWriter(path, table.schema.with_metadata(meta))
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
    finally:
        if writer is not None:
            writer.close()


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Pretty JSON (``manifest.json``)."""
    path.write_text(strict_json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def write_rejects(path: Path, rejects: pd.DataFrame) -> None:
    """``rejects.parquet``: every rejected signalling row with its reason, file and line."""
    rejects.to_parquet(path, index=False)


def _write_outputs(
    p: Plan,
    ingested: Ingested,
    predicted: Predicted,
    contract: ModelContract,
    staging: Path,
    previous: Path | None,
    run_id: str,
) -> Changes:
    """Every output but the STAC Item and the manifest, into ``staging``; returns the changes."""
    grid, class_id = p.grid, predicted.class_id
    write_class_map(staging / CLASS_MAP, grid, class_id, contract)
    write_probabilities(
        staging / PROBABILITIES, grid, predicted.prob, predicted.predicted, contract
    )
    write_probabilities_style(staging / PROBABILITIES, contract)
    batches = (cells_table(grid, predicted, contract, p.inside, r) for r in cell_batches(grid))
    if p.config.output.cells_format == "parquet":
        write_cells(staging / CELLS_PARQUET, batches, grid)
    else:
        write_cells(staging / CELLS, batches, grid)
        write_cells_style(staging / CELLS, contract, class_id)  # QGIS keeps styles in a GeoPackage
    write_rejects(staging / REJECTS, ingested.rejects)
    activity = ingested.activity
    write_activity(staging / ACTIVITY, (activity.of(part) for part in activity.partitions))
    write_quicklook(staging / QUICKLOOK, grid, class_id, predicted.preview, contract, p.config.name)
    changes = changes_since(previous, grid, predicted, contract)
    write_changes(staging / CHANGES, changes)
    write_map(
        staging,
        grid,
        predicted,
        contract,
        ingested.activity,
        changes,
        p.config.name,
        run_id,
        predicted.out_of_domain,
    )
    return changes


# What pyogrio raises when a GeoPackage cannot be written (SQLite's disk I/O errors among them).
# What GDAL and OGR raise for a failed write. rasterio's CPLE_* errors (a COG copy that hits a
# full disk) are no RasterioError; rasterio defines them in rasterio._err only.
_GDAL_ERRORS = (
    RasterioError,
    CPLE_BaseError,
    DataLayerError,
    DataSourceError,
    FeatureError,
    FieldError,
)


def write(
    p: Plan,
    ingested: Ingested,
    predicted: Predicted,
    predictor: Predictor,
    out: OutputFolder,
    *,
    started: dt.datetime,
    scheduler: str,
    partitions: list[Partition],
    timer: StageTimer,
    fingerprint: dict[str, str],
    store: ResultStore | None = None,
    new_city: bool = False,
) -> tuple[dict[str, Path], dict[str, object], Changes]:
    """Write every output of a run and publish them at once (the caller holds ``out``'s lock).

    ``new_city``: the folder's earlier runs are of another city; nothing is compared with them.

    Returns:
        The path of each output by name (:data:`OUTPUT_FILES`, as readers open them), the
        manifest written, and what changed since the previous run.
    """
    grid, contract = p.grid, predictor.contract
    run_id, previous = out.next_run_id(), None if new_city else out.latest()
    with out.staging(run_id) as staging:
        with timer.stage("write", str(out.path)):
            try:
                changes = _write_outputs(
                    p, ingested, predicted, contract, staging, previous, run_id
                )
            except (OSError, *_GDAL_ERRORS) as err:
                # GDAL and SQLite say "write failed" or less; say where, and a full disk.
                raise write_failure(err, staging) from None
        with timer.stage("hash", "inputs and outputs (SHA-256)"):
            manifest = build_manifest(
                p,
                ingested,
                predicted,
                predictor,
                started=started,
                scheduler=scheduler,
                partitions=partitions,
                run={"id": run_id, "previous": previous.name if previous else None},
                fingerprint=fingerprint,
                store=store,
                changes=changes.to_dict(),
            )
            names = sorted({f.name for f in staging.iterdir()} | {ITEM, MANIFEST})
            item = run_item(grid, contract, predicted.class_id, manifest, names)
            write_item(staging / ITEM, item)
            outputs = output_entries(staging)
        changed = inputs_changed_during(p, fingerprint, started)
        if changed:  # the hashes just taken are not of what the run read
            raise InputFormatError(changed)
        # The manifest is the last file: it lists the others with their hashes, and every
        # stage's time, write and hash included (only its own write is not).
        manifest = finish_manifest(manifest, outputs, timer.timings)
        write_json(staging / MANIFEST, manifest)
        out.publish(staging, run_id, p.config.history.keep)
    return out.outputs(), manifest, changes
