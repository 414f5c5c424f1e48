"""``item.json``: a STAC Item describing a run's outputs, so a catalog can index nightly runs.

Made with pystac: the extent (WGS84 geometry and bbox), the days of signalling the map stands
for (``start_datetime``/``end_datetime``), the grid's CRS and shape (projection extension),
every output as an asset with its media type and roles, and the classes of ``class_map.tif``
(classification extension: value, name, title, colour, cell count). Asset paths are relative,
so the run folder can move and still be indexed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
from pyproj import Transformer
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension

from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract
from urbanfusion.pipeline import strict_json
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.workflows.output_names import (
    ACTIVITY,
    CELLS,
    CELLS_PARQUET,
    CHANGES,
    CLASS_MAP,
    ITEM,
    MANIFEST,
    MAP,
    MAP_TILES,
    PROBABILITIES,
    PROBABILITIES_STYLE,
    QUICKLOOK,
    REJECTS,
)

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
# Each output: media type, roles, title.
ASSETS: dict[str, tuple[str, list[str], str]] = {
    CLASS_MAP: (COG, ["data"], "Urban function class per cell"),
    PROBABILITIES: (COG, ["data"], "Probability of each class per cell"),
    PROBABILITIES_STYLE: ("application/xml", ["style"], "QGIS style of probabilities.tif"),
    CELLS: ("application/geopackage+sqlite3", ["data"], "Cells with class, inputs, scores"),
    CELLS_PARQUET: ("application/vnd.apache.parquet", ["data"], "Cells (GeoParquet)"),
    CHANGES: ("application/geopackage+sqlite3", ["data"], "Cells changed since last run"),
    ACTIVITY: ("application/vnd.apache.parquet", ["data"], "Hourly activity per cell"),
    REJECTS: ("application/vnd.apache.parquet", ["metadata"], "Rejected signalling rows"),
    QUICKLOOK: (pystac.MediaType.PNG, ["overview"], "Classes over the imagery"),
    MAP: (pystac.MediaType.HTML, ["overview"], "Interactive map (offline)"),
    MAP_TILES: ("application/vnd.pmtiles", ["overview"], "Map tiles of a region (PMTiles)"),
    MANIFEST: (pystac.MediaType.JSON, ["metadata"], "Run manifest: inputs, counts, hashes"),
    ITEM: (pystac.MediaType.GEOJSON, ["metadata"], "This STAC Item"),
}


def _day(value: object) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC)


def run_item(
    grid: CityGrid,
    contract: ModelContract,
    class_id: np.ndarray,
    manifest: dict[str, object],
    files: list[str],
) -> pystac.Item:
    """The STAC Item of a run; ``files`` are the output names present in the run folder."""
    x0, y0, x1, y1 = grid.bounds
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    lons, lats = zip(*ring, strict=True)
    signalling = manifest.get("signalling")
    signalling = signalling if isinstance(signalling, dict) else {}
    first, last = _day(signalling.get("first_day")), _day(signalling.get("last_day"))
    finished = dt.datetime.fromisoformat(str(manifest["finished"]))
    run = manifest["run"]
    item = pystac.Item(
        id=f"{manifest['config']['name']}-{run['id']}",  # type: ignore[index]
        geometry={"type": "Polygon", "coordinates": [[*map(list, ring), list(ring[0])]]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=None if first else finished,
        start_datetime=first,
        end_datetime=(last + dt.timedelta(days=1, seconds=-1)) if last else None,
        properties={
            "title": f"Urban functions of {manifest['config']['name']}",  # type: ignore[index]
            "created": finished.isoformat(),
            "urbanfusion:run": run["id"],  # type: ignore[index]
            "urbanfusion:previous_run": run["previous"],  # type: ignore[index]
            "urbanfusion:cell_size_m": grid.cell_size,
            "urbanfusion:model_sha256": manifest["model"]["sha256"],  # type: ignore[index]
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = grid.crs.to_string()
    proj.shape = [grid.nrows, grid.ncols]
    proj.bbox = [x0, y0, x1, y1]
    proj.transform = list(grid.transform)[:6]
    for name in files:
        if name not in ASSETS:
            continue
        media, roles, title = ASSETS[name]
        item.add_asset(name, pystac.Asset(f"./{name}", title=title, media_type=media, roles=roles))
    if CLASS_MAP in item.assets:
        counts = np.bincount(class_id[class_id != NO_CLASS], minlength=len(contract.classes))
        classes = [
            Classification.create(
                value=k,
                name=name,
                title=label,
                color_hint="{:02X}{:02X}{:02X}".format(*colour),
                count=int(n),
            )
            for k, (name, label, colour, n) in enumerate(
                zip(contract.classes, contract.labels, contract.colours, counts, strict=True)
            )
        ]
        classes.append(
            Classification.create(
                value=NO_CLASS,
                name="no_prediction",
                title="No prediction (no input)",
                nodata=True,
                count=int((class_id == NO_CLASS).sum()),
            )
        )
        ClassificationExtension.ext(item.assets[CLASS_MAP], add_if_missing=True).classes = classes
    return item


def write_item(path: Path, item: pystac.Item) -> None:
    """Write ``item.json`` (no self link: the folder may move)."""
    payload = item.to_dict(include_self_link=False, transform_hrefs=False)
    path.write_text(strict_json.dumps(payload, indent=2) + "\n", encoding="utf-8")
