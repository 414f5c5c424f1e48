"""Hourly signalling in, activity per (cell, local day, hour) out, every row accounted for.

Formats (``signalling.format``):

- ``points``: long rows ``time, lon, lat, count`` (CSV, CSV.gz, Parquet);
- ``grid``: long rows ``time, grid_id, count`` plus the platform's grid (``signalling.grid``);
- ``wide``: one row per grid id with a column per hour (``H0..H23``) and a day type per file or
  row, plus the platform's grid. A day type stands for weekdays, so wide tables become a
  reference week starting ``signalling.start`` (default Monday 2024-01-01);
- ``activity``: the ``activity.parquet`` of an earlier run (same CRS and cell size), reused.

Every row read is aggregated, counted outside the extent, counted outside the day range, or
written to the rejects table with a reason, its file and its line, so
``rows_read == rows_aggregated + rows_outside + rows_outside_time + rows_rejected``; the same
holds for the sums of counts. Blank lines are not rows.

Rules: naive timestamps are wall time in ``signalling.timezone``; timestamps with an offset are
converted to it (so a daylight-saving change never moves an hour). Rows of the same cell, local
day and hour are summed (a cell holds several points of a lattice, or parts of platform cells).
A row repeating the point (or grid id), day and hour of an earlier row is a duplicate: the first
one counts, the later ones are rejected as ``duplicate of an earlier row``, since platforms re-send
records and summing them would count people twice.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from urbanfusion.ingest.activity_store import stored_blocks
from urbanfusion.ingest.hourly import HourlyTotals, PointIndex, SeenHours, day_and_hour
from urbanfusion.ingest.platform_grid import PlatformGrid, read_platform_grid
from urbanfusion.ingest.row_blocks import RowBlock, lines_as_read, read_blocks
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.errors import InputFormatError, NoCoverageError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.prefetch import prefetched

REJECT_COLUMNS = ["source_file", "line", "reason", "raw"]
DUPLICATE = "duplicate of an earlier row (same place, day and hour)"
TOO_LARGE = "infinite count, or above signalling.max_count"
IMPLAUSIBLE_DATE = "date before 2000 or after tomorrow (a typo in the year?)"
# Reasons as small codes on the hot path, text only for the rows rejected; 0 = kept.
REASONS = np.array(
    [
        "",
        "wrong number of fields",
        "unparsable time",
        "missing or non-numeric coordinates",
        "coordinates out of range",
        "missing or non-numeric count",
        "negative count",
        DUPLICATE,
        "missing grid id",
        "unknown grid id (not in signalling.grid)",
        "unknown day type",
        "missing or non-numeric hour",
        TOO_LARGE,
        IMPLAUSIBLE_DATE,
    ],
    dtype=object,
)
_CODE = {reason: np.uint8(i) for i, reason in enumerate(REASONS)}


def _flag(code: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Give ``reason`` to rows in ``mask`` that have none yet (the first reason wins)."""
    code[(code == 0) & mask] = _CODE[reason]


WIDE_WEEK_START = dt.date(2024, 1, 1)  # a Monday
_EPOCH = dt.date(1970, 1, 1)


