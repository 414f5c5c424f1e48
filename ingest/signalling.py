"""Hourly signalling rows (time, lon, lat, count) to activity per (cell, day, hour).

Every row read is accounted for: it is aggregated into a cell, counted as outside the extent, or
written to the rejects table with a reason and its source file and line. So
``rows_read == rows_aggregated + rows_outside + rows_rejected`` always holds.

Time: naive timestamps are wall-clock time of the configured zone and are used as they are (so
daylight-saving changes cannot shift them); timestamps with an offset are converted to that zone.
Days and hours are local. Rows falling in the same (cell, local day, hour) are summed: a cell
holds several points of a signalling lattice.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import xarray as xr
from pyproj import Transformer

from ingest.coords import gcj02_to_wgs84
from pipeline.errors import InputFormatError, NoCoverageError
from pipeline.grid import CityGrid

REJECT_COLUMNS = ["source_file", "line", "reason", "raw"]
_AWARE = r"(?:Z|[+-]\d{2}:?\d{2})$"


@dataclass
class SignallingReport:
    """Counts for the manifest."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_aggregated: int = 0
    rows_outside: int = 0
    rows_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    count_aggregated: float = 0.0
    count_outside: float = 0.0
    first_day: str | None = None
    last_day: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)


@dataclass
class _FilePart:
    sums: pd.DataFrame  # cell, day (datetime64[D]), hour, count
    rejects: pd.DataFrame
    rows_read: int
    rows_outside: int
    count_outside: float


def _header(path: Path) -> list[str]:
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(1 << 16).decode("utf-8-sig", errors="replace")
    except OSError as err:
        raise InputFormatError(
            f"{path}: cannot read it ({str(err).splitlines()[0]}); check that it is a CSV "
            "or CSV.gz file"
        ) from None
    first = head.splitlines()[0] if head else ""
    return next(csv.reader(io.StringIO(first)), [])


def _local_wall_time(text: pd.Series, timezone: str) -> pd.Series:
    """Parse ISO-8601-like strings to naive local wall time; NaT where unparsable."""
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    valid = text.notna()
    aware = valid & text.str.strip().str.contains(_AWARE, regex=True, na=False)
    naive = valid & ~aware
    if naive.any():
        out[naive] = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
    if aware.any():
        parsed = pd.to_datetime(text[aware], errors="coerce", format="ISO8601", utc=True)
        out[aware] = parsed.dt.tz_convert(timezone).dt.tz_localize(None)
    return out


def read_signalling_file(
    path: Path,
    columns: dict[str, str],
    coords: Literal["wgs84", "gcj02"],
    timezone: str,
    grid: CityGrid,
) -> _FilePart:
    """Read one CSV (or CSV.gz) of long rows and sum its counts per (cell, local day, hour).

    Raises:
        InputFormatError: the file lacks a mapped column; the message lists expected and found.
    """
    found = _header(path)
    expected = [columns[k] for k in ("time", "lon", "lat", "count")]
    missing = [c for c in expected if c not in found]
    if missing:
        raise InputFormatError(
            f"{path}: missing column(s) {missing}; expected {expected} "
            f"(signalling.columns), found {found}; map the names under signalling.columns"
        )
    bad: list[tuple[int, str]] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        bad.append((row.number, row.text))
        return "skip"

    try:
        table = pcsv.read_csv(
            path,
            # Single-threaded parsing reports the line number of each malformed row.
            read_options=pcsv.ReadOptions(use_threads=False),
            parse_options=pcsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                include_columns=expected,
                column_types={c: pa.string() for c in expected},
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError) as err:
        detail = str(err).splitlines()[0]
        hint = "re-export it as UTF-8" if "UTF8" in detail else "check that it is a CSV file"
        raise InputFormatError(f"{path}: cannot read it as CSV ({detail}); {hint}") from None
    df = table.to_pandas()
    df.columns = ["time", "lon", "lat", "count"]
    # Physical line of every parsed row: the lines after the header that were not malformed.
    skipped = np.array(sorted(n for n, _ in bad), dtype=np.int64)
    lines = np.setdiff1d(np.arange(2, 2 + len(df) + len(skipped)), skipped)
    # Blank lines arrive as rows of nulls: they are not data, but they do count as lines.
    blank = df.isna().all(axis=1).to_numpy()
    df, lines = df[~blank].reset_index(drop=True), lines[~blank]

    when = _local_wall_time(df["time"], timezone)
    lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(np.float64)
    lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(np.float64)
    count = pd.to_numeric(df["count"], errors="coerce").to_numpy(np.float64)
    reason = np.full(len(df), "", dtype=object)
    checks = [
        (when.isna().to_numpy(), "unparsable time"),
        (~(np.isfinite(lon) & np.isfinite(lat)), "missing or non-numeric coordinates"),
        ((np.abs(lon) > 180) | (np.abs(lat) > 90), "coordinates out of range"),
        (~np.isfinite(count), "missing or non-numeric count"),
        (count < 0, "negative count"),
    ]
    for mask, why in checks:
        reason[(reason == "") & mask] = why
    ok = reason == ""

    rejects = pd.DataFrame(
        {
            "source_file": str(path),
            "line": np.concatenate([[n for n, _ in bad], lines[~ok]]).astype(np.int64),
            "reason": ["wrong number of fields"] * len(bad) + list(reason[~ok]),
            "raw": [t for _, t in bad]
            + [",".join(r) for r in df.loc[~ok].fillna("").astype(str).itertuples(index=False)],
        },
        columns=REJECT_COLUMNS,
    )

    lon, lat, count, when = lon[ok], lat[ok], count[ok], when[ok]
    if coords == "gcj02":
        lon, lat = gcj02_to_wgs84(lon, lat)
    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
    cell = grid.cell_index(x, y)
    inside = cell >= 0
    sums = (
        pd.DataFrame(
            {
                "cell": cell[inside],
                "day": when[inside].dt.floor("D").to_numpy(),
                "hour": when[inside].dt.hour.to_numpy(np.int8),
                "count": count[inside],
            }
        )
        .groupby(["cell", "day", "hour"], as_index=False, sort=False)["count"]
        .sum()
    )
    return _FilePart(
        sums=sums,
        rejects=rejects,
        rows_read=len(df) + len(bad),
        rows_outside=int((~inside).sum()),
        count_outside=float(count[~inside].sum()),
    )


