"""Every signalling file of a run in, activity per (cell, local day, hour) out.

The reader is chosen by ``signalling.format`` (:data:`READERS`); the ledger it counts into must
balance before the activity is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path

import pandas as pd
import xarray as xr

from urbanfusion.ingest.activity_parts import Activity
from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.hourly_spill import HourlySpill
from urbanfusion.ingest.signalling.activity import read as read_activity
from urbanfusion.ingest.signalling.days import iso
from urbanfusion.ingest.signalling.grid_rows import read as read_grid_rows
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.points import PointsPart
from urbanfusion.ingest.signalling.points import read as read_points
from urbanfusion.ingest.signalling.reader import Reader
from urbanfusion.ingest.signalling.report import SignallingReport
from urbanfusion.ingest.signalling.wide import read as read_wide
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.errors import NoCoverageError
from urbanfusion.pipeline.grid import CityGrid

READERS: dict[str, Reader] = {
    "points": read_points,
    "grid": read_grid_rows,
    "wide": read_wide,
    "activity": read_activity,
}


def load_signalling(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    parts: Iterable[PointsPart] | None = None,
) -> tuple[xr.Dataset, pd.DataFrame, SignallingReport]:
    """:func:`load_activity` of the whole grid at once, as a dataset."""
    activity, rejects, report = load_activity(paths, grid, cfg, parts)
    return activity.of(activity.partitions[0]), rejects, report


def load_activity(
    paths: list[Path],
    grid: CityGrid,
    cfg: SignallingConfig,
    parts: Iterable[PointsPart] | None = None,
    spill: HourlySpill | None = None,
) -> tuple[Activity, pd.DataFrame, SignallingReport]:
    """Read every file and build activity ``(cell, day, hour)`` on ``grid``.

    With a ``spill``, the rows go to disk a partition at a time and the activity is made a
    partition at a time (:class:`~urbanfusion.ingest.activity_parts.Activity`); without, it is
    one partition in memory.

    ``parts`` (``points`` format): the files already read by :func:`.points_part`, in the order
    of ``paths`` (each is read here otherwise, one at a time).

    ``cfg.grid.path`` (the platform grid) is read as it is: give it absolute, as
    :attr:`~urbanfusion.pipeline.config.RunConfig.resolved_signalling` does.

    Returns:
        The activity (float32, NaN where not observed, with ``observed``), per partition; the
        rejected rows; the counts for the manifest.

    Raises:
        InputFormatError: a file is unreadable or lacks the mapped columns.
        NoCoverageError: no valid row falls inside the extent and the day range.
        LedgerError: rows were lost between the ledger's counters (a bug).
    """
    report = SignallingReport(format=cfg.format, files=[str(p) for p in paths])
    ledger = RowLedger(report)
    read = READERS[cfg.format]
    if cfg.format == "points":
        read = partial(read_points, parts=parts)
    totals, (first, last) = read(paths, grid, cfg, ledger, HourlyTotals(grid.n_cells, spill))
    rejects = ledger.rejects()
    ledger.check()
    if not totals.days or report.rows_aggregated == 0:
        raise NoCoverageError(report.nothing_inside(len(paths)))
    activity = Activity.from_totals(totals, grid, first, last)
    report.first_day, report.last_day = iso(activity.days[0]), iso(activity.days[-1])
    return activity, rejects, report