@dataclass
class SignallingReport:
    """Counts for the manifest."""

    format: str = "points"
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_aggregated: int = 0
    rows_outside: int = 0
    rows_outside_time: int = 0
    rows_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    count_read: float = 0.0
    count_aggregated: float = 0.0
    count_outside: float = 0.0
    count_outside_time: float = 0.0
    count_rejected: float = 0.0
    distinct_places: int = 0
    first_day: str | None = None
    last_day: str | None = None
    # Rows that would fall inside the extent with the points read in each datum (points
    # format): the declared one and the others, to catch a datum given wrongly.
    rows_inside_by_datum: dict[str, int] = field(default_factory=dict)
    datum: str = "wgs84"
    # signalling.window_days: the days kept, the rows it left out, and the days after it that
    # held too little data to anchor it (stray rows: a date mistyped).
    window: list[str] | None = None
    rows_left_by_window: int = 0
    stray_days: list[str] = field(default_factory=list)
    stray_rows: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)

    def warnings(self) -> list[str]:
        """A line to read after a run that used rows, when many were rejected for one cause.

        (Rows outside the extent are normal: exports are often larger than the extent.)
        """
        out = []
        if self.rows_read and self.rows_rejected > WARN_SHARE * self.rows_read:
            reason, n = Counter(self.reject_reasons).most_common(1)[0]
            hint = _REJECT_HINTS.get(reason, "see rejects.parquet")
            out.append(
                f"signalling: {self.rows_rejected} of {self.rows_read} rows rejected, {n} as "
                f"'{reason}'; {hint}"
            )
        if self.stray_days and self.window:
            days = ", ".join(self.stray_days[:3]) + (" ..." if len(self.stray_days) > 3 else "")
            out.append(
                f"signalling: {self.stray_rows} row(s) dated after {self.window[1]} ({days}) "
                "hold too little data to be days of the city; the window_days window ends on "
                f"{self.window[1]} and leaves them out: fix their dates if they are real"
            )
        if self.window and self.rows_read and self.rows_left_by_window > self.rows_read / 2:
            out.append(
                f"signalling: window_days keeps {self.window[0]} to {self.window[1]} and "
                f"leaves out {self.rows_left_by_window} of {self.rows_read} rows "
                f"({self.rows_left_by_window / self.rows_read:.0%}); raise "
                "signalling.window_days or deliver only the days to map"
            )
        declared = self.rows_inside_by_datum.get(self.datum)
        if declared is not None:
            best, n = max(self.rows_inside_by_datum.items(), key=lambda kv: kv[1])
            gain = n - declared
            if best != self.datum and gain >= max(DATUM_MIN_ROWS, DATUM_SHARE * self.rows_read):
                out.append(
                    f"signalling: {gain} more rows ({gain / self.rows_read:.1%}) fall inside "
                    f"the extent when the points are read as {best} instead of {self.datum}; "
                    f"if they come from a {_DATUM_SOURCES[best]}, set signalling.coords: {best}"
                )
        return out


# A share of the rows above which a single cause of loss is worth a warning line.
WARN_SHARE = 0.05
# A day with under this share of the (place, hour) pairs of a median day holds stray rows,
# not a day of the city: it cannot anchor signalling.window_days.
STRAY_SHARE = 0.1
# Read in the wrong datum, points move 300-600 m (GCJ-02) or ~1 km (BD-09): rows near the
# extent's edge cross it. Read in the right one, another datum loses rows at the edge (or
# changes little when the export is much larger than the extent). So a datum that brings this
# many more rows inside is the likelier one.
DATUM_SHARE = 0.0025
DATUM_MIN_ROWS = 20
_DATUM_SOURCES = {
    "wgs84": "GPS or an international map (WGS84)",
    "gcj02": "Chinese web map such as Amap/Gaode or Tencent (GCJ-02)",
    "bd09": "Baidu map (BD-09)",
}
_REJECT_HINTS = {
    DUPLICATE: (
        "rows repeating a place and hour often mean wrong time offsets (local times marked Z "
        "or UTC read as local): check signalling.timezone and the time column"
    ),
    "coordinates out of range": "are lon and lat swapped in signalling.columns?",
    "missing or non-numeric count": "is the count column text, or the wrong column?",
    "unparsable time": "check the time column and its format",
}


