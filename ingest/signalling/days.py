"""Which days a run keeps: the configured day range and the ``window_days`` window, once each."""

from __future__ import annotations

import datetime as dt

import numpy as np

from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.pipeline.config import SignallingConfig

EPOCH = dt.date(1970, 1, 1)
# A day with under this share of the (place, hour) pairs of a median day holds stray rows,
# not a day of the city: it cannot anchor signalling.window_days.
STRAY_SHARE = 0.1
PLAUSIBLE_FIRST_DAY = (dt.date(2000, 1, 1) - EPOCH).days

DayRange = tuple[int | None, int | None]  # first and last day since 1970-01-01; None: open


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def iso(day: int) -> str:
    """A day number as YYYY-MM-DD."""
    return str(EPOCH + dt.timedelta(days=day))


def plausible_last_day() -> int:
    """The last day a row may be dated: counts of hours that have not happened are typos.

    Tomorrow, not today: the run's clock is UTC-ish and a city's local day may have begun.
    """
    return day_number(dt.datetime.now(dt.UTC).date()) + 1


def day_range(cfg: SignallingConfig) -> DayRange:
    """``signalling.start`` and ``end`` as day numbers."""
    return (
        None if cfg.start is None else day_number(cfg.start),
        None if cfg.end is None else day_number(cfg.end),
    )


def in_days(day: np.ndarray, days: DayRange) -> np.ndarray:
    """Which of ``day`` lie in the range (both ends in)."""
    first, last = days
    keep = np.ones(len(day), dtype=bool)
    if first is not None:
        keep &= day >= first
    if last is not None:
        keep &= day <= last
    return keep


def apply_window(
    totals: HourlyTotals, cfg: SignallingConfig, ledger: RowLedger, counted: bool
) -> DayRange:
    """Keep the ``window_days`` days ending on the newest day where the data is.

    The window is anchored on the newest *usual* day: one with at least :data:`STRAY_SHARE` of
    the (place, hour) pairs a median day observes. Days after it hold a few stray rows (a year
    or month mistyped): they stay out, and the report says so, instead of moving the window to
    them and leaving the real days out.

    The rows of the days that leave the window move from aggregated to outside the days in the
    ledger (``counted``: their counts were already added to the aggregated count).

    Returns:
        The days the dataset spans: the configured range, narrowed to the window if any.
    """
    configured = day_range(cfg)
    if not cfg.window_days or not totals.days:
        return configured
    seen = totals.observed_hours()
    usual = float(np.median(list(seen.values())))
    last = max(d for d, n in seen.items() if n >= STRAY_SHARE * usual)
    first = last - cfg.window_days + 1
    stray_rows, stray_count = totals.drop_after(last)
    rows, count = totals.drop_before(first)
    ledger.left_by_window(rows + stray_rows, count + stray_count, counted)
    report = ledger.report
    report.stray_days = [iso(d) for d in seen if d > last]
    report.stray_rows = stray_rows
    report.window = [iso(first), iso(last)]
    start, end = configured
    return (first if start is None else max(start, first), last if end is None else min(end, last))
