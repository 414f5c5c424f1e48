"""The "nothing changed" path of a run: answered with the config and the files' identities alone.

An unchanged nightly rerun of a city does no work, so its cost is start-up: before this path it
imported every library of a run (rasterio, dask, onnxruntime, geopandas...) only to compare
digests. Here the check imports the config, the fingerprints and the output folder, nothing
that reads pixels, tables or models. When something changed (or the published files were
written over, or the folder is on S3 and needs its pointer), it answers None and the full run
decides, with its lock, exactly as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from urbanfusion.models.shipped import model_file
from urbanfusion.pipeline.config import RunConfig
from urbanfusion.workflows.output_names import MANIFEST
from urbanfusion.workflows.publish import OutputFolder
from urbanfusion.workflows.run_fingerprint import ConfigFiles, changed_since, run_fingerprint


def up_to_date_summary(run_id: str) -> str:
    """What a run that had nothing to do says of itself."""
    return (
        f"up to date: inputs, settings, model and code are those of run {run_id} "
        "(use --force to recompute)"
    )


class Published(NamedTuple):
    """A published run: its folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]


def published_unchanged(config: RunConfig) -> Published | None:
    """The published run when nothing the outputs depend on changed since it, else None.

    None also when there is no published run, the output is on S3, or the published files were
    changed after publishing: the full run then decides (it raises what a bad config raises).
    """
    if config.output_url is not None:
        return None
    folder = OutputFolder(config.output_dir)
    published = folder.latest()
    if published is None:
        return None
    try:
        manifest = json.loads((published / MANIFEST).read_text(encoding="utf-8"))
        files = ConfigFiles.of(config)
    except (OSError, ValueError):  # the full run says what is wrong, in its words
        return None
    if not isinstance(manifest, dict):
        return None
    model = model_file(config)
    if not model.is_file():
        return None
    if changed_since(manifest, run_fingerprint(files, model)):
        return None
    if folder.changed_outputs(published):
        return None
    return Published(published, manifest)