class RowLedger:
    """Rejects and counters of a file or a run, filled block by block."""

    def __init__(self, report: SignallingReport) -> None:
        self.report = report
        self.frames: list[pd.DataFrame] = []
        self.reasons: Counter[str] = Counter()
        # Sources whose rejected rows already hold the lines as read (a stored part's).
        self.as_read: set[str] = set()

    def malformed(self, block: RowBlock) -> None:
        """Reject the block's lines with the wrong number of fields (counted as read)."""
        if block.malformed:
            self.report.rows_read += len(block.malformed)
            self.reject(
                block.source,
                np.array([n for n, _ in block.malformed]),
                np.full(len(block.malformed), _CODE["wrong number of fields"]),
                [t for _, t in block.malformed],
                0.0,
            )

    def reject(
        self, source: str, line: np.ndarray, code: np.ndarray, raw: list[str], count: float
    ) -> None:
        """Reject rows of ``source`` at ``line`` for reason ``code``; ``count`` is their sum."""
        if len(line) == 0:
            return
        reason = REASONS[code]
        self.report.rows_rejected += len(line)
        self.report.count_rejected += count
        self.reasons.update(reason.tolist())
        self.frames.append(
            pd.DataFrame(
                {"source_file": source, "line": line.astype(np.int64), "reason": reason, "raw": raw}
            )
        )

    def merge(self, part: RowLedger) -> None:
        """Add what one file's own reading counted and rejected."""
        r, mine = part.report, self.report
        mine.rows_read += r.rows_read
        mine.count_read += r.count_read
        mine.rows_outside_time += r.rows_outside_time
        mine.count_outside_time += r.count_outside_time
        mine.rows_rejected += r.rows_rejected
        mine.count_rejected += r.count_rejected
        self.reasons.update(part.reasons)
        self.frames.extend(part.frames)
        self.as_read |= part.as_read

    def rejects(self) -> pd.DataFrame:
        """Every rejected row (source_file, line, reason, raw); sets the report's reasons.

        ``raw`` is the line as the file has it (read again for the files with rejects), or for
        Parquet the row's values.
        """
        self.report.reject_reasons = dict(self.reasons)
        if not self.frames:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in zip(REJECT_COLUMNS, ["str", "int64", "str", "str"], strict=True)
                }
            )
        table = pd.concat(self.frames, ignore_index=True)
        for source in table["source_file"].unique():
            if source in self.as_read:
                continue
            rows = (table["source_file"] == source).to_numpy()
            text = lines_as_read(Path(source), table.loc[rows, "line"].tolist())
            if text:
                raw = table.loc[rows, ["line", "raw"]]
                table.loc[rows, "raw"] = [text.get(n, r) for n, r in raw.itertuples(index=False)]
            self.as_read.add(source)
        self.frames = [table]
        return table


def _iso(day: int) -> str:
    return str(_EPOCH + dt.timedelta(days=day))


def _apply_window(
    totals: HourlyTotals, cfg: SignallingConfig, ledger: RowLedger, counted: bool
) -> tuple[int, int] | None:
    """Keep the ``window_days`` days ending on the newest day where the data is.

    The window is anchored on the newest *usual* day: one with at least :data:`STRAY_SHARE` of
    the (place, hour) pairs a median day observes. Days after it hold a few stray rows (a year
    or month mistyped): they stay out, and the report says so, instead of moving the window to
    them and leaving the real days out. Returns the window's first and last day.

    The rows of the days that leave the window move from aggregated to outside the days in the
    ledger (``counted``: their counts were already added to ``count_aggregated``).
    """
    if not cfg.window_days or not totals.days:
        return None
    seen = totals.observed_hours()
    usual = float(np.median(list(seen.values())))
    last = max(d for d, n in seen.items() if n >= STRAY_SHARE * usual)
    first = last - cfg.window_days + 1
    report = ledger.report
    stray_rows, stray_count = totals.drop_after(last)
    report.stray_days = [_iso(d) for d in seen if d > last]
    report.stray_rows = stray_rows
    rows, count = totals.drop_before(first)
    rows += stray_rows
    count += stray_count
    report.rows_aggregated -= rows
    report.rows_outside_time += rows
    report.count_outside_time += count
    report.rows_left_by_window = rows
    report.window = [_iso(first), _iso(last)]
    if counted:
        report.count_aggregated -= count
    return first, last


_PLAUSIBLE_FIRST_DAY = (dt.date(2000, 1, 1) - _EPOCH).days


def _plausible_last_day() -> int:
    # Counts of hours that have not happened yet are typos. Tomorrow, not today: the run's
    # clock is UTC-ish and a city's local day may already have begun.
    return (dt.datetime.now(dt.UTC).date() - _EPOCH).days + 1


def _day_range(cfg: SignallingConfig) -> tuple[int | None, int | None]:
    def days(d: dt.date | None) -> int | None:
        return None if d is None else (d - _EPOCH).days

    return days(cfg.start), days(cfg.end)


