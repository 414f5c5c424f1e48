"""The checks every long-format row goes through once its place is known: time, count, day."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from urbanfusion.ingest.hourly import SeenHours, day_and_hour
from urbanfusion.ingest.row_blocks import RowBlock
from urbanfusion.ingest.signalling.days import (
    PLAUSIBLE_FIRST_DAY,
    DayRange,
    in_days,
    plausible_last_day,
)
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.ingest.signalling.reasons import (
    CODE,
    DUPLICATE,
    IMPLAUSIBLE_DATE,
    TOO_LARGE,
    flag,
)


class KeptRows(NamedTuple):
    """Rows that passed: inside the day range and not duplicates, in file order."""

    place: np.ndarray  # int64
    day: np.ndarray  # int64 days since 1970-01-01, local
    hour: np.ndarray  # int64
    counts: np.ndarray  # float64
    line: np.ndarray  # int64


def timed_rows(
    block: RowBlock,
    ledger: RowLedger,
    place: np.ndarray,
    place_reason: np.ndarray,
    days: DayRange,
    seen: SeenHours,
    max_count: float,
) -> KeptRows:
    """Check the time and count of rows whose place is known; reject the rest with a reason.

    The block's rows are counted read by the caller; their counts are counted read here.
    Rows outside ``days`` are counted outside the days.
    """
    when, count = block.columns["time"], block.columns["count"]
    code = place_reason.copy()
    flag(code, np.isnat(when), "unparsable time")
    flag(code, np.isnan(count), "missing or non-numeric count")
    flag(code, count < 0, "negative count")
    too_large = count > max_count  # inf too: one such row must not swamp a city's totals
    flag(code, too_large, TOO_LARGE)
    numeric = np.where(np.isnan(count) | too_large, 0.0, count)
    ledger.read(count=float(numeric.sum()))
    idx = np.flatnonzero(code == 0)
    day, hour = day_and_hour(when[idx])
    # Mobile-phone signalling from before 2000 or from the future is a typo, and one such row
    # would stretch the day axis by decades.
    implausible = (day < PLAUSIBLE_FIRST_DAY) | (day > plausible_last_day())
    code[idx[implausible]] = CODE[IMPLAUSIBLE_DATE]
    idx, day, hour = idx[~implausible], day[~implausible], hour[~implausible]
    in_time = in_days(day, days)
    ledger.outside_days(int((~in_time).sum()), float(count[idx[~in_time]].sum()))
    idx, day, hour = idx[in_time], day[in_time], hour[in_time]
    fresh = seen.first_time(place[idx], day, hour)
    code[idx[~fresh]] = CODE[DUPLICATE]
    bad = np.flatnonzero(code)
    ledger.reject(
        block.source, block.line[bad], code[bad], block.text(bad), float(numeric[bad].sum())
    )
    idx, day, hour = idx[fresh], day[fresh], hour[fresh]
    return KeptRows(place[idx], day, hour, count[idx], block.line[idx])