def load_signalling(
    paths: list[Path],
    grid: CityGrid,
    columns: dict[str, str],
    coords: Literal["wgs84", "gcj02"] = "wgs84",
    timezone: str = "Asia/Shanghai",
) -> tuple[xr.Dataset, pd.DataFrame, SignallingReport]:
    """Read every file (one dask task each) and build activity ``(cell, day, hour)``.

    Returns:
        A dataset with ``activity`` (float32, NaN where not observed) and ``observed`` (bool),
        dims ``(cell, day, hour)``, ``cell`` in the grid's row-major order; the rejected rows;
        the counts for the manifest.

    Raises:
        InputFormatError: a file does not have the mapped columns.
        NoCoverageError: no valid row falls inside the extent.
    """
    parts: list[_FilePart] = list(
        dask.compute(
            *[dask.delayed(read_signalling_file)(p, columns, coords, timezone, grid) for p in paths]
        )
    )
    report = SignallingReport(files=[str(p) for p in paths])
    sums = pd.concat([p.sums for p in parts], ignore_index=True)
    sums = sums.groupby(["cell", "day", "hour"], as_index=False)["count"].sum()
    rejects = pd.concat([p.rejects for p in parts], ignore_index=True)
    report.rows_read = sum(p.rows_read for p in parts)
    report.rows_outside = sum(p.rows_outside for p in parts)
    report.count_outside = sum(p.count_outside for p in parts)
    report.rows_rejected = len(rejects)
    report.rows_aggregated = report.rows_read - report.rows_outside - report.rows_rejected
    report.reject_reasons = {str(k): int(v) for k, v in rejects["reason"].value_counts().items()}
    if sums.empty:
        raise NoCoverageError(
            f"signalling: none of the {report.rows_read} rows in {len(paths)} file(s) falls inside "
            f"the extent ({report.rows_outside} outside, {report.rows_rejected} rejected); "
            "check the extent, signalling.coords and signalling.columns"
        )
    report.count_aggregated = float(sums["count"].sum())
    first, last = sums["day"].min(), sums["day"].max()
    days = pd.date_range(first, last, freq="D")
    report.first_day, report.last_day = str(first.date()), str(last.date())

    activity = np.full((grid.n_cells, len(days), 24), np.nan, dtype=np.float32)
    day_index = ((sums["day"] - first) // pd.Timedelta(days=1)).to_numpy(np.int64)
    activity[sums["cell"].to_numpy(), day_index, sums["hour"].to_numpy()] = sums["count"].to_numpy()
    observed = ~np.isnan(activity)
    ds = xr.Dataset(
        {
            "activity": (("cell", "day", "hour"), activity),
            "observed": (("cell", "day", "hour"), observed),
        },
        coords={"cell": grid.cell_ids(), "day": days.to_numpy(), "hour": np.arange(24)},
    )
    return ds, rejects, report
