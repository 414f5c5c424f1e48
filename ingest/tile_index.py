"""The footprints of all tiles, cached, so only tiles that touch an extent are opened again.

One row per file: path and identity (size, modification and change times, inode: the cache
key, :func:`~urbanfusion.pipeline.fingerprint.stat_identity`), CRS (WKT), bounds in that
CRS, resolution, dtype, band count and names, nodata, acquisition date, and the reason a file
could not be read. The cache is a Parquet file under the user's cache folder
(``$XDG_CACHE_HOME/urbanfusion``, else ``~/.cache/urbanfusion``); a file whose size or
identity changed is read again. A cache that cannot be written is simply not kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import pandas as pd
import rasterio
from rasterio.errors import RasterioError

from urbanfusion.pipeline.atomic import replacing
from urbanfusion.pipeline.cache import cache_dir
from urbanfusion.pipeline.fingerprint import stat_identity
from urbanfusion.pipeline.remote_files import InputPath, RemoteFile

_COLUMNS = [
    "path",
    "size",
    "mtime_ns",
    "ctime_ns",
    "inode",
    "crs",
    "left",
    "bottom",
    "right",
    "top",
    "res_x",
    "res_y",
    "dtype",
    "bands",
    "band_names",
    "nodata",
    "acquired",
    "error",
]
_NAME_DATE = re.compile(
    r"(?<!\d)(20\d{2}|19\d{2})[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)"
)
_DATE_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "TIFFTAG_DATETIME")


def _date_from(tags: dict[str, str], name: str) -> str | None:
    for key in _DATE_TAGS:
        value = tags.get(key)
        if value:
            m = re.match(r"(\d{4})[:\-/]?(\d{2})[:\-/]?(\d{2})", value.strip())
            if m:
                try:
                    return dt.date(*map(int, m.groups())).isoformat()
                except ValueError:
                    pass
    m = _NAME_DATE.search(name)
    if m:
        try:
            return dt.date(*map(int, m.groups())).isoformat()
        except ValueError:
            return None
    return None


def describe_tile(path: InputPath) -> dict[str, object]:
    """One index row for a file (``error`` says why it cannot be used, else empty)."""
    row: dict[str, object] = {c: None for c in _COLUMNS}
    row.update(path=str(path), **_identity(path), error="")
    try:
        with rasterio.open(path) as src:
            row.update(
                dtype=src.dtypes[0],
                bands=src.count,
                band_names="|".join(
                    (d or c.name).lower()
                    for d, c in zip(src.descriptions, src.colorinterp, strict=True)
                ),
                nodata=src.nodata,
                res_x=abs(src.res[0]),
                res_y=abs(src.res[1]),
                acquired=_date_from(src.tags(), path.name),
            )
            if src.crs is None:
                row["error"] = "no CRS (georeference the file, e.g. gdal_edit.py -a_srs)"
                return row
            row.update(
                crs=src.crs.to_wkt(),
                **dict(zip(("left", "bottom", "right", "top"), src.bounds, strict=True)),
            )
    except (RasterioError, OSError) as err:
        row["error"] = f"unreadable: {str(err).splitlines()[0]}"
    return row


def _identity(path: InputPath) -> dict[str, int]:
    identity = stat_identity(path.stat())
    identity["size"] = identity.pop("bytes")
    return identity


def _cache_file(paths: list[InputPath]) -> Path:
    folders = sorted(
        {p.folder if isinstance(p, RemoteFile) else str(p.parent.resolve()) for p in paths}
    )
    key = hashlib.sha256("\n".join(folders).encode()).hexdigest()[:16]
    return cache_dir() / f"tiles-{key}.parquet"


def tile_index(paths: list[InputPath], use_cache: bool = True) -> pd.DataFrame:
    """Index rows for ``paths`` in their order, reading only files new or changed since cached."""
    cache = _cache_file(paths) if paths else None
    known = pd.DataFrame(columns=_COLUMNS)
    if use_cache and cache is not None and cache.is_file():
        try:
            known = pd.read_parquet(cache)
        except (OSError, ValueError):
            known = pd.DataFrame(columns=_COLUMNS)
    by_path = {str(r["path"]): {str(k): v for k, v in r.items()} for r in known.to_dict("records")}
    rows, fresh = [], False
    for path in paths:
        row = by_path.get(str(path))
        identity = _identity(path)
        if row is None or any(row.get(k) != v for k, v in identity.items()):
            row, fresh = describe_tile(path), True
        rows.append(row)
    index = pd.DataFrame(rows, columns=_COLUMNS).astype(object)
    index = index.where(index.notna(), None)  # pandas 3 stores missing text as NaN
    if use_cache and fresh and cache is not None:
        merged = pd.concat([known[~known["path"].isin(index["path"])], index], ignore_index=True)
        try:
            with replacing(cache) as tmp:
                merged.astype(
                    {"nodata": "float64", "res_x": "float64", "res_y": "float64"}
                ).to_parquet(tmp)
        except OSError:
            pass  # a read-only cache folder costs speed, never correctness
    return index
