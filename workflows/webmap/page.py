"""``map.html``: one page with the run's map, for people to look at, offline.

Leaflet (vendored beside this module, BSD-2-Clause) and the run's data are inlined, so the file
opens from a disk or a mail attachment with no server and no network. The grid is shown in its
own metres (``L.CRS.Simple``: cells stay square and the scale bar is true), the imagery as the
preview the model saw, the classes one pixel per cell, the changed cells as a layer, and each
cell's details from compact byte arrays (base64) decoded in the page. A region's page reads its
classes and cells from ``map.pmtiles`` beside it instead (:mod:`.tiles`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer

from urbanfusion.ingest.activity_parts import Activity
from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract
from urbanfusion.pipeline.grid import ID_OFFSET, ID_SPAN, CityGrid
from urbanfusion.workflows.changes import Changes
from urbanfusion.workflows.output_names import MAP, MAP_TILES
from urbanfusion.workflows.quicklook import class_rgba
from urbanfusion.workflows.stages import Predicted
from urbanfusion.workflows.webmap import tiles as map_tiles
from urbanfusion.workflows.webmap.tiles import INLINE_MAX_CELLS, write_map_tiles

HERE = Path(__file__).parent
CLASS_OPACITY = 0.55
# Past this many cells the weekly profiles (168 bytes a cell) stay out of the page; the cells'
# class, probabilities and inputs are always in it.
ACTIVITY_MAX_CELLS = 60_000
CHANGED_RGBA = (255, 0, 80, 210)
NOT_OBSERVED = 255  # an hour of the weekly profile with no row at all


def _png_uri(rgba: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise OSError("could not encode a PNG for map.html")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def weekly_profiles(activity: xr.Dataset) -> np.ndarray:
    """Mean count per (cell, weekday, hour) over the run's days: ``(cell, 7, 24)``, NaN unseen."""
    values = activity["activity"].values  # (cell, day, hour), NaN where not observed
    weekday = pd.DatetimeIndex(activity["day"].values).day_of_week.to_numpy()
    out = np.full((values.shape[0], 7, 24), np.nan, np.float32)
    for d in range(7):
        days = values[:, weekday == d]
        if days.shape[1]:
            seen = (~np.isnan(days)).sum(axis=1)
            mean = np.nansum(days, axis=1) / np.maximum(seen, 1)
            out[:, d] = np.where(seen > 0, mean, np.nan)
    return out


