"""A run: the stages in the order data flows, on the config's dask scheduler.

The config, input paths and model are checked before anything is touched; then the run takes
the output folder's lock (one run per output at a time) and works through ingest, prepare and
predict; the write stage publishes all outputs at once or none (:mod:`.write`, :mod:`.publish`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import rasterio

from urbanfusion.models.inference import Predictor
from urbanfusion.pipeline.config import RunConfig
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.pipeline.remote_files import gdal_for_remote, is_remote
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.workflows.changes import Changes, empty_changes
from urbanfusion.workflows.layout import Plan, layout
from urbanfusion.workflows.output_names import CLASS_MAP, MANIFEST
from urbanfusion.workflows.planning import RunPlan, plan_run
from urbanfusion.workflows.publish import RUNS, STORE, OutputFolder
from urbanfusion.workflows.run_fingerprint import changed_since, run_fingerprint
from urbanfusion.workflows.s3_output import S3Output
from urbanfusion.workflows.scheduler import dask_scheduler
from urbanfusion.workflows.stages import (
    grid_chips,
    ingest,
    open_model,
    predict_partitions,
)
from urbanfusion.workflows.up_to_date import up_to_date_summary
from urbanfusion.workflows.write import write

# Below this share of cells in the model's domain, a run says its map is not to be trusted.
IN_DOMAIN_WARN_SHARE = 0.5


@dataclass
class RunResult:
    """What a run produced (``urbanfusion.api.open_result`` opens its maps as a Dataset)."""

    output_dir: Path
    outputs: dict[str, Path]
    manifest: dict[str, object]
    grid: CityGrid
    class_id: np.ndarray  # (cell,) uint8 in the grid's row-major order, 255 = no prediction
    changes: Changes
    up_to_date: bool = False  # nothing changed since the published run: nothing was computed
    # With an S3 output.dir: the published run's files as S3 URLs (``outputs`` are the local copy).
    published_to: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """The id of the published run these outputs are (``OUT/runs/<id>``)."""
        return str(cast(dict[str, object], self.manifest["run"])["id"])

    @property
    def run_folder(self) -> Path:
        """The run's own folder (``OUT/runs/<id>``): still this run's after later ones publish."""
        return self.output_dir / RUNS / self.run_id

    @property
    def cell_ids(self) -> np.ndarray:
        """Stable int64 id of each cell, in ``class_id``'s order."""
        return self.grid.cell_ids()


def run(
    config: RunConfig,
    timer: StageTimer | None = None,
    wait: bool = True,
    force: bool = False,
    new_city: bool = False,
) -> RunResult:
    """Run plan, ingest, prepare, predict and write for one config.

    When nothing a run depends on changed since the published run (:func:`.run_fingerprint`),
    nothing is computed and the published outputs stand. Otherwise each stage reuses from the
    output folder's store what did not change (scene statistics per tile, chips per chunk, the
    activity, the predictions) and computes the rest; ``force`` recomputes everything. ``wait``:
    when another run holds the output folder, wait for it (else raise at once).

    An output folder belongs to one city: a run of another city (another name, or an extent
    that does not overlap) is refused unless ``new_city``, which starts the folder's history
    over for this city (nothing is compared with the other city's map).

    Raises:
        UrbanFusionError: any problem with the inputs; nothing is published then.
        ConfigError: the output folder holds another city's maps and ``new_city`` is false.
        OutputBusyError: another run is writing the output folder and ``wait`` is false.
    """
    timer = timer or StageTimer()
    started = dt.datetime.now(dt.UTC)
    out = OutputFolder(config.output_dir)
    url = config.output_url
    remote = None if url is None else S3Output(url, out, config.history.keep)
    if any(is_remote(path) for path in config.imagery.paths):
        gdal_for_remote()  # before a local cluster's workers start: they inherit it
    with dask_scheduler(config.dask) as scheduler:
        with timer.stage("plan", "grid, inputs, partitions and model"):
            # Partitions run one after the other, each on all the scheduler's workers.
            planned = plan_run(config, workers=1)
            predictor = open_model(config)
        # Said even when quiet (a nightly batch): a run that waits must say for whom.
        with (
            out.locked(wait, timer.warn),
            remote.locked(wait, timer.warn) if remote else contextlib.nullcontext(),
        ):
            if remote is not None:
                with timer.stage("pull", f"the published run and the store of {remote.url}"):
                    remote.pull()
            result = _unless_up_to_date(
                planned, predictor, out, scheduler, timer, started, force, new_city
            )
            if remote is not None:
                if not result.up_to_date:
                    with timer.stage("push", f"the store, the run and the pointer to {remote.url}"):
                        remote.push(result.run_folder)
                result.published_to = remote.outputs()
            return result


def _unless_up_to_date(
    planned: RunPlan,
    predictor: Predictor,
    out: OutputFolder,
    scheduler: str,
    timer: StageTimer,
    started: dt.datetime,
    force: bool,
    new_city: bool,
) -> RunResult:
    """The published run when nothing changed since it, else a new run (the lock is held)."""
    p = planned.layout
    config = p.config
    fingerprint = run_fingerprint(p, predictor.path)
    published = out.latest()
    if published is not None and not new_city:
        manifest = _manifest(published)
        _same_city(config, p.bbox, manifest, out.path)
        if not force and not changed_since(manifest, fingerprint):
            tampered = out.changed_outputs(published)
            if not tampered:
                return _up_to_date(p, out, published, manifest)
            timer.warn(
                f"{', '.join(tampered)} of run {published.name} changed after it was "
                f"published (written over in {out.path}?); making the run again"
            )
    store = ResultStore(out.path / STORE, reuse=not force)
    return _locked_run(
        planned, predictor, out, store, scheduler, timer, started, fingerprint, new_city
    )