def _timed_rows(
    block: RowBlock,
    ledger: RowLedger,
    place: np.ndarray,
    place_reason: np.ndarray,
    day_range: tuple[int | None, int | None],
    seen: SeenHours,
    max_count: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the time and count of rows whose place is known; reject the rest with a reason.

    Returns the kept rows' place, day, hour, count and line (inside the day range, not
    duplicates).
    """
    when, count = block.columns["time"], block.columns["count"]
    code = place_reason.copy()
    _flag(code, np.isnat(when), "unparsable time")
    _flag(code, np.isnan(count), "missing or non-numeric count")
    _flag(code, count < 0, "negative count")
    too_large = count > max_count  # inf too: one such row must not swamp a city's totals
    _flag(code, too_large, TOO_LARGE)
    numeric = np.where(np.isnan(count) | too_large, 0.0, count)
    ledger.report.count_read += float(numeric.sum())
    idx = np.flatnonzero(code == 0)
    day, hour = day_and_hour(when[idx])
    # Mobile-phone signalling from before 2000 or from the future is a typo, and one such row
    # would stretch the day axis by decades.
    implausible = (day < _PLAUSIBLE_FIRST_DAY) | (day > _plausible_last_day())
    code[idx[implausible]] = _CODE[IMPLAUSIBLE_DATE]
    idx, day, hour = idx[~implausible], day[~implausible], hour[~implausible]
    first, last = day_range
    in_time = np.ones(len(idx), dtype=bool)
    if first is not None:
        in_time &= day >= first
    if last is not None:
        in_time &= day <= last
    ledger.report.rows_outside_time += int((~in_time).sum())
    ledger.report.count_outside_time += float(count[idx[~in_time]].sum())
    idx, day, hour = idx[in_time], day[in_time], hour[in_time]
    fresh = seen.first_time(place[idx], day, hour)
    code[idx[~fresh]] = _CODE[DUPLICATE]
    bad = np.flatnonzero(code)
    ledger.reject(
        block.source, block.line[bad], code[bad], block.text(bad), float(numeric[bad].sum())
    )
    idx, day, hour = idx[fresh], day[fresh], hour[fresh]
    return place[idx], day, hour, count[idx], block.line[idx]


@dataclass
class PointRows:
    """Kept rows of a ``points`` file, a block of them, in file order.

    ``place`` are ids into the file's own places; the block brings the places that it is the
    first to use (``new_places``), so the places of a file are known block by block.
    """

    new_places: np.ndarray  # complex128 lon + 1j*lat, ids len(before) .. len(before) + n - 1
    place: np.ndarray  # int64
    day: np.ndarray  # int64 days since 1970-01-01, local
    hour: np.ndarray  # int64
    count: np.ndarray  # float64
    line: np.ndarray  # int64, for a duplicate found across files


@dataclass
class PointsPart:
    """One ``points`` file read on its own: its kept rows (deduplicated within it), block by block.

    Files are read independently (in any order, on any dask worker, or taken from a run store);
    :func:`_combine_points` then does, in file order, what one pass over all files would: a row
    repeating the place, day and hour of an earlier file is a duplicate, the others are counted
    inside or outside the extent. So a new daily file is the only one read again.

    ``blocks`` is read once; the file's counts and rejects in ``ledger`` are whole after that.
    Memory holds a block, never the file.
    """

    source: str
    blocks: Iterable[PointRows]
    ledger: RowLedger


def _points_mapping(cfg: SignallingConfig) -> dict[str, str]:
    c = cfg.columns
    return {"time": c.time, "lon": c.lon, "lat": c.lat, "count": c.count}


def points_part(path: Path, grid: CityGrid, cfg: SignallingConfig) -> PointsPart:
    """One ``points`` file, read as its blocks are taken: bad rows rejected, the rest kept.

    Reading raises InputFormatError when the file is unreadable or lacks the mapped columns.
    """
    ledger = RowLedger(SignallingReport(format=cfg.format, files=[str(path)]))
    return PointsPart(str(path), _point_blocks(path, grid, cfg, ledger), ledger)


def _point_blocks(
    path: Path, grid: CityGrid, cfg: SignallingConfig, ledger: RowLedger
) -> Iterator[PointRows]:
    places = PointIndex(grid, cfg.coords)
    seen = SeenHours()
    day_range = _day_range(cfg)
    # Parsing runs a block ahead on its own thread, as the checks run ahead of the combining.
    for block in prefetched(read_blocks(path, _points_mapping(cfg), cfg.timezone)):
        ledger.malformed(block)
        block = block.take(~block.blank())
        ledger.report.rows_read += len(block)
        lon, lat = block.columns["lon"], block.columns["lat"]
        finite = np.isfinite(lon) & np.isfinite(lat)
        in_range = finite & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        place_reason = np.zeros(len(block), np.uint8)
        _flag(place_reason, ~finite, "missing or non-numeric coordinates")
        _flag(place_reason, ~in_range, "coordinates out of range")
        place = np.full(len(block), -1, dtype=np.int64)
        known = len(places)
        place[in_range] = places.ids(lon[in_range], lat[in_range])
        kept = _timed_rows(block, ledger, place, place_reason, day_range, seen, cfg.max_count)
        yield PointRows(places.keys(known), *kept)


def _rendered_rows(path: str, lines: np.ndarray, cfg: SignallingConfig) -> list[str]:
    """The rejects table's text of some rows of a file, re-sent from an earlier file.

    A Parquet file's rows rendered from their values (read again: rare). A CSV's are left
    empty here: :meth:`RowLedger.rejects` fills every rejected line of a file as written, in
    one pass for all of them.
    """
    if not path.lower().endswith(".parquet"):
        return [""] * len(lines)
    wanted = set(lines.tolist())
    found: dict[int, str] = {}
    for block in read_blocks(Path(path), _points_mapping(cfg), cfg.timezone):
        hit = np.flatnonzero(np.isin(block.line, lines))
        found.update(zip(block.line[hit].tolist(), block.text(hit), strict=True))
        if len(found) == len(wanted):
            break
    return [found.get(int(n), "") for n in lines]


def _where(mask: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays' items where ``mask`` is true.

    When it is true everywhere (the usual case), the arrays themselves, without copying every
    column of every block.
    """
    return arrays if mask.all() else tuple(a[mask] for a in arrays)