def _profile_bytes(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Profiles as bytes scaled to each cell's peak (0-254, 255 unseen) and the peaks."""
    flat = profiles.reshape(len(profiles), -1)
    peak = np.nan_to_num(np.nanmax(np.where(np.isnan(flat), -np.inf, flat), axis=1), neginf=0.0)
    scaled = np.rint(flat / np.maximum(peak, 1e-9)[:, None] * 254)
    out = np.where(np.isnan(flat), NOT_OBSERVED, np.clip(scaled, 0, 254)).astype(np.uint8)
    return out, peak.astype(np.float32)


def _cell_bytes(
    grid: CityGrid,
    predicted: Predicted,
    contract: ModelContract,
    changes: Changes,
    out_of_domain: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: class id, flags, previous class (uint8) and probabilities x 255 (cell, K)."""
    class_id = predicted.class_id
    cell_ids = grid.cell_ids()
    changed = np.isin(cell_ids, changes.table["cell_id"].to_numpy())
    previous = np.full(grid.n_cells, NO_CLASS, np.uint8)
    if changed.any():
        names = {name: k for k, name in enumerate(contract.classes)}
        before = changes.table.set_index("cell_id")["previous_class"]
        previous[changed] = [names.get(n, NO_CLASS) for n in before.loc[cell_ids[changed]]]
    flags = (
        predicted.has_image.astype(np.uint8)
        | (predicted.has_activity.astype(np.uint8) << 1)
        | (changed.astype(np.uint8) << 2)
    )
    if out_of_domain is not None:
        flags |= out_of_domain.astype(np.uint8) << 3
    prob = np.where(predicted.predicted[:, None], predicted.prob, 0.0)
    prob_bytes = np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return class_id.astype(np.uint8), flags, previous, prob_bytes


def write_map(
    folder: Path,
    grid: CityGrid,
    predicted: Predicted,
    contract: ModelContract,
    activity: Activity,
    changes: Changes,
    title: str,
    run_id: str,
    out_of_domain: np.ndarray | None = None,
) -> None:
    """Write ``map.html`` into ``folder``, and past :data:`INLINE_MAX_CELLS` ``map.pmtiles``.

    A city's page holds every cell's details itself; a region's reads its classes and the
    details of the cells a user opens from the archive (:mod:`.tiles`).
    """
    class_id = predicted.class_id
    shape = (grid.nrows, grid.ncols)
    cells = _cell_bytes(grid, predicted, contract, changes, out_of_domain)
    changed = (cells[1] & 4) > 0
    counts = np.bincount(class_id[class_id != NO_CLASS], minlength=len(contract.classes))
    changes_layer = None
    if changes.previous_run and changed.any():
        layer = np.zeros((*shape, 4), np.uint8)
        layer[changed.reshape(shape)] = CHANGED_RGBA
        changes_layer = _png_uri(layer)
    preview = predicted.preview if predicted.preview.size else np.zeros((1, 1, 4), np.uint8)
    x0, y0, x1, y1 = grid.bounds
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    corners = [to_lonlat.transform(x, y) for x, y in ((x0, y1), (x1, y1), (x0, y0), (x1, y0))]
    class_layer = class_rgba(class_id.reshape(shape), contract)
    data: dict[str, object] = {
        "title": title,
        "run_id": run_id,
        "previous_run": changes.previous_run,
        "cells_changed": int(changed.sum()),
        "rows": grid.nrows,
        "cols": grid.ncols,
        "cell_size": grid.cell_size,
        "abs_row0": grid.row0,
        "abs_col0": grid.col0,
        "id_offset": ID_OFFSET,
        "id_span": ID_SPAN,
        "crs": grid.crs.to_string(),
        "corners_lonlat": corners,
        "opacity": CLASS_OPACITY,
        "classes": [
            {
                "name": name,
                "label": label,
                "colour": "#{:02x}{:02x}{:02x}".format(*colour),
                "count": int(n),
            }
            for name, label, colour, n in zip(
                contract.classes, contract.labels, contract.colours, counts, strict=True
            )
        ],
        "no_prediction": int((class_id == NO_CLASS).sum()),
        "imagery": _png_uri(preview),
        "changes_layer": changes_layer,
        "activity_note": "",
        "class_layer": None,
        "cells": None,
        "tiles": None,
    }
    if grid.n_cells > INLINE_MAX_CELLS:
        top = write_map_tiles(
            folder / MAP_TILES, class_layer, cells, corners, {"name": title, "run": run_id}
        )
        data["tiles"] = {
            "file": MAP_TILES,
            "top_zoom": top,
            "data_zoom": top + 1,
            "size": map_tiles.TILE,
        }
        data["activity_note"] = "weekly profiles are in activity.parquet for a region's cells"
    else:
        data["class_layer"] = _png_uri(class_layer)
        data["cells"] = _inline_cells(grid, activity, cells)
        if grid.n_cells > ACTIVITY_MAX_CELLS:
            data["activity_note"] = (
                f"weekly profiles are left out of pages over {ACTIVITY_MAX_CELLS:,} cells"
            )
    (folder / MAP).write_text(render(data), encoding="utf-8")


def _inline_cells(
    grid: CityGrid, activity: Activity, cells: tuple[np.ndarray, ...]
) -> dict[str, str | None]:
    """The cells' bytes as base64 for the page itself (weekly profiles up to a size)."""
    class_id, flags, previous, prob = cells
    out: dict[str, str | None] = {
        "class_id": _b64(class_id),
        "prob": _b64(prob),
        "flags": _b64(flags),
        "previous_class": _b64(previous) if (flags & 4).any() else None,
        "activity": None,
        "activity_peak": None,
    }
    if grid.n_cells <= ACTIVITY_MAX_CELLS:
        profiles = np.empty((grid.n_cells, 7, 24), np.float32)
        for part in activity.partitions:
            profiles[part.cells(grid.ncols)] = weekly_profiles(activity.of(part))
        profile, peak = _profile_bytes(profiles)
        out["activity"], out["activity_peak"] = _b64(profile), _b64(peak)
    return out


def render(data: dict[str, object]) -> str:
    """The HTML page for :func:`write_map`'s values, Leaflet and the page's code inlined.

    A region's page (``tiles`` set) also inlines pmtiles.js, which reads ``map.pmtiles``.
    """
    vendor = HERE / "vendor"
    pmtiles = ""
    if data.get("tiles"):
        pmtiles = f"<script>\n{(vendor / 'pmtiles.js').read_text(encoding='utf-8')}\n</script>\n"
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = str(data["title"]).replace("&", "&amp;").replace("<", "&lt;")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}: urbanfusion map</title>\n"
        f"<style>\n{(vendor / 'leaflet.css').read_text(encoding='utf-8')}\n</style>\n"
        f"<style>\n{(HERE / 'map.css').read_text(encoding='utf-8')}\n</style>\n"
        '</head>\n<body>\n<div id="map"></div>\n'
        f"<script>\n{(vendor / 'leaflet.js').read_text(encoding='utf-8')}\n</script>\n"
        f"{pmtiles}"
        f'<script type="application/json" id="run-data">{payload}</script>\n'
        f"<script>\n{(HERE / 'map.js').read_text(encoding='utf-8')}\n</script>\n"
        "</body>\n</html>\n"
    )