def holds_another_city(config: RunConfig) -> bool:
    """Whether the config's output folder has published maps of another city (no lock taken)."""
    folder = OutputFolder(config.output_dir)
    published = folder.latest()
    if published is None:
        return False
    try:
        _same_city(config, layout(config).bbox, _manifest(published), folder.path)
    except ConfigError:
        return True
    return False


def _same_city(
    config: RunConfig,
    bbox: tuple[float, float, float, float],
    manifest: dict[str, object],
    out: Path | str,
) -> None:
    """Refuse to publish a city into a folder that holds another city's maps.

    Another name, or an extent that does not overlap the published one's: the change map
    would compare two cities and the history would mix them.
    """
    before = manifest.get("config")
    before = before if isinstance(before, dict) else {}
    # The box in WGS84: recorded since extents may be areas; a box config's own before that.
    name, extent = before.get("name"), manifest.get("extent_wgs84") or before.get("extent")
    apart = isinstance(extent, list) and not (
        extent[0] < bbox[2] and bbox[0] < extent[2] and extent[1] < bbox[3] and bbox[1] < extent[3]
    )
    if name == config.name and not apart:
        return
    raise ConfigError(
        f"output.dir {out} holds the maps of city '{name}' (extent {extent}), not of "
        f"'{config.name}' (extent {list(bbox)}): give each city its own output.dir, or run "
        "once with --new-city to start this folder's history over for this city"
    )


def _manifest(run_dir: Path) -> dict[str, object]:
    manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    return manifest if isinstance(manifest, dict) else {}


def what_would_run(config: RunConfig) -> str:
    """Without computing or locking anything: whether a run is up to date, else what changed.

    Raises:
        UrbanFusionError: the config, its inputs or the model are not usable (as a run would).
    """
    p, predictor = plan_run(config).layout, open_model(config)
    folder = OutputFolder(config.output_dir)
    url = config.output_url
    if url is not None:  # the bucket's pointer decides, not the local copy (maybe stale)
        remote = S3Output(url, folder, config.history.keep)
        pointer = remote.pointer()
        if pointer is None:
            return "would run: no published run yet"
        run_id, manifest, tampered = str(pointer["run"]), remote.run_manifest(pointer), []
    else:
        published = folder.latest()
        if published is None:
            return "would run: no published run yet"
        run_id, manifest = published.name, _manifest(published)
        tampered = folder.changed_outputs(published)
    _same_city(config, p.bbox, manifest, url or folder.path)
    changed = changed_since(manifest, run_fingerprint(p, predictor.path))
    changed += [f"{name} (written over)" for name in tampered]
    if not changed:
        return f"up to date (run {run_id})"
    return f"would run: {', '.join(changed)} changed since run {run_id}"


def _up_to_date(
    p: Plan, out: OutputFolder, published: Path, manifest: dict[str, object]
) -> RunResult:
    with rasterio.open(published / CLASS_MAP) as src:
        class_id = src.read(1).ravel()
    changes = Changes(
        empty_changes(p.grid),
        published.name,
        up_to_date_summary(published.name),
    )
    return RunResult(out.path, out.outputs(), manifest, p.grid, class_id, changes, True)


def _locked_run(
    planned: RunPlan,
    predictor: Predictor,
    out: OutputFolder,
    store: ResultStore,
    scheduler: str,
    timer: StageTimer,
    started: dt.datetime,
    fingerprint: dict[str, str],
    new_city: bool = False,
) -> RunResult:
    p = planned.layout
    with timer.stage("ingest", f"{len(p.tiles)} tiles, {len(p.signalling_files)} signalling files"):
        ingested = ingest(p, store, planned.partitions)
    for line in ingested.signalling.warnings():
        timer.warn(line)
    for tile in ingested.tiles:
        if tile.status == "used" and tile.note:
            timer.warn(tile.note)
    failed = [t for t in ingested.tiles if t.status == "failed"]
    for tile in failed:  # a gap in the map must not pass unseen (the manifest has them too)
        timer.warn(f"tile {tile.path} was not used: {tile.reason}")
    if failed:
        used = sum(t.status == "used" for t in ingested.tiles)
        timer.warn(f"{len(failed)} tile(s) failed, {used} used; --strict makes that an error")
    with timer.stage("prepare", f"chips of {p.grid.n_cells} cells"):
        chips = grid_chips(p, ingested, store)
    parts = planned.partitions
    with timer.stage(
        "predict",
        f"{p.grid.n_cells} cells in {len(parts)} partition(s) on {predictor.provider}",
    ):
        predicted = predict_partitions(p, ingested, chips, predictor.path, store)
    share = predicted.in_domain_share()
    if share is not None and share < IN_DOMAIN_WARN_SHARE:
        timer.warn(
            f"only {share:.0%} of the cells look like the data the model was trained on "
            f"({predictor.path.name}: {predictor.contract.trained_on or 'unknown data'}); its "
            "classes here are guesses: label zones of this city and train on them with "
            "`urbanfusion train`"
        )
    outputs, manifest, changes = write(
        p,
        ingested,
        predicted,
        predictor,
        out,
        started=started,
        scheduler=scheduler,
        partitions=parts,
        timer=timer,
        fingerprint=fingerprint,
        store=store,
        new_city=new_city,
    )
    store.keep_only_used()  # what the published run came from, no more
    return RunResult(out.path, outputs, manifest, p.grid, predicted.class_id, changes)
