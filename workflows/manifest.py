"""``manifest.json``: what a run read, which model ran where, what it made; built in one place."""

from __future__ import annotations

import datetime as dt
import platform
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime
import rasterio

from urbanfusion.ingest.imagery import gdal_settings
from urbanfusion.models.inference import Predictor
from urbanfusion.pipeline.fingerprint import digest, file_entry, file_identity, file_sha256
from urbanfusion.pipeline.partitions import Partition
from urbanfusion.pipeline.remote_files import InputPath, RemoteFile, forget_identities
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.workflows.layout import Plan
from urbanfusion.workflows.output_names import REJECTS
from urbanfusion.workflows.run_fingerprint import inputs_fingerprint
from urbanfusion.workflows.stages import Ingested, Predicted

# Why a cell has no prediction (the only reason there is: the model needs one input).
NO_INPUT_REASON = "no imagery and no signalling"
OUTSIDE_AREA_REASON = "outside the extent's area"  # an extent given as a feature


def inputs_changed_during(p: Plan, fingerprint: dict[str, str], started: dt.datetime) -> str:
    """Inputs that changed while the run read them, as an error message ('' when none).

    The manifest lists each input's size and SHA-256 as they are when it is written; a file
    overwritten mid-run would be listed with its new content though the old rows were used.
    """
    forget_identities()  # a remote tile's server is asked again, as a local file is
    now = inputs_fingerprint(p)
    kinds = [k for k, v in now.items() if fingerprint.get(k) != v]
    if not kinds:
        return ""
    since = started.timestamp() * 1e9
    files = [
        str(f)
        for f in (*p.tiles, *p.signalling_files, *([p.area_file] if p.area_file else []))
        if f.is_file() and f.stat().st_ctime_ns >= since
    ]
    named = f" ({', '.join(files[:3])})" if files else ""
    return (
        f"{' and '.join(kinds)} input files changed while the run read them{named}; nothing was "
        "published: run again once the delivery is complete"
    )


def input_entry(path: InputPath, store: ResultStore | None) -> dict[str, object]:
    """:func:`~urbanfusion.pipeline.fingerprint.file_entry` of an input, its hash kept in ``store``.

    A local file's SHA-256 is kept under the file's identity (size, times, inode: what the
    up-to-date check trusts), so a nightly run does not read every unchanged tile and day file
    again for the manifest: 4 GB and about 4 s a run on the 10,000 km2 city. ``--force``
    (a store that reuses nothing) hashes every file again.
    """
    if store is None or isinstance(path, RemoteFile):
        return file_entry(path)
    key = digest(file_identity(path))
    where = store.path("hashes", key, "json")
    if store.use("hashes", key, "json"):
        saved = store.load_json(where)
        if isinstance(saved, dict) and isinstance(saved.get("sha256"), str):
            return {"path": str(path), "bytes": saved["bytes"], "sha256": saved["sha256"]}
    entry = file_entry(path)
    store.save_json(where, {"bytes": entry["bytes"], "sha256": entry["sha256"]})
    return entry