def _combine_points(
    parts: Iterable[PointsPart], grid: CityGrid, cfg: SignallingConfig, ledger: RowLedger
) -> HourlyTotals:
    """Aggregate the parts of the files in order, exactly as one pass over all of them.

    Each part's blocks are produced on a second thread (parsed and checked, or read from the
    store) while this one adds the previous block: the two cores, in file order.
    """
    places = PointIndex(grid, cfg.coords)
    seen = SeenHours()
    totals = HourlyTotals(grid.n_cells)
    rows_at = np.zeros(0, np.int64)  # kept rows per place
    for part in parts:
        to_global = np.zeros(0, np.int64)  # the part's place ids -> ours
        resent: list[np.ndarray] = []  # lines of rows re-sent from an earlier file
        resent_count = 0.0
        for rows in prefetched(part.blocks):
            if len(rows.new_places):
                new = places.ids(rows.new_places.real, rows.new_places.imag)
                to_global = np.concatenate([to_global, new])
            pid = to_global[rows.place]
            fresh = seen.first_time(pid, rows.day, rows.hour)
            if not fresh.all():
                resent.append(rows.line[~fresh])
                resent_count += float(rows.count[~fresh].sum())
            pid, day, hour, count = _where(fresh, pid, rows.day, rows.hour, rows.count)
            kept = np.bincount(pid, minlength=len(places))
            kept[: len(rows_at)] += rows_at
            rows_at = kept
            cell = places.cell[pid]
            inside = cell >= 0
            ledger.report.rows_outside += int((~inside).sum())
            ledger.report.count_outside += float(count[~inside].sum())
            cell, day, hour, count = _where(inside, cell, day, hour, count)
            ledger.report.rows_aggregated += len(cell)
            ledger.report.count_aggregated += float(count.sum())
            totals.add(cell, day, hour, count)
        ledger.merge(part.ledger)
        if resent:
            lines = np.concatenate(resent)
            ledger.reject(
                part.source,
                lines,
                np.full(len(lines), _CODE[DUPLICATE]),
                _rendered_rows(part.source, lines, cfg),
                resent_count,
            )
            ledger.as_read.discard(part.source)  # rejects() reads its lines as written
    ledger.report.distinct_places = len(places)
    ledger.report.datum = cfg.coords
    ledger.report.rows_inside_by_datum = {
        datum: int(rows_at[places.cells_as(datum) >= 0].sum()) for datum in _DATUM_SOURCES
    }
    return totals


