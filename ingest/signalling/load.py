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

from urbanfusion.ingest.signalling.activity import read as read_activity
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
    """Read every file and build activity ``(cell, day, hour)`` on ``grid``.

    ``parts`` (``points`` format): the files already read by :func:`.points_part`, in the order
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
        LedgerError: rows were lost between the ledger's counters (a bug).
    """
    report = SignallingReport(format=cfg.format, files=[str(p) for p in paths])
    ledger = RowLedger(report)
    read = READERS[cfg.format]
    if cfg.format == "points":
        read = partial(read_points, parts=parts)
    totals, (first, last) = read(paths, grid, cfg, ledger)
    rejects = ledger.rejects()
    ledger.check()
    if not totals.days or report.rows_aggregated == 0:
        raise NoCoverageError(report.nothing_inside(len(paths)))
    ds = totals.dataset(grid.cell_ids(), first, last)
    days = pd.DatetimeIndex(ds["day"].values)
    report.first_day, report.last_day = str(days[0].date()), str(days[-1].date())
    return ds, rejects, report