def build_manifest(
    p: Plan,
    ingested: Ingested,
    predicted: Predicted,
    predictor: Predictor,
    *,
    started: dt.datetime,
    scheduler: str,
    partitions: list[Partition],
    run: dict[str, str | None],
    fingerprint: dict[str, str],
    store: ResultStore | None,
    changes: dict[str, object],
) -> dict[str, object]:
    """The manifest of a run from its stages' results, all but what :func:`finish_manifest` adds.

    Args:
        p: the plan.
        ingested: what ingest read, with its tile and signalling reports.
        predicted: what predict made.
        predictor: the model session that predicted (its provider is the one really used).
        started: when the run began (UTC).
        scheduler: the dask scheduler, as :func:`~.scheduler.dask_scheduler` describes it.
        partitions: the rectangles of cells the run prepared and predicted one at a time.
        run: this run's id and the previous run's (None: none).
        fingerprint: the inputs' fingerprint a later run compares with (nothing changed?).
        store: the run's store (None: none): per kind of stored result, how many this run
            computed and how many it reused go to the manifest; each input's SHA-256 is kept
            there under the file's identity (:func:`input_entry`).
        changes: what changed since the previous run.
    """
    config, contract = p.config, predictor.contract
    done = predicted.predicted
    counts = np.bincount(predicted.class_id[done], minlength=len(contract.classes))
    tiles = [t.to_dict() for t in ingested.tiles]
    # Before the store's counts, which then count the inputs' hashes too.
    inputs = {
        "tiles": [input_entry(f, store) for f in p.tiles],
        "signalling": [input_entry(f, store) for f in p.signalling_files],
    }
    return {
        "urbanfusion": version("urbanfusion"),
        "started": started.isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "config": config.model_dump(mode="json"),
        "config_dir": str(config.base_dir),
        "grid": p.grid.describe(),
        # The extent's box in WGS84 (an area's bounding box): what "the same city" compares.
        "extent_wgs84": list(p.bbox),
        "area": None
        if p.area_file is None or p.inside is None
        else {"file": str(p.area_file), "cells_inside": int(p.inside.sum())},
        "dask": {"scheduler": scheduler},
        # Each partition's first row and column of cells, and its size: [row, col, rows, cols].
        "partitions": {
            "count": len(partitions),
            "largest_cells": max(part.n_cells for part in partitions),
            "cells": [list(part) for part in partitions],
        },
        "inputs": inputs,
        "imagery": {
            "tiles_used": sum(t["status"] == "used" for t in tiles),
            "tiles_skipped": sum(t["status"] == "skipped" for t in tiles),
            "tiles_failed": [
                {"path": t["path"], "reason": t["reason"]} for t in tiles if t["status"] == "failed"
            ],
            "tiles": tiles,
        },
        "signalling": {**ingested.signalling.to_dict(), "rejects_file": REJECTS},
        "model": {
            "path": str(predictor.path),
            "sha256": file_sha256(predictor.path),
            "provider": predictor.provider,
            "providers_requested": predictor.requested_providers,
            "architecture": contract.architecture,
            "trained_on": contract.trained_on,
            "temperature": contract.temperature,
            "calibration": contract.calibration,
        },
        "cells": {
            "total": int(p.grid.n_cells),
            "predicted": int(done.sum()),
            "no_prediction": no_prediction(done, p.inside),
            "with_imagery": int(predicted.has_image.sum()),
            "with_signalling": int(predicted.has_activity.sum()),
            "per_class": {c: int(n) for c, n in zip(contract.classes, counts, strict=True)},
            # Share of predicted cells whose inputs look like the model's training data.
            "in_domain_share": predicted.in_domain_share(),
        },
        "run": run,
        "fingerprint": fingerprint,
        "store": dict(store.summary()) if store is not None else {},
        "changes": changes,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__,
            "onnxruntime": onnxruntime.__version__,
            "dask": version("dask"),
        },
        # Reads depend on these (the block cache above all): set on purpose, recorded.
        "gdal_settings": gdal_settings(),
    }


def no_prediction(done: np.ndarray, inside: np.ndarray | None) -> dict[str, int]:
    """Cells without a prediction, by reason (outside an extent's area, or no input)."""
    if inside is None:
        return {NO_INPUT_REASON: int((~done).sum())}
    return {NO_INPUT_REASON: int((~done & inside).sum()), OUTSIDE_AREA_REASON: int((~inside).sum())}


def output_entries(staging: Path) -> dict[str, dict[str, object]]:
    """Each file in ``staging`` (every output but the manifest) with its size and hash."""
    return {f.name: file_entry(f, relative=True) for f in sorted(staging.iterdir())}


def finish_manifest(
    manifest: dict[str, object],
    outputs: dict[str, dict[str, object]],
    timings: dict[str, float],
) -> dict[str, object]:
    """The manifest with what is only known last: the outputs' hashes, every stage's time."""
    return {**manifest, "outputs": outputs, "timings_s": dict(timings)}