def _spread_days(platform: PlatformGrid, sums: HourlyTotals, n_cells: int) -> HourlyTotals:
    """Spread platform-cell totals onto the analysis grid, day by day, by area."""
    totals = HourlyTotals(n_cells)
    for d in sums.days:
        observed = sums.observed[d].reshape(-1, 24)
        totals.add_dense(d, *platform.spread(sums.sums[d].reshape(-1, 24), observed))
    return totals


def _account_spread(per_id: np.ndarray, platform: PlatformGrid, ledger: RowLedger) -> None:
    """Split each platform cell's total into the part inside the extent and the part outside."""
    share = platform.inside_share
    ledger.report.count_aggregated += float((per_id * share).sum())
    ledger.report.count_outside += float((per_id * (1 - share)).sum())


def _platform_ids(block: RowBlock, platform: PlatformGrid) -> tuple[np.ndarray, np.ndarray]:
    ids = block.columns["grid_id"]
    missing = pd.isna(ids)
    place = np.full(len(block), -1, dtype=np.int64)
    known = platform.ids.get_indexer(pd.Index(ids[~missing]).astype(str))
    place[~missing] = known
    code = np.zeros(len(block), np.uint8)
    _flag(code, missing, "missing grid id")
    _flag(code, place < 0, "unknown grid id (not in signalling.grid)")
    return place, code


def _count_outside_rows(place: np.ndarray, platform: PlatformGrid, ledger: RowLedger) -> np.ndarray:
    """Rows whose platform cell lies wholly outside the extent: counted outside, not spread."""
    outside = platform.inside_share[place] <= 0
    ledger.report.rows_outside += int(outside.sum())
    ledger.report.rows_aggregated += int((~outside).sum())
    return ~outside


def _grid_rows(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    platform: PlatformGrid,
    ledger: RowLedger,
) -> tuple[HourlyTotals, tuple[int, int] | None]:
    c = cfg.columns
    mapping = {"time": c.time, "grid_id": c.grid_id, "count": c.count}
    seen = SeenHours()
    sums = HourlyTotals(len(platform.ids))
    day_range = _day_range(cfg)
    for path in paths:
        for block in read_blocks(path, mapping, cfg.timezone, frozenset({"grid_id"})):
            ledger.malformed(block)
            block = block.take(~block.blank())
            ledger.report.rows_read += len(block)
            place, reason = _platform_ids(block, platform)
            pid, day, hour, count, _ = _timed_rows(
                block, ledger, place, reason, day_range, seen, cfg.max_count
            )
            inside = _count_outside_rows(pid, platform, ledger)
            ledger.report.count_outside += float(count[~inside].sum())
            sums.add(pid[inside], day[inside], hour[inside], count[inside])
    window = _apply_window(sums, cfg, ledger, counted=False)
    per_id = np.zeros(len(platform.ids))
    for d in sums.days:
        per_id += sums.sums[d].reshape(-1, 24).sum(axis=1)
    _account_spread(per_id, platform, ledger)
    ledger.report.distinct_places = len(platform.ids)
    return _spread_days(platform, sums, grid.n_cells), window


