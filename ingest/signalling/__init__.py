"""Hourly signalling in, activity per (cell, local day, hour) out, every row accounted for.

Formats (``signalling.format``), a reader module each:

- ``points`` (:mod:`.points`): long rows ``time, lon, lat, count`` (CSV, CSV.gz, Parquet);
- ``grid`` (:mod:`.grid_rows`): long rows ``time, grid_id, count`` plus the platform's grid
  (``signalling.grid``);
- ``wide`` (:mod:`.wide`): one row per grid id with a column per hour (``H0..H23``) and a day
  type per file or row, plus the platform's grid;
- ``activity`` (:mod:`.activity`): the ``activity.parquet`` of an earlier run, reused.

Every row read is aggregated, counted outside the extent, counted outside the day range, or
written to the rejects table with a reason, its file and its line, so
``rows_read == rows_aggregated + rows_outside + rows_outside_time + rows_rejected``; the same
holds for the sums of counts, and :class:`.RowLedger` checks both. Blank lines are not rows.

Rules: naive timestamps are wall time in ``signalling.timezone``; timestamps with an offset are
converted to it (so a daylight-saving change never moves an hour). Rows of the same cell, local
day and hour are summed (a cell holds several points of a lattice, or parts of platform cells).
A row repeating the point (or grid id), day and hour of an earlier row is a duplicate: the first
one counts, the later ones are rejected as ``duplicate of an earlier row``, since platforms re-send
records and summing them would count people twice.
"""

from urbanfusion.ingest.signalling.ledger import REJECT_COLUMNS, LedgerError, RowLedger
from urbanfusion.ingest.signalling.load import READERS, load_activity, load_signalling
from urbanfusion.ingest.signalling.points import PointRows, PointsPart, points_part
from urbanfusion.ingest.signalling.reasons import DUPLICATE, IMPLAUSIBLE_DATE, TOO_LARGE
from urbanfusion.ingest.signalling.report import SignallingReport

__all__ = [
    "DUPLICATE",
    "IMPLAUSIBLE_DATE",
    "READERS",
    "REJECT_COLUMNS",
    "TOO_LARGE",
    "LedgerError",
    "PointRows",
    "PointsPart",
    "RowLedger",
    "SignallingReport",
    "load_activity",
    "load_signalling",
    "points_part",
]
