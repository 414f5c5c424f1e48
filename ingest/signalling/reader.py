"""What a format's reader gives back, and its signature (one reader module per format)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.signalling.days import DayRange
from urbanfusion.ingest.signalling.ledger import RowLedger
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid


class Read(NamedTuple):
    """Totals per (grid cell, day, hour) and the days the activity spans (None: the data's)."""

    totals: HourlyTotals
    days: DayRange


class Reader(Protocol):
    """Read a format's files into totals on ``grid``, telling ``ledger`` what became of rows."""

    def __call__(
        self,
        paths: list[Path],
        grid: CityGrid,
        cfg: SignallingConfig,
        ledger: RowLedger,
        totals: HourlyTotals,
    ) -> Read:
        """``totals`` (of ``grid``'s cells) added to, and the days they span."""
        ...
