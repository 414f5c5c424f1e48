"""A run: the stages in the order data flows, on the config's dask scheduler.

Every input is checked (config, paths, model, tile coverage, signalling columns) before anything
is written; the write stage publishes all outputs at once or none (:mod:`.write`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanfusion.pipeline.config import RunConfig
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.workflows.scheduler import dask_scheduler
from urbanfusion.workflows.stages import ingest, open_model, plan, predict, prepare
from urbanfusion.workflows.write import write


@dataclass
class RunResult:
    """What a run produced."""

    output_dir: Path
    outputs: dict[str, Path]
    manifest: dict[str, object]
    class_id: np.ndarray  # (cell,) uint8, 255 = no prediction
    cell_ids: np.ndarray


def run(config: RunConfig, timer: StageTimer | None = None) -> RunResult:
    """Run plan, ingest, prepare, predict and write for one config.

    Raises:
        UrbanFusionError: any problem with the inputs; nothing is written then.
    """
    timer = timer or StageTimer()
    started = dt.datetime.now(dt.UTC)
    with dask_scheduler(config.dask) as scheduler:
        with timer.stage("plan", "grid, inputs and model"):
            p = plan(config)
            predictor = open_model(config)
        with timer.stage(
            "ingest", f"{len(p.tiles)} tiles, {len(p.signalling_files)} signalling files"
        ):
            ingested = ingest(p)
        with timer.stage("prepare", f"{p.grid.n_cells} cells"):
            prepared = prepare(p, ingested)
        with timer.stage("predict", f"{p.grid.n_cells} cells on {predictor.provider}"):
            predicted = predict(p, prepared, predictor.path)
    outputs, manifest = write(
        p, ingested, predicted, predictor, started=started, scheduler=scheduler, timer=timer
    )
    return RunResult(config.output_dir, outputs, manifest, predicted.class_id, p.grid.cell_ids())
