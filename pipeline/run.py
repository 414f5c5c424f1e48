"""Run the stages end to end and publish the outputs atomically.

Every input is checked (config, paths, model, tile coverage, signalling columns) before anything
is written. Outputs are written into a staging directory beside ``OUT`` and moved into ``OUT``
only when all of them are complete; on any failure the staging directory is removed, so a
failed run leaves no file behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import onnxruntime
import rasterio

import pipeline
from ingest.activity_store import write_activity
from models.classes import NO_CLASS
from models.inference import SHIPPED_MODEL, file_sha256, load_predictor
from pipeline.config import RunConfig
from pipeline.errors import ConfigError
from pipeline.progress import StageTimer
from pipeline.scheduler import dask_scheduler
from pipeline.stages import ingest, plan, predict, prepare
from pipeline.write import (
    cells_table,
    write_cells,
    write_class_map,
    write_json,
    write_probabilities,
    write_quicklook,
    write_rejects,
)

OUTPUT_FILES = (
    "class_map.tif",
    "probabilities.tif",
    "cells.gpkg",
    "activity.parquet",
    "rejects.parquet",
    "quicklook.png",
    "manifest.json",
)
NO_INPUT_REASON = "no imagery and no signalling"


@dataclass
class RunResult:
    """What a run produced."""

    output_dir: Path
    outputs: dict[str, Path]
    manifest: dict[str, object]
    class_id: np.ndarray  # (cell,) uint8, 255 = no prediction
    cell_ids: np.ndarray


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A staging directory beside ``out`` whose files move into ``out`` when the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _file_entry(path: Path) -> dict[str, object]:
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def run(config: RunConfig, timer: StageTimer | None = None) -> RunResult:
    """Run plan, ingest, prepare, predict and write for one config.

    Raises:
        UrbanFusionError: any problem with the inputs; nothing is written then.
    """
    timer = timer or StageTimer()
    started = dt.datetime.now(dt.UTC)
    model_path = config.model_path or SHIPPED_MODEL
    out = config.output_dir
    with dask_scheduler(config.dask) as scheduler:
        with timer.stage("plan", "grid, inputs and model"):
            p = plan(config)
            predictor = load_predictor(str(model_path))
            contract = predictor.contract
            if config.grid.chip_px != contract.chip_px:
                raise ConfigError(
                    f"grid.chip_px is {config.grid.chip_px} but the model {model_path.name} "
                    f"expects {contract.chip_px}; set grid.chip_px: {contract.chip_px}"
                )
            if len(config.imagery.bands) != len(contract.bands):
                raise ConfigError(
                    f"imagery.bands has {len(config.imagery.bands)} band(s) but the model "
                    f"expects {len(contract.bands)} ({contract.bands}); list that many bands"
                )
        with timer.stage(
            "ingest", f"{len(p.tiles)} tiles, {len(p.signalling_files)} signalling files"
        ):
            ingested = ingest(p)
        with timer.stage("prepare", f"{p.grid.n_cells} cells"):
            prepared = prepare(p, ingested)
        with timer.stage("predict", f"{p.grid.n_cells} cells on {predictor.provider}"):
            prob, has_image = predict(p, prepared, model_path)

    has_activity = prepared.has_activity > 0.5
    predicted = has_image | has_activity
    class_id = np.where(predicted, prob.argmax(axis=1), NO_CLASS).astype(np.uint8)
    reason = np.where(predicted, "", NO_INPUT_REASON)
    cells = cells_table(p.grid, prob, class_id, has_image, has_activity, reason, contract)

    with timer.stage("write", str(out)), staged_output(out) as staging:
        write_class_map(staging / "class_map.tif", p.grid, class_id, contract)
        write_probabilities(staging / "probabilities.tif", p.grid, prob, predicted, contract)
        write_cells(staging / "cells.gpkg", cells)
        write_rejects(staging / "rejects.parquet", ingested.rejects)
        write_activity(staging / "activity.parquet", ingested.activity)
        write_quicklook(staging / "quicklook.png", p.grid, class_id, contract, config.name)
        counts = np.bincount(class_id[predicted], minlength=len(contract.classes))
        tiles = [t.to_dict() for t in ingested.tiles]
        sig = ingested.signalling.to_dict()
        manifest: dict[str, object] = {
            "urbanfusion": pipeline.__version__,
            "started": started.isoformat(),
            "finished": dt.datetime.now(dt.UTC).isoformat(),
            "config": config.model_dump(mode="json"),
            "config_dir": str(config.base_dir),
            "grid": p.grid.describe(),
            "dask": {"scheduler": scheduler},
            "inputs": {
                "tiles": [_file_entry(f) for f in p.tiles],
                "signalling": [_file_entry(f) for f in p.signalling_files],
            },
            "imagery": {
                "tiles_used": sum(t["status"] == "used" for t in tiles),
                "tiles_skipped": sum(t["status"] == "skipped" for t in tiles),
                "tiles_failed": [
                    {"path": t["path"], "reason": t["reason"]}
                    for t in tiles
                    if t["status"] == "failed"
                ],
                "tiles": tiles,
            },
            "signalling": {**sig, "rejects_file": "rejects.parquet"},
            "model": {
                "path": str(model_path),
                "sha256": file_sha256(model_path),
                "provider": predictor.provider,
                "providers_requested": predictor.requested_providers,
                "architecture": contract.architecture,
                "trained_on": contract.trained_on,
            },
            "cells": {
                "total": int(p.grid.n_cells),
                "predicted": int(predicted.sum()),
                "no_prediction": {NO_INPUT_REASON: int((~predicted).sum())},
                "with_imagery": int(has_image.sum()),
                "with_signalling": int(has_activity.sum()),
                "per_class": {c: int(n) for c, n in zip(contract.classes, counts, strict=True)},
            },
            "timings_s": timer.timings,
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "rasterio": rasterio.__version__,
                "gdal": rasterio.__gdal_version__,
                "onnxruntime": onnxruntime.__version__,
                "dask": dask.__version__,
            },
        }
        write_json(staging / "manifest.json", manifest)
    return RunResult(
        out, {name: out / name for name in OUTPUT_FILES}, manifest, class_id, p.grid.cell_ids()
    )