def _stored(
    paths: list[Path], grid: CityGrid, cfg: SignallingConfig, ledger: RowLedger
) -> HourlyTotals:
    seen = SeenHours()
    totals = HourlyTotals(grid.n_cells)
    index = pd.Index(grid.cell_ids())
    first, last = _day_range(cfg)
    for path in paths:
        row = 1
        for cell_id, day, hour, count in stored_blocks(path):
            lines = np.arange(row, row + len(cell_id))
            row += len(cell_id)
            ledger.report.rows_read += len(cell_id)
            ledger.report.count_read += float(count.sum())
            cell = index.get_indexer(cell_id)
            in_time = np.ones(len(day), dtype=bool)
            if first is not None:
                in_time &= day >= first
            if last is not None:
                in_time &= day <= last
            outside, late = cell < 0, (cell >= 0) & ~in_time
            ledger.report.rows_outside += int(outside.sum())
            ledger.report.count_outside += float(count[outside].sum())
            ledger.report.rows_outside_time += int(late.sum())
            ledger.report.count_outside_time += float(count[late].sum())
            keep = np.flatnonzero(~outside & ~late)
            fresh = seen.first_time(cell[keep], day[keep], hour[keep])
            dup = keep[~fresh]
            ledger.reject(
                str(path),
                lines[dup],
                np.full(len(dup), _CODE[DUPLICATE]),
                [
                    f"{c},{d},{h},{n}"
                    for c, d, h, n in zip(
                        cell_id[dup], day[dup], hour[dup], count[dup], strict=True
                    )
                ],
                float(count[dup].sum()),
            )
            keep = keep[fresh]
            ledger.report.rows_aggregated += len(keep)
            ledger.report.count_aggregated += float(count[keep].sum())
            totals.add(cell[keep], day[keep], hour[keep], count[keep])
    return totals


def _day_type(path: Path, cfg: SignallingConfig) -> str | None:
    stem = path.stem.lower()
    for name in cfg.wide.day_types:
        if name.lower() in stem:
            return name
    return None


def _wide(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    platform: PlatformGrid,
    ledger: RowLedger,
) -> tuple[HourlyTotals, int, int]:
    hours = [cfg.wide.hour_columns.format(hour=h) for h in range(24)]
    mapping = {"grid_id": cfg.columns.grid_id, **{f"h{h}": col for h, col in enumerate(hours)}}
    text = {"grid_id"}
    if cfg.wide.day_type_column:
        mapping["day_type"] = cfg.wide.day_type_column
        text.add("day_type")
    week_start = cfg.start or WIDE_WEEK_START
    first = (week_start - _EPOCH).days
    weekday_of = {first + i: (week_start + dt.timedelta(days=i)).weekday() for i in range(7)}
    per_type: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        file_type = _day_type(path, cfg)
        if file_type is None and not cfg.wide.day_type_column:
            raise InputFormatError(
                f"{path}: its name holds none of the day types {list(cfg.wide.day_types)}; "
                "rename it or set signalling.wide.day_type_column"
            )
        for block in read_blocks(path, mapping, cfg.timezone, frozenset(text)):
            ledger.malformed(block)
            block = block.take(~block.blank())
            ledger.report.rows_read += len(block)
            place, reason = _platform_ids(block, platform)
            values = np.stack([block.columns[f"h{h}"] for h in range(24)], axis=1)
            kind = (
                block.columns["day_type"].astype(str)
                if cfg.wide.day_type_column
                else np.full(len(block), file_type, dtype=object)
            )
            _flag(reason, ~np.isin(kind, list(cfg.wide.day_types)), "unknown day type")
            _flag(reason, np.isnan(values).any(axis=1), "missing or non-numeric hour")
            _flag(reason, (values < 0).any(axis=1), "negative count")
            _flag(reason, (values > cfg.max_count).any(axis=1), TOO_LARGE)
            numeric = np.where(np.isnan(values) | (values > cfg.max_count), 0.0, values).sum(axis=1)
            ledger.report.count_read += float(numeric.sum())
            bad = np.flatnonzero(reason)
            ledger.reject(
                block.source,
                block.line[bad],
                reason[bad],
                block.text(bad),
                float(numeric[bad].sum()),
            )
            ok = np.flatnonzero(reason == 0)
            inside = _count_outside_rows(place[ok], platform, ledger)
            ledger.report.count_outside += float(numeric[ok[~inside]].sum())
            for name in np.unique(kind[ok[inside]]):
                rows = ok[inside][kind[ok[inside]] == name]
                acc, obs = per_type.setdefault(
                    name,
                    (np.zeros((len(platform.ids), 24)), np.zeros((len(platform.ids), 24), bool)),
                )
                np.add.at(acc, place[rows], values[rows])
                obs[place[rows]] = True
    # Each table counts once in the ledger, however many days of the week its day type covers.
    for acc, _ in per_type.values():
        _account_spread(acc.sum(axis=1), platform, ledger)
    sums = HourlyTotals(len(platform.ids))
    for day, weekday in weekday_of.items():
        for name, (acc, obs) in per_type.items():
            if weekday in cfg.wide.day_types[name]:
                sums.add_dense(day, acc, obs)
    ledger.report.distinct_places = len(platform.ids)
    return _spread_days(platform, sums, grid.n_cells), first, first + 6


