"""``points`` format: long rows ``time, lon, lat, count`` (CSV, CSV.gz, Parquet).

Each file is read on its own (:func:`points_part`: in any order, on any dask worker, or taken
from a run store), then :func:`read` combines the parts in file order exactly as one pass over
all files would, so a new daily file is the only one read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanfusion.ingest.hourly import HourlyTotals, PointIndex, SeenHours
from urbanfusion.ingest.row_blocks import read_blocks
from urbanfusion.ingest.signalling.days import apply_window, day_range
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.reader import Read
from urbanfusion.ingest.signalling.reasons import DUPLICATE, codes, flag
from urbanfusion.ingest.signalling.report import DATUM_SOURCES, SignallingReport
from urbanfusion.ingest.signalling.timed_rows import timed_rows
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.prefetch import prefetched


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

    ``blocks`` is read once; the file's counts and rejects in ``ledger`` are whole after that.
    Memory holds a block, never the file.
    """

    source: str
    blocks: Iterable[PointRows]
    ledger: RowLedger


def _mapping(cfg: SignallingConfig) -> dict[str, str]:
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
    days = day_range(cfg)
    # Parsing runs a block ahead on its own thread, as the checks run ahead of the combining.
    for block in prefetched(read_blocks(path, _mapping(cfg), cfg.timezone)):
        ledger.malformed(block)
        block = block.take(~block.blank())
        ledger.read(rows=len(block))
        lon, lat = block.columns["lon"], block.columns["lat"]
        finite = np.isfinite(lon) & np.isfinite(lat)
        in_range = finite & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        place_reason = np.zeros(len(block), np.uint8)
        flag(place_reason, ~finite, "missing or non-numeric coordinates")
        flag(place_reason, ~in_range, "coordinates out of range")
        place = np.full(len(block), -1, dtype=np.int64)
        known = len(places)
        place[in_range] = places.ids(lon[in_range], lat[in_range])
        kept = timed_rows(block, ledger, place, place_reason, days, seen, cfg.max_count)
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
    for block in read_blocks(Path(path), _mapping(cfg), cfg.timezone):
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


def read(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    ledger: RowLedger,
    totals: HourlyTotals,
    parts: Iterable[PointsPart] | None = None,
) -> Read:
    """Aggregate the files' parts in order, exactly as one pass over all of them.

    ``parts``: the files already read by :func:`points_part`, in the order of ``paths`` (each
    is read here otherwise, one at a time). Each part's blocks are produced on a second thread
    (parsed and checked, or read from the store) while this one adds the previous block: the
    two cores, in file order.
    """
    if parts is None:
        parts = (points_part(path, grid, cfg) for path in paths)
    places = PointIndex(grid, cfg.coords)
    seen = SeenHours()
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
            ledger.outside(int((~inside).sum()), float(count[~inside].sum()))
            cell, day, hour, count = _where(inside, cell, day, hour, count)
            ledger.aggregated(len(cell), float(count.sum()))
            totals.add(cell, day, hour, count)
        ledger.merge(part.ledger)
        if resent:
            lines = np.concatenate(resent)
            ledger.reject(
                part.source,
                lines,
                codes(DUPLICATE, len(lines)),
                _rendered_rows(part.source, lines, cfg),
                resent_count,
            )
            ledger.as_read.discard(part.source)  # rejects() reads its lines as written
    ledger.report.distinct_places = len(places)
    ledger.report.datum = cfg.coords
    ledger.report.rows_inside_by_datum = {
        datum: int(rows_at[places.cells_as(datum) >= 0].sum()) for datum in DATUM_SOURCES
    }
    return Read(totals, apply_window(totals, cfg, ledger, counted=True))
