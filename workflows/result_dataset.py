"""A published run's maps as one ``xarray.Dataset`` on the cell grid (rioxarray's conventions).

The maps are read from the run's own folder (``OUT/runs/<id>``, what ``OUT/latest`` pointed to
when opened), so a run published meanwhile cannot mix into the dataset, and loaded into memory,
so the history's pruning cannot pull files from under it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import rioxarray
import xarray as xr

from urbanfusion.models.classes import NO_CLASS
from urbanfusion.pipeline.errors import InputNotFoundError
from urbanfusion.workflows.output_names import (
    CELLS,
    CELLS_PARQUET,
    CLASS_MAP,
    MANIFEST,
    PROBABILITIES,
)
from urbanfusion.workflows.publish import OutputFolder

# Per-cell fields of ``cells.gpkg`` that become (y, x) variables, with their fill for no cell.
_CELL_FIELDS = {
    "margin": np.float32(np.nan),
    "domain_score": np.float32(np.nan),
    "in_domain": False,
    "has_imagery": False,
    "has_signalling": False,
}


def run_folder(path: Path) -> Path:
    """The folder of one published run: ``path`` itself, or the run an output folder publishes.

    Raises:
        InputNotFoundError: ``path`` is neither a run's folder nor an output folder with one.
    """
    path = Path(path)
    if (path / MANIFEST).is_file() and not (path / MANIFEST).is_symlink():
        return path.resolve()
    latest = OutputFolder(path).latest() if path.is_dir() else None
    if latest is None:
        raise InputNotFoundError(
            f"{path} holds no published run (no {MANIFEST}): give an output folder "
            "(`output.dir` of a config that has run) or one of its runs/<id> folders"
        )
    return latest


def open_result(path: Path) -> xr.Dataset:
    """The maps of the run published in ``path`` (an output folder or a ``runs/<id>`` folder).

    Variables on (y, x), the cell centres in the grid's CRS (``spatial_ref``, as rioxarray
    writes it, so ``ds.rio.crs``/``ds.rio.transform()`` and odc-geo read it):

    - ``class_id`` (uint8; 255 = no prediction) with CF ``flag_values``/``flag_meanings``;
    - ``probability`` (class, y, x) float32, NaN where no prediction;
    - ``margin`` (top-1 minus top-2 probability), ``domain_score`` (at most 1: in the model's
      domain), ``in_domain``, ``has_imagery``, ``has_signalling``.

    A run kept in the history holds only its class map: its dataset has ``class_id`` alone.
    The dataset's attributes name the city, the run, its previous run and the model.
    """
    folder = run_folder(path)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    class_map = _open_band(folder / CLASS_MAP).squeeze("band", drop=True)
    classes = class_map.attrs.get("CLASS_NAMES", "").split(",")
    ds = xr.Dataset({"class_id": class_map.astype(np.uint8)})
    ds["class_id"].attrs = {
        "long_name": "urban function class",
        "flag_values": np.arange(len(classes), dtype=np.uint8),
        "flag_meanings": " ".join(classes),
        "_FillValue": NO_CLASS,
    }
    if (folder / PROBABILITIES).is_file():
        prob = _open_band(folder / PROBABILITIES).rename(band="class")
        ds["probability"] = prob.assign_coords({"class": classes}).astype(np.float32)
        ds["probability"].attrs = {"long_name": "class probability (calibrated)"}
    for cells in (folder / CELLS, folder / CELLS_PARQUET):
        if cells.is_file():
            ds = ds.assign(_cell_fields(cells, class_map.shape))
    run = manifest.get("run") or {}
    model = manifest.get("model") or {}
    ds.attrs = {
        "city": str((manifest.get("config") or {}).get("name", "")),
        "run_id": str(run.get("id", folder.name)),
        "previous_run_id": str(run.get("previous") or ""),
        "model": str(model.get("path", "")) if isinstance(model, dict) else "",
        "source": str(folder),
    }
    return ds.rio.write_crs(class_map.rio.crs).rio.write_coordinate_system()


def _open_band(path: Path) -> xr.DataArray:
    """A GeoTIFF as a loaded DataArray (band, y, x) with its CRS, transform and tags."""
    opened = rioxarray.open_rasterio(path, mask_and_scale=False)
    if not isinstance(opened, xr.DataArray):  # a file of subdatasets (netCDF, HDF), not ours
        raise InputNotFoundError(f"{path}: not a single raster; was it written by a run?")
    with opened:
        loaded = opened.load()
    loaded.attrs = {k: v for k, v in loaded.attrs.items() if k not in ("_FillValue",)}
    return loaded


def _cell_fields(path: Path, shape: tuple[int, ...]) -> dict[str, xr.DataArray]:
    """The cells table's per-cell fields placed on the grid by each cell's row and column."""
    columns = ["row", "col", *_CELL_FIELDS]
    if path.suffix == ".parquet":
        table = pd.read_parquet(path, columns=columns)
    else:
        table = pyogrio.read_dataframe(path, layer="cells", columns=columns, read_geometry=False)
    rows, cols = table["row"].to_numpy(), table["col"].to_numpy()
    fields = {}
    for name, fill in _CELL_FIELDS.items():
        values = table[name].to_numpy()
        grid = np.full(shape, fill, dtype=np.asarray(fill).dtype)
        grid[rows, cols] = values.astype(grid.dtype)
        fields[name] = xr.DataArray(grid, dims=("y", "x"))
    return fields