def _nothing_inside(report: SignallingReport, n_files: int) -> str:
    """Why no row was used, with the likeliest fix first (the run stops: no rejects file)."""
    reasons = Counter(report.reject_reasons).most_common(2)
    why = "; ".join(f"{n} {reason}" for reason, n in reasons)
    rejected = f"{report.rows_rejected} rejected ({why})" if reasons else "none rejected"
    if reasons and reasons[0][1] > report.rows_read / 2:
        reason = reasons[0][0]
        hint = f"most rows are rejected as '{reason}': " + _REJECT_HINTS.get(
            reason, "check signalling.columns"
        )
    elif report.rows_outside > report.rows_read / 2:
        hint = (
            "most rows fall outside the extent: check the extent, that lon and lat are not "
            "swapped in signalling.columns, and signalling.coords (wgs84, gcj02 or bd09)"
        )
    else:
        hint = "check the extent, the day range (signalling.start, end) and signalling.columns"
    return (
        f"signalling: none of the {report.rows_read} rows in {n_files} file(s) falls inside "
        f"the extent and day range ({report.rows_outside} outside the extent, "
        f"{report.rows_outside_time} outside the days, {rejected}); {hint}"
    )


def load_signalling(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    parts: Iterable[PointsPart] | None = None,
) -> tuple[xr.Dataset, pd.DataFrame, SignallingReport]:
    """Read every file and build activity ``(cell, day, hour)`` on ``grid``.

    ``parts`` (``points`` format): the files already read by :func:`points_part`, in the order
    of ``paths`` (each is read here otherwise, one at a time).

    ``cfg.grid.path`` (the platform grid) is read as it is: give it absolute, as
    :attr:`~urbanfusion.pipeline.config.RunConfig.resolved_signalling` does.

    Returns:
        A dataset with ``activity`` (float32, NaN where not observed) and ``observed`` (bool),
        dims ``(cell, day, hour)`` with ``cell`` in the grid's row-major order; the rejected
        rows; the counts for the manifest.

    Raises:
        InputFormatError: a file is unreadable or lacks the mapped columns.
        NoCoverageError: no valid row falls inside the extent and the day range.
    """
    report = SignallingReport(format=cfg.format, files=[str(p) for p in paths])
    ledger = RowLedger(report)
    first, last = _day_range(cfg)
    window: tuple[int, int] | None = None
    if cfg.format in ("points", "activity"):
        if cfg.format == "points":
            if parts is None:
                parts = (points_part(path, grid, cfg) for path in paths)
            totals = _combine_points(parts, grid, cfg, ledger)
        else:
            totals = _stored(paths, grid, cfg, ledger)
        window = _apply_window(totals, cfg, ledger, counted=True)
    else:
        if cfg.grid is None:  # the config's validator already says so; callers may skip it
            raise InputFormatError(f"signalling format '{cfg.format}' needs signalling.grid")
        platform = read_platform_grid(cfg.grid, grid, cfg.coords)
        if cfg.format == "grid":
            totals, window = _grid_rows(paths, grid, cfg, platform, ledger)
        else:
            totals, first, last = _wide(paths, grid, cfg, platform, ledger)
    if window is not None:
        first = window[0] if first is None else max(first, window[0])
        last = window[1] if last is None else min(last, window[1])
    rejects = ledger.rejects()
    if not totals.days or report.rows_aggregated == 0:
        raise NoCoverageError(_nothing_inside(report, len(paths)))
    ds = totals.dataset(grid.cell_ids(), first, last)
    days = pd.DatetimeIndex(ds["day"].values)
    report.first_day, report.last_day = str(days[0].date()), str(days[-1].date())
    return ds, rejects, report
